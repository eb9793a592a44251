"""The Python client library against a real server: every route it covers, blocking and asyncio, typed answers,
typed errors with the server's code, retries on 503; and what ``import facesearch.client`` pulls in."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from facesearch import schemas
from facesearch.client import (
    AsyncFaceSearch,
    BadRequest,
    Conflict,
    FaceSearch,
    NotFound,
    Routes,
    Unauthorized,
    Unavailable,
    Unreachable,
)
from tests.conftest import LFW, free_port, lfw_photo
from tests.helpers import two_face_photo

KEY = "k-client-1"


def photo(name: str, i: int) -> Path:
    return LFW / name / f"{name}_{i:04d}.jpg"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from tests.conftest import Server

    s = Server(tmp_path_factory.mktemp("client") / "data", FACESEARCH_API_KEYS=KEY)
    s.wait_ready()
    yield s
    s.stop()


def test_every_route_through_the_blocking_client(server) -> None:  # type: ignore[no-untyped-def]
    with FaceSearch(server.url, KEY) as fs:
        assert fs.ready().status == "ready" and fs.info().auth
        enrolled = fs.enroll("Colin Powell", photo("Colin_Powell", 1), lfw_photo("Colin_Powell", 2),
                             metadata={"team": "a"})
        assert isinstance(enrolled, schemas.EnrollResponse) and len(enrolled.faces) == 2
        fs.enroll("Tony_Blair", photo("Tony_Blair", 1))
        assert fs.identities(prefix="Colin").total == 1
        detail = fs.identity("Colin Powell")
        assert detail.metadata == {"team": "a"} and detail.face_list.total == 2
        assert fs.update_identity("Colin Powell", metadata={"team": "b"}).metadata == {"team": "b"}

        found = fs.search(photo("Colin_Powell", 3), k=2)
        assert isinstance(found, schemas.SearchResponse)
        assert found.faces[0].decision == "match" and found.faces[0].identity == "Colin Powell"
        same = fs.verify(photo("Tony_Blair", 2), identity="Tony_Blair")
        assert same.same_person and same.identity == "Tony_Blair"
        assert not fs.verify(photo("Tony_Blair", 2), photo("Colin_Powell", 2)).same_person
        assert fs.embed(photo("Tony_Blair", 3)).faces[0].embedding.__len__() == fs.embed(photo("Tony_Blair", 3)).dim
        assert fs.thumbnail(enrolled.faces[0].face_id)[:2] == b"\xff\xd8"
        with zipfile.ZipFile(io.BytesIO(fs.export_identity("Colin Powell"))) as z:
            assert json.loads(z.read("identity.json"))["identity"] == "Colin Powell"

        group = two_face_photo(lfw_photo("Serena_Williams", 1), lfw_photo("Colin_Powell", 4))
        indexed = fs.index_photo(group, photo_id="g1", album="trip", metadata={"where": "beach"})
        assert indexed.photo_id == "g1" and len(indexed.faces) >= 2
        assert "Colin Powell" in {f.identity for f in indexed.faces}
        fs.index_photo(lfw_photo("Serena_Williams", 2), photo_id="g2", album="trip")
        assert fs.photos(album="trip").total == 2 and fs.photo("g1").metadata == {"where": "beach"}
        hits = fs.find_photos(photo("Serena_Williams", 3))
        assert {h.photo_id for h in hits.photos} == {"g1", "g2"}
        assert {h.photo_id for h in fs.find_photos(identity="Colin Powell").photos} == {"g1"}
        clusters = fs.clusters(min_faces=2)
        in_g2 = fs.photo("g2").face_list[0].cluster_id
        serena = next(c for c in clusters.items if c.cluster_id == in_g2)  # her two photos, grouped
        assert serena.faces == 2
        assert fs.cluster(serena.cluster_id, limit=1).face_ids == serena.face_ids[:1]
        assert fs.rebuild_status().state in ("idle", "done")
        with zipfile.ZipFile(io.BytesIO(fs.export_cluster(serena.cluster_id))) as z:
            assert json.loads(z.read("cluster.json"))["cluster_id"] == serena.cluster_id
        named = fs.name_cluster(serena.cluster_id, "Serena")
        assert sorted(named.face_ids) == sorted(serena.face_ids)
        assert fs.search(photo("Serena_Williams", 4)).faces[0].identity == "Serena"  # named faces answer search

        assert fs.merge_identities("Colin Powell", "Tony_Blair").faces == 3
        assert fs.delete_face(enrolled.faces[0].face_id).faces_deleted == 1
        assert fs.delete_photo("g2").faces_deleted == 1
        assert fs.delete_album("trip").photos_deleted == 1
        assert fs.delete_identity("Colin Powell").faces_deleted == 2
        assert fs.delete_identity("Serena").faces_deleted == 0  # its faces went with the album
        events = {line.event for line in fs.audit(limit=1000).items}
        assert {"enroll", "index_photo", "name_faces", "merge_identities", "delete_identity", "export"} <= events


def test_errors_are_typed_and_carry_the_servers_code(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with FaceSearch(server.url, KEY) as fs:
        with pytest.raises(NotFound) as e:
            fs.identity("nobody")
        assert e.value.status == 404 and e.value.code == "not_found" and "nobody" in e.value.detail
        with pytest.raises(BadRequest) as bad:
            fs.search(b"not a photo")
        assert bad.value.code == "invalid_image"
        fs.index_photo(lfw_photo("Tony_Blair", 5), photo_id="dup")
        with pytest.raises(Conflict):
            fs.index_photo(lfw_photo("Tony_Blair", 5), photo_id="dup")
        with pytest.raises(ValueError):
            fs.verify(photo("Tony_Blair", 2))  # neither a second photo nor an identity: refused before sending
    with FaceSearch(server.url, "wrong") as fs, pytest.raises(Unauthorized):
        fs.info()
    with FaceSearch(f"http://127.0.0.1:{free_port()}", KEY, timeout=5) as fs, pytest.raises(Unreachable):
        fs.info()


def test_503_is_retried_then_raised(tmp_path: Path) -> None:
    """A service that is not ready answers 503: the client tries again ``retries`` times, then raises Unavailable
    (a server still loading is what a client meets at a deploy)."""
    import http.server
    import threading

    asked = []

    class Busy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            asked.append(self.path)
            body = b'{"detail": "the service has as many requests waiting as it takes", "code": "busy"}'
            self.send_response(503)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with FaceSearch(f"http://127.0.0.1:{httpd.server_address[1]}", retries=2) as fs, \
                pytest.raises(Unavailable) as e:
            fs.info()
        assert e.value.code == "busy" and asked == ["/v1/info"] * 3
    finally:
        httpd.shutdown()


def test_the_asyncio_client(server) -> None:  # type: ignore[no-untyped-def]
    async def run() -> None:
        async with AsyncFaceSearch(server.url, KEY) as fs:
            await fs.enroll("async person", photo("Serena_Williams", 1))
            answers = await asyncio.gather(*(fs.search(photo("Serena_Williams", i)) for i in (2, 3, 4)))
            assert all(isinstance(a, schemas.SearchResponse) and a.faces[0].identity == "async person"
                       for a in answers)
            typed = await fs.send(Routes.identity("async person"))
            assert typed.faces == 1
            with pytest.raises(NotFound):
                await fs.delete_identity("nobody at all")
            assert (await fs.delete_identity("async person")).faces_deleted == 1

    asyncio.run(run())


def test_importing_the_client_loads_nothing_of_the_server() -> None:
    code = ("import sys, facesearch.client; heavy = ['onnxruntime', 'faiss', 'numpy', 'fastapi', 'index', 'app',"
            " 'model', 'sqlite3', 'psycopg', 'torch']; print([m for m in heavy if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_openapi_operation_ids_are_the_handlers_names(tmp_path: Path) -> None:
    """What a generated client names its methods: one id per operation, the handler's name, with its tag."""
    from app.main import create_app
    from facesearch.settings import Settings

    spec = create_app(Settings(data_dir=tmp_path / "data")).openapi()
    ops = {(method, path): op for path, methods in spec["paths"].items() for method, op in methods.items()}
    ids = [op["operationId"] for op in ops.values()]
    assert len(ids) == len(set(ids)) and all(i.isidentifier() for i in ids)
    assert ops[("post", "/v1/search")]["operationId"] == "search"
    assert ops[("post", "/v1/photos")]["operationId"] == "index_photo" and ops[("post", "/v1/photos")]["tags"]
