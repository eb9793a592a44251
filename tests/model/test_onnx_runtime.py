"""The encoder the service runs on ONNX Runtime gives the PyTorch model's embeddings (1e-5) on real chips, with
mirror averaging and the batch plan as served."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from model.encoder import load_encoder
from model.faces import FaceDetector
from model.train.subject import central_face
from tests.conftest import LFW, ORL


@pytest.fixture(scope="module")
def chips() -> np.ndarray:
    torch_embedder, _ = load_encoder()
    detector = FaceDetector()
    out = []
    photos = [next(iter(sorted(p.glob("*.jpg")))) for p in sorted(q for q in LFW.iterdir() if q.is_dir())[:30]]
    photos += [ORL / f"s{s}" / "1.pgm" for s in range(1, 8)]
    for path in photos:
        img = Image.open(path).convert("RGB")
        if img.width < 150:
            img = img.resize((img.width * 2, img.height * 2), Image.Resampling.BICUBIC)
        rgb = np.asarray(img)
        face = central_face(detector.detect(rgb), rgb.shape[1], rgb.shape[0])
        if face is not None:
            out.append(torch_embedder.aligner(rgb, face))
    assert len(out) >= 30
    return np.stack(out)


@pytest.mark.parametrize("flip", [True, False])
def test_onnx_runtime_embeddings_equal_pytorchs(chips: np.ndarray, flip: bool) -> None:
    reference, _ = load_encoder(flip=flip, max_batch=16)
    served, card = load_encoder(flip=flip, max_batch=16, runtime="onnx")
    assert served.runtime == "onnx" and served.flip == flip
    want = reference(chips)  # 37 faces: the batch plan runs 16 + 16 + 5 (padded to 8)
    got = served(chips)
    assert got.shape == want.shape == (len(chips), 128) and got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    one = served(chips[:1])  # a single face through its own bucket
    assert np.abs(one - want[:1]).max() < 1e-5
