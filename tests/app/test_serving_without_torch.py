"""The service runs without PyTorch (the train extra): the shipped ONNX graphs of the encoder and MTCNN are all it
needs. Each server here runs with torch, torchvision, facenet-pytorch and onnx made uninstallable (a folder of
packages that raise ModuleNotFoundError, first on its PYTHONPATH), as on a machine with the plain install."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from model.embedder import SHIPPED_CHECKPOINT
from tests.app.client import call
from tests.conftest import LFW
from tests.helpers import assert_refused, serve

TRAINING_ONLY = ("torch", "torchvision", "facenet_pytorch", "onnx")


@pytest.fixture
def no_torch(tmp_path: Path) -> dict[str, str]:
    """An environment in which importing any of TRAINING_ONLY fails as if it were not installed."""
    folder = tmp_path / "not-installed"
    for name in TRAINING_ONLY:
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{name}'\", name='{name}')\n")
    return {"PYTHONPATH": str(folder)}


def test_the_service_enrolls_and_searches_without_torch(tmp_path: Path, server_factory, no_torch) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(tmp_path / "data", **no_torch)
    server.wait_ready()
    name = "Colin_Powell"
    photos = [(LFW / name / f"{name}_{k:04d}.jpg").read_bytes() for k in (1, 2, 3)]
    status, body = call(f"{server.url}/v1/identities/{name}/faces", "POST", fields={"face": "largest"},
                        files=[("image", p) for p in photos[:2]])
    assert status == 201, body
    status, body = call(f"{server.url}/v1/search", "POST", fields={"k": "3"}, files=[("image", photos[2])])
    assert status == 200, body
    best = body["faces"][0]["candidates"][0]
    assert best["identity"] == name
    # the distance the PyTorch model gives for the same two photos' faces (this process has torch)
    from model.pipeline import FacePipeline

    pipeline = FacePipeline(threads=2, runtime="torch")
    try:
        probe = pipeline.analyze(photos[2]).faces[0].embedding
        enrolled = [pipeline.analyze(p).faces[0].embedding for p in photos[:2]]
    finally:
        pipeline.close()
    assert probe is not None
    want = min(float(np.linalg.norm(probe - e)) for e in enrolled if e is not None)
    assert best["distance"] == pytest.approx(want, abs=1e-4)
    server.stop()
    log = server.log_path.read_text()
    assert "ModuleNotFoundError" not in log and "Traceback" not in log


def test_without_torch_a_checkpoint_needs_its_graph_and_the_torch_runtime_is_refused(tmp_path: Path,
                                                                                     no_torch) -> None:  # type: ignore[no-untyped-def]
    # a checkpoint without its graph beside it: the start is refused, naming the command that exports it
    lone = tmp_path / "run" / "best.pt"
    lone.parent.mkdir()
    shutil.copy(SHIPPED_CHECKPOINT, lone)
    r = serve(tmp_path / "data", FACESEARCH_CHECKPOINT=str(lone), **no_torch)
    assert_refused(r, "facesearch export-onnx")
    assert_refused(serve(tmp_path / "data", FACESEARCH_RUNTIME="torch", **no_torch), "PyTorch")
