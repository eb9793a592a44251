"""EdgeFace-XS converted by us: the float network answers as the published int8 one does, and trains."""

from __future__ import annotations

import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from model.encoder import load_checkpoint_model
from model.train.import_edgeface import import_edgeface
from tests.conftest import LFW, SHARED

EDGEFACE = SHARED / "weights" / "edgeface" / "edgeface_xs_q.pt"


def published_network() -> torch.nn.Module:
    """The release as its authors run it: timm's edgenext_x_small, 512 outputs, int8 dynamically quantized linear
    layers, loaded from the file (a reference built independently of our conversion)."""
    import timm

    net = timm.create_model("edgenext_x_small", pretrained=False, num_classes=512).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.ao.quantization.quantize_dynamic(net, {torch.nn.Linear}, dtype=torch.qint8)
        state = torch.load(EDGEFACE, map_location="cpu", weights_only=False)
    renamed = OrderedDict((k.removeprefix("model."), v) for k, v in state.items())
    # the per-module versions tell the quantized modules how their weights are packed
    renamed._metadata = OrderedDict((k.removeprefix("model."), v)  # type: ignore[attr-defined]
                                    for k, v in state._metadata.items() if k.startswith("model."))
    q.load_state_dict(renamed)
    return q


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("edgeface") / "edgeface.pt"
    card = import_edgeface(EDGEFACE, out)
    assert "BSD-3-Clause" in card["training"]["licence"] and "WebFace12M" in card["training"]["lineage"]
    return out


def test_dequantized_network_answers_as_the_published_one(converted: Path) -> None:
    model, config, _ = load_checkpoint_model(converted)
    assert (config.arch, config.embedding_size, config.input_size, config.detector) == ("edgeface_xs", 512, 112,
                                                                                         "yunet")
    from PIL import Image

    from model.embedder import make_aligner, preprocess
    from model.faces import FaceDetector

    detector, aligner = FaceDetector("yunet"), make_aligner(config)
    chips = []
    for name in ("Colin_Powell", "Tony_Blair", "Serena_Williams"):
        for n in (1, 2):
            rgb = np.asarray(Image.open(LFW / name / f"{name}_{n:04d}.jpg").convert("RGB"))
            chips.append(aligner(rgb, detector.detect(rgb)[0]))
    x = torch.from_numpy(preprocess(config, np.stack(chips)))
    with torch.inference_mode():
        ours = model(x).numpy()
        theirs = torch.nn.functional.normalize(published_network()(x), dim=1).numpy()
    cosine = (ours * theirs).sum(1)
    # their linear layers quantize activations to int8 on the fly, ours compute in float (timm's float network
    # with the dequantized weights equals ours to 1e-6; the int8 one stays within a few hundredths)
    assert cosine.min() > 0.95, cosine
    # and the same people are the nearest in both
    assert ((ours @ ours.T).argsort(1)[:, -2] == (theirs @ theirs.T).argsort(1)[:, -2]).all()
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_a_projection_to_fewer_numbers_is_ours_to_train(tmp_path: Path) -> None:
    import_edgeface(EDGEFACE, tmp_path / "e128.pt", embedding_size=128)
    model, config, _ = load_checkpoint_model(tmp_path / "e128.pt")
    assert config.embedding_size == 128
    out = model(torch.zeros(2, 3, 112, 112))
    assert out.shape == (2, 128)
    assert [name for name, _ in model.parameter_groups()] == ["stem", "stage0", "stage1", "stage2", "stage3", "head"]
