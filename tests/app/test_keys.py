"""API keys with roles, kept in the store: `facesearch keys` creates (shown once), lists (never the key) and revokes
them; a search key may search but not enroll or delete, an enroll key not delete; a key limited to other
collections is refused on the default one's routes; a revoked key is refused by another replica within a second;
each key's rate is limited (429 with Retry-After). Real HTTP calls into the app, SQLite and PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from facesearch import cli
from facesearch.settings import Settings
from tests.conftest import lfw_photo
from tests.helpers import files, new_key


def test_roles_collections_listing_and_revocation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    search, search_id = new_key(capsys, *data, "create", "--role", "search")
    enroll, _ = new_key(capsys, *data, "create", "--role", "enroll")
    admin, admin_id = new_key(capsys, *data, "create", "--role", "admin")
    elsewhere, _ = new_key(capsys, *data, "create", "--role", "admin", "--collection", "shop-a")
    with TestClient(create_app(Settings(data_dir=tmp_path / "data"))) as c:
        photo = files(lfw_photo("Colin_Powell", 1))
        assert c.post("/v1/identities/colin/faces", files=photo).status_code == 401  # keys exist: not open
        r = c.post("/v1/identities/colin/faces", files=photo, headers={"X-API-Key": search})
        assert r.status_code == 403 and r.json()["code"] == "forbidden" and "enroll key" in r.json()["detail"]
        assert c.post("/v1/identities/colin/faces", files=photo, headers={"X-API-Key": enroll}).status_code == 201
        found = c.post("/v1/search", files=files(lfw_photo("Colin_Powell", 2)), headers={"X-API-Key": search})
        assert found.status_code == 200 and found.json()["faces"][0]["identity"] == "colin"
        assert c.get("/v1/identities/colin", headers={"X-API-Key": search}).status_code == 200
        for key in (search, enroll):
            r = c.delete("/v1/identities/colin", headers={"X-API-Key": key})
            assert r.status_code == 403 and "admin key" in r.json()["detail"]
            assert c.get("/v1/audit", headers={"X-API-Key": key}).status_code == 403
            assert c.get("/v1/identities/colin/export", headers={"X-API-Key": key}).status_code == 403
        r = c.get("/v1/identities", headers={"X-API-Key": elsewhere})
        assert r.status_code == 403 and "shop-a" in r.json()["detail"]
        audit = c.get("/v1/audit", headers={"X-API-Key": admin}).json()["items"]
        assert [a["actor"] for a in audit if a["event"] == "enroll"] != [] and admin not in str(audit)

        assert cli.main(["keys", *data, "list"]) == 0
        listed = capsys.readouterr().out
        assert search_id in listed and admin_id in listed and "last used" in listed
        assert not any(k in listed for k in (search, enroll, admin, elsewhere))  # never the key itself
        assert cli.main(["keys", *data, "revoke", search_id]) == 0
        time.sleep(1.0)
        assert c.post("/v1/search", files=files(lfw_photo("Colin_Powell", 2)),
                      headers={"X-API-Key": search}).status_code == 401
        assert cli.main(["keys", *data, "revoke", search_id]) == 2  # revoked already
        assert c.delete("/v1/identities/colin", headers={"X-API-Key": admin}).status_code == 200
    raw = (tmp_path / "data" / "gallery.db").read_bytes()
    assert not any(k.encode() in raw for k in (search, enroll, admin, elsewhere))  # only hashes are stored


def test_a_key_revoked_on_one_replica_is_refused_by_another_within_a_second(
        tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACESEARCH_DATABASE_URL", pg_url)  # `facesearch keys` reads it like the service
    key, kid = new_key(capsys, "create", "--role", "search")
    replicas = [TestClient(create_app(Settings(data_dir=tmp_path / f"r{n}", database_url=pg_url))) for n in (0, 1)]
    with replicas[0] as a, replicas[1] as b:
        for replica in (a, b):
            assert replica.get("/v1/identities", headers={"X-API-Key": key}).status_code == 200
        assert cli.main(["keys", "revoke", kid]) == 0
        time.sleep(1.0)
        for replica in (a, b):
            assert replica.get("/v1/identities", headers={"X-API-Key": key}).status_code == 401


def test_each_key_is_rate_limited(tmp_path: Path) -> None:
    keys = ["one-key-0123456789abcdef", "two-key-0123456789abcdef"]
    with TestClient(create_app(Settings(data_dir=tmp_path / "data", api_keys=keys, rate_limit=2))) as c:
        answers = [c.get("/v1/identities", headers={"X-API-Key": keys[0]}) for _ in range(6)]
        limited = [r for r in answers if r.status_code == 429]
        assert limited and all(r.json()["code"] == "rate_limited" and int(r.headers["retry-after"]) >= 1
                               for r in limited)
        assert c.get("/v1/identities", headers={"X-API-Key": keys[1]}).status_code == 200  # per key
        time.sleep(1.1)
        assert c.get("/v1/identities", headers={"X-API-Key": keys[0]}).status_code == 200  # it refills
