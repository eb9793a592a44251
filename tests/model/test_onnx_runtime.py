"""The networks the service runs on ONNX Runtime give the PyTorch models' outputs (1e-5): the encoder on real chips,
with mirror averaging and the batch plan as served, from the shipped graph or one exported at load; MTCNN's three
networks; a session alone on the machine runs on every core, beside others on its few threads."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.embedder import EncoderConfig, load_encoder
from model.errors import CheckpointError
from model.faces import FaceDetector
from model.train.subject import central_face
from tests.conftest import LFW, ORL


@pytest.fixture(scope="module")
def chips() -> np.ndarray:
    torch_embedder, _ = load_encoder()
    detector = FaceDetector(torch_embedder.config.detector)
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
    reference, _ = load_encoder(flip=flip, max_batch=16, runtime="torch")
    served, card = load_encoder(flip=flip, max_batch=16, runtime="onnx")
    assert served.runtime == "onnx" and served.flip == flip
    want = reference(chips)  # 37 faces: the batch plan runs 16 + 16 + 5 (padded to 8)
    got = served(chips)
    assert got.shape == want.shape == (len(chips), served.dim) and got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    one = served(chips[:1])  # a single face through its own bucket
    assert np.abs(one - want[:1]).max() < 1e-5


def test_the_shipped_graph_is_the_shipped_checkpoints(chips: np.ndarray) -> None:
    """model/weights/encoder.onnx was exported from encoder.pt as it is now (`facesearch export-onnx`), with its
    config and card: the service loads it and never the checkpoint."""
    from model.embedder import GRAPH_CHECKPOINT, SHIPPED_CHECKPOINT, OnnxNet, file_digest, graph_path
    from model.encoder import read_checkpoint

    graph = OnnxNet(graph_path(SHIPPED_CHECKPOINT), threads=1)
    assert graph.metadata[GRAPH_CHECKPOINT] == file_digest(SHIPPED_CHECKPOINT)
    ckpt = read_checkpoint(SHIPPED_CHECKPOINT)
    alone, card = load_encoder(graph_path(SHIPPED_CHECKPOINT))  # the graph without the checkpoint
    assert alone.config == EncoderConfig.from_dict(ckpt["config"])
    assert card == json.loads(json.dumps(ckpt["card"]))  # the card as JSON keeps it
    reference, _ = load_encoder(runtime="torch")
    assert np.abs(alone(chips) - reference(chips)).max() < 1e-5


def test_a_graph_exported_from_another_checkpoint_is_never_used(tmp_path: Path, chips: np.ndarray) -> None:
    import shutil

    import torch

    from model.embedder import SHIPPED_CHECKPOINT, graph_path
    from model.encoder import build_model, export_graph, read_checkpoint, save_checkpoint

    ckpt = read_checkpoint(SHIPPED_CHECKPOINT)
    other = build_model(EncoderConfig.from_dict({**ckpt["config"], "model_version": "other"}))
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "other.pt", other)
    checkpoint = tmp_path / "encoder.pt"
    shutil.copy(SHIPPED_CHECKPOINT, checkpoint)
    export_graph(tmp_path / "other.pt", graph_path(checkpoint))  # a stale graph beside the checkpoint
    served, card = load_encoder(checkpoint)
    reference, _ = load_encoder(runtime="torch")
    assert card["model_version"] == ckpt["config"]["model_version"]
    assert np.abs(served(chips) - reference(chips)).max() < 1e-5
    # once exported from this checkpoint, the graph serves it
    export_graph(checkpoint)
    again, _ = load_encoder(checkpoint)
    assert np.abs(again(chips) - reference(chips)).max() < 1e-5
    # an unreadable graph is refused in words
    (tmp_path / "broken.onnx").write_bytes(b"not a graph")
    with pytest.raises(CheckpointError, match="cannot read encoder graph"):
        load_encoder(tmp_path / "broken.onnx")


def test_mtcnns_shipped_graphs_compute_facenet_pytorchs_networks() -> None:
    import torch
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    from model.mtcnn import GRAPHS
    from model.onnx_runtime import session

    rgb = np.asarray(Image.open(ORL / "s1" / "1.pgm").convert("RGB"), np.float32)
    x = ((rgb - 127.5) / 128).transpose(2, 0, 1)[None]  # (1, 3, 112, 92)
    inputs = [x, np.stack([x[0, :, i : i + 24, i : i + 24] for i in range(5)]),
              np.stack([x[0, :, i : i + 48, i : i + 48] for i in range(5)])]
    for net, graph, inp in zip((PNet(), RNet(), ONet()), GRAPHS, inputs, strict=True):
        with torch.inference_mode():
            want = net.eval()(torch.from_numpy(np.ascontiguousarray(inp)))
        got = session(str(graph), threads=1).run(None, {"x": np.ascontiguousarray(inp)})
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert np.abs(g - w.numpy()).max() < 1e-5


def test_cores_tell_a_call_alone_from_calls_side_by_side() -> None:
    from model.onnx_runtime import Cores

    cores = Cores()
    seen: list[bool] = []
    started, release = threading.Event(), threading.Event()

    def other() -> None:
        with cores.computing():
            started.set()
            release.wait(10)

    assert cores.alone()
    with cores.computing(), cores.computing():  # nested blocks of one thread count once
        assert cores.alone()
        worker = threading.Thread(target=other)
        worker.start()
        started.wait(10)
        seen.append(cores.alone())  # another thread computes
        release.set()
        worker.join(10)
        seen.append(cores.alone())
        with cores.shared():
            seen.append(cores.alone())
        seen.append(cores.alone())
    assert seen == [False, True, False, True]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: a single session, no second width to pick")
def test_a_session_runs_on_every_core_alone_and_on_its_threads_beside_others(chips: np.ndarray) -> None:
    from model.embedder import SHIPPED_CHECKPOINT, graph_path, preprocess
    from model.onnx_runtime import CORES, session

    embedder, _ = load_encoder()
    s = session(str(graph_path(SHIPPED_CHECKPOINT)), threads=1)
    assert s.wide is not None
    ran: list[str] = []

    class Recorded:  # the real sessions, noting which one ran
        def __init__(self, name: str, inner: object) -> None:
            self.name, self.inner = name, inner

        def run(self, outputs: object, feeds: object) -> object:
            ran.append(self.name)
            return self.inner.run(outputs, feeds)  # type: ignore[attr-defined]

    s.narrow, s.wide = Recorded("narrow", s.narrow), Recorded("wide", s.wide)
    x = {"x": preprocess(embedder.config, chips[:4])}
    alone = s.run(["e"], x)[0]
    with CORES.shared():
        beside = s.run(["e"], x)[0]
    assert ran == ["wide", "narrow"]
    assert np.abs(alone - beside).max() < 1e-5
