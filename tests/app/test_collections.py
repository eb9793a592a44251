"""Collections: galleries of their own in one service. Two collections holding the same identity name stay apart in
search, photos, clusters, export and audit; each has its own threshold size; deleting one leaves no bytes of its faces
in any file; keys limited to a collection are refused elsewhere; the routes under /v1 are the ``default`` collection,
as before. Real HTTP calls into the app through the client library, real faces, SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from facesearch.client import BadRequest, Conflict, FaceSearch, Forbidden, NotFound
from facesearch.settings import Settings
from tests.conftest import lfw_photo
from tests.erasure import face_bytes, files_holding
from tests.helpers import new_key, two_face_photo


class InApp(FaceSearch):
    """The client library over the app's TestClient (its transport is httpx's, like a server's)."""

    def __init__(self, http: TestClient, collection: str | None = None, api_key: str | None = None) -> None:
        self.url, self.collection, self.retries, self.max_wait = "http://testserver", collection, 0, 0.0
        self.http = http
        if api_key:
            self.http = TestClient(http.app, headers={"X-API-Key": api_key})


@pytest.fixture
def app(tmp_path: Path, database_url: str | None) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(data_dir=tmp_path / "data", database_url=database_url))) as c:
        yield c


def test_two_collections_with_the_same_names_stay_apart(app: TestClient, tmp_path: Path,
                                                         database_url: str | None) -> None:
    admin = InApp(app)
    assert [c.name for c in admin.collections().items] == ["default"]
    admin.create_collection("shop-a")
    admin.create_collection("shop-b")
    with pytest.raises(Conflict):
        admin.create_collection("shop-a")
    with pytest.raises(BadRequest):
        admin.create_collection("Shop A")
    a, b, default = InApp(app, "shop-a"), InApp(app, "shop-b"), InApp(app)

    # the same name, two people: "alex" is Colin Powell in A and Tony Blair in B
    a.enroll("alex", lfw_photo("Colin_Powell", 1), lfw_photo("Colin_Powell", 2))
    b.enroll("alex", lfw_photo("Tony_Blair", 1))
    colin = lfw_photo("Colin_Powell", 3)
    in_a, in_b = a.search(colin).faces[0], b.search(colin).faces[0]
    assert in_a.identity == "alex" and in_a.decision == "match"
    assert in_b.decision != "match"  # B's alex is someone else
    assert default.search(colin).faces[0].decision != "match" and default.identities().total == 0
    assert a.verify(colin, identity="alex").same_person and not b.verify(colin, identity="alex").same_person
    detail = a.identity("alex")
    assert detail.faces == 2 and detail.face_list.items[0].thumbnail_url.startswith("/v1/collections/shop-a/faces/")
    first = detail.face_list.items[0].face_id  # face ids are per collection: the same number is B's own face
    assert b.identity("alex").face_list.items[0].face_id == first and b.thumbnail(first) != a.thumbnail(first)

    # photos and clusters: indexed into A only
    party = two_face_photo(lfw_photo("Colin_Powell", 4), lfw_photo("George_W_Bush", 1))
    indexed = a.index_photo(party, photo_id="party", album="summer")
    assert len(indexed.faces) == 2 and any(f.identity == "alex" for f in indexed.faces)
    assert a.photos().total == 1 and b.photos().total == 0 and default.photos().total == 0
    with pytest.raises(NotFound):
        b.photo("party")
    assert a.clusters().total >= 1 and b.clusters().total == 0
    assert [p.photo_id for p in a.find_photos(identity="alex").photos] == ["party"]
    assert b.find_photos(identity="alex").photos == []

    # export and audit
    shas = {f.sha256 for f in detail.face_list.items}
    assert _exported(a.export_identity("alex")) == shas
    assert _exported(b.export_identity("alex")).isdisjoint(shas)
    assert [e.event for e in b.audit().items] == ["enroll", "export"]
    assert "index_photo" in {e.event for e in a.audit().items} and "index_photo" not in {
        e.event for e in b.audit().items}
    assert {e.event for e in default.audit().items} >= {"create_collection"}

    listed = {c.name: c for c in admin.collections().items}
    assert list(listed) == ["default", "shop-a", "shop-b"]
    assert (listed["shop-a"].faces, listed["shop-a"].photos, listed["shop-b"].faces) == (4, 1, 1)

    # deleting A: its faces leave no bytes in any file of the data folder (PostgreSQL: its schema is dropped)
    face_ids = [f.face_id for f in a.identity("alex").face_list.items]
    location = _where(app, "shop-a", tmp_path, database_url)
    stored = face_bytes(location, face_ids)
    assert files_holding(tmp_path / "data", stored) != {} or database_url, "the scan must first find what it deletes"
    deleted = admin.delete_collection("shop-a")
    assert deleted.collection == "shop-a" and deleted.faces_deleted == 4
    assert files_holding(tmp_path / "data", stored) == {}
    if database_url:
        with psycopg.connect(database_url) as con:
            schemas = [r[0] for r in con.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'fs_%'")]
        assert len(schemas) == 1  # shop-b's only
    for call in (lambda: a.search(colin), lambda: a.identities(), lambda: admin.describe_collection("shop-a")):
        with pytest.raises(NotFound):
            call()
    assert b.search(colin).faces[0].decision != "match" and b.identity("alex").faces == 1
    with pytest.raises(Conflict):
        admin.delete_collection("default")
    assert app.get("/v1/collections/shop-b/identities/a%2Fb").json()["code"] == "invalid_identity"
    assert app.put("/v1/collections/shop-b/photos/search").headers["allow"] == "POST"  # not photos/{photo_id}'s


def _exported(archive: bytes) -> set[str]:
    """The sha256 of each face in an identity's export."""
    return {f["sha256"] for f in json.loads(zipfile.ZipFile(io.BytesIO(archive)).read("identity.json"))["faces"]}


def _where(app: TestClient, name: str, tmp_path: Path, database_url: str | None) -> Path | str:
    """The SQLite file, or a PostgreSQL URL whose search path is the collection's schema."""
    state = app.app.state.fs  # type: ignore[attr-defined]
    gallery = state.collections.get(name)
    if database_url is None:
        return Path(gallery.store.path)
    return f"{database_url}?options=-csearch_path%3D{gallery.store.schema}"


def test_keys_limited_to_a_collection(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    admin_key, _ = new_key(capsys, *data, "create", "--role", "admin")
    shop_a, _ = new_key(capsys, *data, "create", "--role", "enroll", "--collection", "shop-a")
    shop_a_search, _ = new_key(capsys, *data, "create", "--role", "search", "--collection", "shop-a")
    with TestClient(create_app(Settings(data_dir=tmp_path / "data"))) as app:
        admin = InApp(app, api_key=admin_key)
        admin.create_collection("shop-a")
        admin.create_collection("shop-b")
        a = InApp(app, "shop-a", api_key=shop_a)
        a.enroll("alex", lfw_photo("Colin_Powell", 1))
        assert a.search(lfw_photo("Colin_Powell", 2)).faces[0].identity == "alex"
        assert a.info().caller is not None and a.info().caller.role == "enroll"
        assert [c.name for c in a.collections().items] == ["shop-a"]  # only what it may use
        for elsewhere in (InApp(app, "shop-b", api_key=shop_a), InApp(app, None, api_key=shop_a)):
            with pytest.raises(Forbidden) as refused:
                elsewhere.identities()
            assert "shop-a" in str(refused.value.detail)
        with pytest.raises(Forbidden):
            a.create_collection("shop-c")
        with pytest.raises(Forbidden):
            a.delete_collection("shop-a")
        searcher = InApp(app, "shop-a", api_key=shop_a_search)
        with pytest.raises(Forbidden):
            searcher.enroll("bob", lfw_photo("Tony_Blair", 1))
        with pytest.raises(Forbidden):
            searcher.delete_identity("alex")
        assert searcher.identities().total == 1


def test_a_gallery_from_before_collections_opens_as_default(tmp_path: Path, database_url: str | None) -> None:
    """A gallery written before collections (no ``collections`` table) serves its faces under /v1 as before."""
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    with TestClient(create_app(settings)) as app:
        InApp(app).enroll("colin", lfw_photo("Colin_Powell", 1))
    if database_url:
        with psycopg.connect(database_url) as con:
            con.execute("DROP TABLE collections")
    else:
        import sqlite3

        with sqlite3.connect(tmp_path / "data" / "gallery.db") as con:
            con.execute("DROP TABLE collections")
    with TestClient(create_app(settings)) as app:
        client = InApp(app)
        assert client.search(lfw_photo("Colin_Powell", 2)).faces[0].identity == "colin"
        assert [c.name for c in client.collections().items] == ["default"]
        assert client.describe_collection("default").faces == 1
        client.create_collection("shop-a")  # and collections can be made in it
        assert [c.name for c in client.collections().items] == ["default", "shop-a"]


def test_replicas_see_a_collection_made_or_deleted_on_another_within_a_second(tmp_path: Path, pg_url: str) -> None:
    replicas = [TestClient(create_app(Settings(data_dir=tmp_path / f"r{n}", database_url=pg_url))) for n in (0, 1)]
    with replicas[0] as r0, replicas[1] as r1:
        InApp(r0).create_collection("shop-a")
        InApp(r0, "shop-a").enroll("alex", lfw_photo("Colin_Powell", 1))
        time.sleep(1.5)
        other = InApp(r1, "shop-a")
        assert other.search(lfw_photo("Colin_Powell", 2)).faces[0].identity == "alex"  # opened on first use
        assert list((tmp_path / "r1" / "collections").iterdir())  # its FAISS snapshot folder on this replica
        InApp(r0).delete_collection("shop-a")
        time.sleep(1.5)
        with pytest.raises(NotFound):
            other.identities()
        assert not list((tmp_path / "r1" / "collections").iterdir())  # and this replica's copy of its vectors went


def test_the_commands_work_in_a_collection(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`facesearch search --collection`: in process, and against a server through the client."""
    from facesearch import cli

    data = tmp_path / "data"
    with TestClient(create_app(Settings(data_dir=data))) as app:
        InApp(app).create_collection("shop-a")
        InApp(app, "shop-a").enroll("alex", lfw_photo("Colin_Powell", 1))
    probe = tmp_path / "probe.jpg"
    probe.write_bytes(lfw_photo("Colin_Powell", 2))
    assert cli.main(["search", "--data-dir", str(data), "--collection", "shop-a", str(probe)]) == 0
    assert "\tmatch\talex\t" in capsys.readouterr().out
    assert cli.main(["search", "--data-dir", str(data), str(probe)]) == 0  # the default collection: nobody
    assert "\tunknown\t" in capsys.readouterr().out
    assert cli.main(["search", "--data-dir", str(data), "--collection", "nope", str(probe)]) == 2
    assert "collection 'nope' not found" in capsys.readouterr().err
