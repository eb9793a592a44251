"""Subject access and the audit trail, through HTTP with real faces: the export holds everything stored about an
identity (and what it holds re-embeds to the stored vector); the audit names the key by id, never the key, and
keeps its lines when the identity is deleted."""

from __future__ import annotations

import io
import json
import sqlite3
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from facesearch.settings import Settings
from index.keys import key_id
from model.faces import face_in_source
from tests.conftest import lfw_photo

KEYS = ["alpha-secret-key-0123456789", "beta-secret-key-9876543210"]


@pytest.fixture
def client(data_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(data_dir=data_dir, api_keys=KEYS))) as c:
        yield c


def test_export_holds_everything_stored_and_the_audit_names_no_key(client: TestClient, data_dir: Path) -> None:
    a, b = {"x-api-key": KEYS[0]}, {"x-api-key": KEYS[1]}
    r = client.post("/v1/identities/Tony Blair/faces", headers=a, data={"metadata": '{"team": "uk"}'},
                    files=[("image", (f"{i}.jpg", lfw_photo("Tony_Blair", i), "image/jpeg")) for i in (1, 2)])
    assert r.status_code == 201, r.text
    face_ids = [f["face_id"] for f in r.json()["faces"]]
    assert client.patch("/v1/identities/Tony Blair", headers=b, json={"identity": "T. Blair"}).status_code == 200

    assert client.get("/v1/identities/T. Blair/export").status_code == 401
    assert client.get("/v1/identities/nobody/export", headers=a).json()["code"] == "not_found"
    r = client.get("/v1/identities/T. Blair/export", headers=b)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    z = zipfile.ZipFile(io.BytesIO(r.content))
    summary = json.loads(z.read("identity.json"))
    assert summary["identity"] == "T. Blair" and summary["metadata"] == {"team": "uk"}
    assert [f["face_id"] for f in summary["faces"]] == face_ids
    con = sqlite3.connect(data_dir / "gallery.db")
    for fid in face_ids:
        face = json.loads(z.read(f"faces/{fid}/face.json"))
        emb, chip, source, created = con.execute(
            "SELECT embedding, thumbnail, source, created_at FROM faces WHERE id = ?", (fid,)).fetchone()
        assert np.array_equal(np.array(face["embedding"], np.float32), np.frombuffer(emb, np.float32))
        assert z.read(f"faces/{fid}/chip.jpg") == chip and z.read(f"faces/{fid}/source.webp") == source
        assert face["created_at"] == created and face["model_version"] == summary["gallery_model"]
        assert len(face["box"]) == 4 and len(face["source_geometry"]["landmarks"]) == 5
        # the source crop and its landmarks are enough to cut the face again: the eyes sit where the geometry says
        img = Image.open(io.BytesIO(z.read(f"faces/{fid}/source.webp")))
        geometry = face["source_geometry"]
        eyes = face_in_source(geometry).landmarks[:2]
        side = geometry["size"]
        assert img.size == (side, side) and 100 < side <= 256 and ((eyes > side / 4) & (eyes < side * 3 / 4)).all()
    con.close()

    assert client.delete("/v1/identities/T. Blair", headers=a).json()["faces_deleted"] == 2
    lines = client.get("/v1/audit", headers=a, params={"limit": 100}).json()["items"]
    got = [(e["event"], e["actor"], e["face_ids"]) for e in lines]
    assert got == [  # the entries stay: who did what, when
        ("enroll", key_id(KEYS[0]), face_ids),
        ("rename", key_id(KEYS[1]), []),
        ("export", key_id(KEYS[1]), []),
        ("delete_identity", key_id(KEYS[0]), face_ids),
    ]
    # the erased person's names, before and after the rename, are one keyed hash everywhere
    tag = lines[0]["identity"]
    assert tag.startswith("erased-") and {e["identity"] for e in lines} == {tag}
    assert lines[1]["detail"] == {"previous": tag}
    assert "Tony Blair" not in str(lines) and "T. Blair" not in str(lines)
    page = client.get("/v1/audit", headers=a, params={"since": lines[1]["seq"], "limit": 1}).json()
    assert [e["event"] for e in page["items"]] == ["export"] and page["next_since"] == lines[2]["seq"]
    raw = (data_dir / "gallery.db").read_bytes() + (data_dir / "gallery.db-wal").read_bytes()
    assert all(k.encode() not in raw for k in KEYS)  # the keys themselves are never stored
    assert b"Tony Blair" not in raw and b"T. Blair" not in raw  # nor, once erased, the names (no file keeps them)
    assert client.get("/v1/audit", headers=a, params={"limit": 0}).json()["code"] == "validation_error"


def test_audit_entries_older_than_the_retention_go(data_dir: Path) -> None:
    import time

    with TestClient(create_app(Settings(data_dir=data_dir))) as c:
        assert c.post("/v1/identities/old/faces", files=[("image", ("a.jpg", lfw_photo("Tony_Blair", 1),
                                                                       "image/jpeg"))]).status_code == 201
        assert [e["event"] for e in c.get("/v1/audit").json()["items"]] == ["enroll"]
    time.sleep(1.0)
    with TestClient(create_app(Settings(data_dir=data_dir, audit_retention_days=0.5 / 86400))) as c:
        deadline = time.monotonic() + 60  # the upkeep prunes once the service is ready, in the background
        while c.get("/v1/audit").json()["items"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert c.get("/v1/audit").json()["items"] == []
        assert c.get("/v1/identities/old").json()["faces"] == 1  # only the audit is pruned
