"""Start-up faults: the service refuses to start with one clear log line and changes nothing."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import numpy as np

from index import Gallery, NewFace
from tests.helpers import EXE, assert_refused, serve


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}



def test_data_dir_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert_refused(serve(blocker / "data"), "data folder")
    assert blocker.read_text() == "not a folder"


def test_corrupt_database_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "gallery.db").write_bytes(b"this is not sqlite" * 100)
    before = digest(data)
    assert_refused(serve(data), "gallery")
    assert digest(data) == before


def test_missing_model_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert_refused(serve(data, FACESEARCH_CHECKPOINT=str(tmp_path / "missing.pt")), "encoder")


def test_encoder_graph_that_is_not_one(tmp_path: Path) -> None:
    from model.mtcnn import GRAPHS

    junk = tmp_path / "encoder.onnx"
    junk.write_bytes(b"not a graph" * 100)
    assert_refused(serve(tmp_path / "data", FACESEARCH_CHECKPOINT=str(junk)), "cannot read encoder graph")
    # a valid ONNX graph, but not an encoder exported by FaceSearch (no config, no card)
    assert_refused(serve(tmp_path / "data", FACESEARCH_CHECKPOINT=str(GRAPHS[0])), "not a FaceSearch encoder graph")


def test_gallery_of_another_model_version(tmp_path: Path) -> None:
    from model.embedder import load_encoder

    _, card = load_encoder()
    data = tmp_path / "data"
    g = Gallery(data, dim=128, model_version="some-older-model")
    g.add_faces("alice", [NewFace(np.ones(128, np.float32))])
    g.close()
    before = digest(data)
    r = serve(data)
    assert_refused(r, "some-older-model")
    assert card["model_version"] in r.stdout + r.stderr
    assert digest(data) == before


def test_read_only_data_folder(tmp_path: Path) -> None:
    """A data folder the service cannot write: as root (CI), a read-only bind mount in a private mount
    namespace, since root ignores file modes; otherwise the folder's mode."""
    data = tmp_path / "data"
    g = Gallery(data, dim=128, model_version="m")
    g.add_faces("alice", [NewFace(np.ones(128, np.float32))])
    g.close()
    before = digest(data)
    if os.geteuid() == 0:
        from tests.conftest import free_port

        env = {**os.environ, "FACESEARCH_DATA_DIR": str(data), "FACESEARCH_PORT": str(free_port())}
        script = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && exec "$2" serve'
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                            str(data), EXE], env=env, capture_output=True, text=True, timeout=120)
    else:
        data.chmod(0o555)
        try:
            r = serve(data)
        finally:
            data.chmod(0o755)
    assert_refused(r, "not readable and writable")
    assert digest(data) == before


def test_unreachable_postgresql(tmp_path: Path) -> None:
    from tests.conftest import free_port

    url = f"postgresql://facesearch:secret-password@127.0.0.1:{free_port()}/facesearch"  # nothing listens there
    r = serve(tmp_path / "data", FACESEARCH_DATABASE_URL=url)
    assert_refused(r, "PostgreSQL is unavailable")
    assert "secret-password" not in r.stdout + r.stderr  # the URL's password is never logged
