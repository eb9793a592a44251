"""Provable erasure through the real server: after a DELETE is acknowledged, no file under the data folder
holds the deleted faces' embeddings, chips or source crops, also when the server is SIGKILLed right after
the acknowledgement and started again. The same scan first finds every stored face (so it can fail)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.app.client import call, quote
from tests.conftest import LFW
from tests.erasure import face_bytes, files_holding

PEOPLE = ["Colin_Powell", "Tony_Blair", "Gerhard_Schroeder", "Ariel_Sharon"]


def enroll(url: str, name: str, photos: tuple[int, ...] = (1, 2)) -> list[int]:
    status, body = call(f"{url}/v1/identities/{quote(name)}/faces", "POST",
                        files=[("image", (LFW / name / f"{name}_{k:04d}.jpg").read_bytes()) for k in photos])
    assert status == 201, body
    return [f["face_id"] for f in body["faces"]]


def of(stored: dict[str, bytes], faces: list[int]) -> dict[str, bytes]:
    return {k: v for k, v in stored.items() if int(k.split("/")[0]) in faces}


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_deleted_faces_leave_no_bytes_in_any_file(tmp_path: Path, server_factory, kind: str) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    env = {"FACESEARCH_INDEX_KIND": kind}
    server = server_factory(data, **env)
    server.wait_ready()
    ids = {name: enroll(server.url, name) for name in PEOPLE}
    server.stop()  # a clean stop writes the index snapshot: every vector is in it now
    stored = face_bytes(data / "gallery.db", [i for v in ids.values() for i in v], hnsw=kind == "hnsw")
    forms = 4 if kind == "hnsw" else 3  # embedding, chip and source crop of each face; the graph's float16 copy
    assert len(stored) == forms * 2 * len(PEOPLE)
    held = files_holding(data, stored)
    assert set(held) == set(stored), "the scan must find what is stored"
    assert any(f.startswith("index/") for f in held[f"{ids[PEOPLE[0]][0]}/embedding"])
    if kind == "hnsw":
        assert all(f.startswith("index/") for f in held[f"{ids[PEOPLE[0]][0]}/embedding-fp16"])

    # one face
    server = server_factory(data, **env)
    server.wait_ready()
    victim = ids[PEOPLE[0]][0]
    status, body = call(f"{server.url}/v1/faces/{victim}", "DELETE")
    assert status == 200 and body["faces_deleted"] == 1
    server.proc.send_signal(signal.SIGKILL)  # right after the acknowledgement
    server.proc.wait()
    assert files_holding(data, of(stored, [victim])) == {}
    kept = of(stored, [i for v in ids.values() for i in v if i != victim])
    assert set(files_holding(data, kept)) == set(kept)

    # a whole identity, after a restart
    server = server_factory(data, **env)
    server.wait_ready()
    assert files_holding(data, of(stored, [victim])) == {}
    status, body = call(f"{server.url}/v1/identities/{quote(PEOPLE[1])}", "DELETE")
    assert status == 200 and body["faces_deleted"] == 2
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    gone = of(stored, [victim, *ids[PEOPLE[1]]])
    assert files_holding(data, gone) == {}

    # started again: the rest is served, the deleted stays gone, and the audit kept the deletions
    server = server_factory(data, **env)
    server.wait_ready()
    name = PEOPLE[0]
    status, body = call(f"{server.url}/v1/search", "POST",
                        files=[("image", (LFW / name / f"{name}_0003.jpg").read_bytes())])
    assert status == 200 and body["faces"][0]["identity"] == name and body["faces"][0]["decision"] == "match", body
    assert call(f"{server.url}/v1/identities/{quote(PEOPLE[1])}")[0] == 404
    status, audit = call(f"{server.url}/v1/audit?limit=100")
    events = [(e["event"], e["identity"], e["face_ids"]) for e in audit["items"]]
    assert ("delete_face", PEOPLE[0], [victim]) in events
    erased = [who for event, who, faces in events if event == "delete_identity" and faces == ids[PEOPLE[1]]]
    assert len(erased) == 1 and erased[0].startswith("erased-")  # the entry stays, the name goes
    assert PEOPLE[1] not in json.dumps(audit)
    assert all(e["actor"] == "open" for e in audit["items"])
    server.stop()
    assert files_holding(data, gone) == {}


def test_compact_leaves_no_deleted_bytes_in_postgresql_or_milvus_files(tmp_path: Path, server_factory, pg_cluster,  # type: ignore[no-untyped-def]
                                                                      pg_url: str) -> None:
    """The replica tier: after deletes, ``facesearch gallery compact`` leaves none of the deleted faces' bytes in
    any file of the PostgreSQL server (tables and WAL), of Milvus Lite, or of the replica's data folder. Without
    it, plain VACUUM leaves them in the tables' freed space (checked by hand: with the compact call removed, every
    deleted face's embedding, chip and crop is found in the server's files). Milvus's side: test_milvus.py."""
    data, milvus = tmp_path / "data", tmp_path / "milvus"
    milvus.mkdir()
    env = {"FACESEARCH_DATABASE_URL": pg_url, "FACESEARCH_VECTOR_URL": str(milvus / "vectors.db")}
    server = server_factory(data, **env)
    server.wait_ready()
    ids = {name: enroll(server.url, name) for name in PEOPLE[:3]}
    stored = face_bytes(pg_url, [i for v in ids.values() for i in v])
    victim = ids[PEOPLE[0]][0]
    assert call(f"{server.url}/v1/faces/{victim}", "DELETE")[0] == 200
    assert call(f"{server.url}/v1/identities/{quote(PEOPLE[1])}", "DELETE")[0] == 200
    server.stop()
    gone = of(stored, [victim, *ids[PEOPLE[1]]])
    kept = of(stored, [ids[PEOPLE[0]][1], *ids[PEOPLE[2]]])

    # the positive control: before compact, the deleted faces' bytes are still in the server's files
    assert set(files_holding(pg_cluster.data, gone)) == set(gone), "the scan must first find what it asserts gone"
    cli = [sys.executable, "-m", "facesearch.cli", "gallery", "compact", "--data-dir", str(data),
           "--database-url", pg_url, "--vector-url", str(milvus / "vectors.db")]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["store"]["left"] == [] and report["index"]["faces"] == {"people": 3, "photos": 0}, report

    folders = {"postgresql": pg_cluster.data, "milvus": milvus, "replica": data}
    for name, folder in folders.items():
        assert files_holding(folder, gone) == {}, name
    assert set(files_holding(pg_cluster.data, kept)) == set(kept), "the scan must find what is stored"
    assert {k for k in files_holding(milvus, kept) if k.endswith("/embedding")} == {
        k for k in kept if k.endswith("/embedding")}

    server = server_factory(data, **env)  # and the gallery serves on
    server.wait_ready()
    name = PEOPLE[2]
    status, body = call(f"{server.url}/v1/search", "POST",
                        files=[("image", (LFW / name / f"{name}_0003.jpg").read_bytes())])
    assert status == 200 and body["faces"][0]["identity"] == name, body
    server.stop()
