"""Open mode (no API key anywhere) stays local: a request addressed to a name that is not this machine's (DNS
rebinding: a web page's own name resolving to 127.0.0.1) or posted from another site's page is refused with 403;
health checks answer; with a key configured, the key decides."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from facesearch.settings import Settings
from tests.conftest import lfw_photo
from tests.helpers import files


def test_open_mode_answers_only_this_machine(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FACESEARCH_ALLOWED_HOSTS")
    with TestClient(create_app(Settings(data_dir=data_dir))) as c:
        for host in ("evil.example", "evil.example:8000", "192.168.1.20", "testserver"):
            r = c.get("/v1/identities", headers={"Host": host})
            assert r.status_code == 403 and r.json()["code"] == "forbidden" and "API key" in r.json()["detail"], host
            assert c.get("/", headers={"Host": host}).status_code == 403
        assert c.get("/health/live", headers={"Host": "evil.example"}).status_code == 200
        for host in ("127.0.0.1:8000", "localhost", "LOCALHOST:1234", "[::1]:8000", "127.0.0.2", "app.localhost"):
            assert c.get("/v1/identities", headers={"Host": host}).status_code == 200, host
        photo = files(lfw_photo("Tony_Blair", 1))
        local = {"Host": "127.0.0.1:8000"}
        for origin in ("http://evil.example", "null", "http://127.0.0.1.evil.example:8000"):
            r = c.post("/v1/identities/t/faces", files=photo, headers={**local, "Origin": origin})
            assert r.status_code == 403, origin  # a cross-site form post
        r = c.post("/v1/identities/t/faces", files=photo, headers={**local, "Origin": "http://127.0.0.1:8000"})
        assert r.status_code == 201  # the service's own page
    with TestClient(create_app(Settings(data_dir=data_dir, allowed_hosts=["faces.lan"]))) as c:
        assert c.get("/v1/identities", headers={"Host": "faces.lan:8000"}).status_code == 200


def test_with_a_key_the_key_decides(data_dir: Path) -> None:
    with TestClient(create_app(Settings(data_dir=data_dir, api_keys=["a-key-0123456789abcdef"]))) as c:
        headers = {"Host": "faces.example.com", "X-API-Key": "a-key-0123456789abcdef"}
        assert c.get("/v1/identities", headers=headers).status_code == 200
        assert c.get("/v1/identities", headers={"Host": "faces.example.com"}).status_code == 401


def test_browser_apps_on_the_allowed_origins_may_call_with_a_key(data_dir: Path) -> None:
    key = "a-key-0123456789abcdef"
    settings = Settings(data_dir=data_dir, api_keys=[key], cors_origins=["https://app.example"])
    with TestClient(create_app(settings)) as c:
        ask = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "x-api-key"}
        r = c.options("/v1/search", headers=ask)  # the preflight carries no key
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
        assert c.options("/v1/search", headers={**ask, "Origin": "https://evil.example"}).status_code == 400
        r = c.get("/v1/identities", headers={"Origin": "https://app.example", "X-API-Key": key})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
        r = c.get("/v1/identities", headers={"Origin": "https://evil.example", "X-API-Key": key})
        assert "access-control-allow-origin" not in r.headers  # the browser keeps the answer from that page
