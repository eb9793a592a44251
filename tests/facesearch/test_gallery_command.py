"""`facesearch gallery` on a real gallery folder: stats, verify, rebuild-index, export and import."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facesearch.commands.gallery import main
from index import Gallery, NewFace


def test_gallery_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    g = Gallery(tmp_path / "a", dim=8, model_version="m1")
    g.add_many([(f"p{i % 3}", NewFace(v, sha256=f"s{i}")) for i, v in enumerate(rng.normal(size=(9, 8)))])
    g.close()
    common = ["--dim", "8", "--model-version", "m1"]
    assert main(["stats", "--data-dir", str(tmp_path / "a"), *common]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["identities"] == 3 and stats["faces"] == 9 and stats["indexed"] == 9
    assert main(["verify", "--data-dir", str(tmp_path / "a"), *common]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    (tmp_path / "a" / "index" / "g0" / "people" / "vectors.faiss").write_bytes(b"garbage")
    assert main(["rebuild-index", "--data-dir", str(tmp_path / "a"), *common]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert main(["export", str(tmp_path / "g.db"), "--data-dir", str(tmp_path / "a"), *common]) == 0
    assert main(["import", str(tmp_path / "g.db"), "--data-dir", str(tmp_path / "b"), *common]) == 2  # no gallery
    assert not (tmp_path / "b").exists()
    assert main(["import", str(tmp_path / "g.db"), "--data-dir", str(tmp_path / "b"), "--create", *common]) == 0
    assert "imported 9 faces of 3 identities" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["export", "--data-dir", str(tmp_path / "a"), *common])  # no file given


def test_reembed_lists_faces_without_a_usable_crop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A gallery enrolled by encoder v2 (dlib's 150-px chip) before source crops existed, re-embedded for the
    shipped 112-px template chip: its chip cannot serve it, so the command lists the face (stderr and JSON), leaves
    the gallery serving its model, and deletes it only when told to."""
    import io

    from PIL import Image

    from model.embedder import load_encoder

    buf = io.BytesIO()
    Image.new("RGB", (150, 150), (120, 100, 90)).save(buf, format="JPEG")
    g = Gallery(tmp_path / "g", dim=128, model_version="fs-dlib_resnet_v1-old")
    g.add_faces("alice", [NewFace(np.full(128, 128 ** -0.5, np.float32), thumbnail=buf.getvalue())])
    g.close()
    alice = g.add_faces("bob", [NewFace(np.full(128, -(128 ** -0.5), np.float32))])[0]  # no crop at all
    g.close()
    report = tmp_path / "lost.json"
    assert main(["reembed", "--data-dir", str(tmp_path / "g"), "--report", str(report)]) == 1
    err = capsys.readouterr().err
    assert "2 faces have no stored crop" in err and "enroll their photos again" in err
    listed = json.loads(report.read_text())
    assert [f["identity"] for f in listed["faces"]] == ["alice", "bob"] and listed["dropped"] is False
    assert listed["faces"][1]["face_id"] == alice
    _, card = load_encoder()
    with pytest.raises(Exception, match="Re-embed it from its stored crops"):
        Gallery(tmp_path / "g", dim=card["embedding_size"], model_version=card["model_version"])
    g = Gallery(tmp_path / "g", dim=128, model_version="fs-dlib_resnet_v1-old")
    assert g.count() == (2, 2) and g.index.live == 2  # still serving the model that made it
    g.close()
    assert main(["reembed", "--data-dir", str(tmp_path / "g"), "--report", str(report),
                 "--drop-unrecoverable"]) == 0
    assert "2 faces dropped" in capsys.readouterr().out
    g = Gallery(tmp_path / "g", dim=card["embedding_size"], model_version=card["model_version"])
    assert g.count() == (2, 0) and g.generation == 1
    assert [e.event for e in g.audit_log()][-3:] == ["delete_face", "delete_face", "reembed"]
    g.close()


def test_gallery_commands_refuse_a_folder_without_a_gallery(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FACESEARCH_DATA_DIR", raising=False)
    for action in ("stats", "verify", "reindex", "compact"):
        assert main([action, "--dim", "8", "--model-version", "m1"]) == 2
        assert "no gallery in data" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing created in ./data


def test_gallery_commands_read_the_service_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`gallery reindex` and `compact` on a deployment whose Milvus collection is HNSW (FACESEARCH_MILVUS_INDEX)
    keep it HNSW: the commands read every FACESEARCH_* variable as `serve` does."""
    pytest.importorskip("pymilvus")
    from pymilvus import MilvusClient

    from index.config import GalleryConfig, open_gallery

    uri = str(tmp_path / "milvus.db")
    cfg = GalleryConfig(folder=tmp_path / "g", dim=8, model_version="m1", vector_url=uri, milvus_index="HNSW")
    g = open_gallery(cfg)
    rng = np.random.default_rng(1)
    g.add_many([(f"p{i % 3}", NewFace(v)) for i, v in enumerate(rng.normal(size=(9, 8)))])
    collection = g.index.collection  # type: ignore[union-attr]
    g.close()
    for name, value in {"FACESEARCH_DATA_DIR": str(tmp_path / "g"), "FACESEARCH_VECTOR_URL": uri,
                        "FACESEARCH_MILVUS_INDEX": "HNSW"}.items():
        monkeypatch.setenv(name, value)

    def index_type() -> str:
        client = MilvusClient(uri)
        try:
            return str(client.describe_index(collection, client.list_indexes(collection)[0])["index_type"])
        finally:
            client.close()

    assert index_type() == "HNSW"
    assert main(["reindex", "--dim", "8", "--model-version", "m1"]) == 0
    assert index_type() == "HNSW"
    assert main(["compact", "--dim", "8", "--model-version", "m1"]) == 0
    assert index_type() == "HNSW"
    g = open_gallery(cfg)
    assert g.index.live == 9
    g.close()
