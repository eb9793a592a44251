"""What a request costs the store: readiness and identity search run no COUNT over faces (the searched space's size
comes from its index), whatever the photos hold; the statements are counted on the real SQLite connections."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from facesearch.settings import Settings
from index.sqlite import SqliteStore
from tests.conftest import lfw_photo
from tests.helpers import files, group


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every SQL statement the SQLite store runs from now on (connections made before included)."""
    statements: list[str] = []
    made = SqliteStore.conn.fget  # type: ignore[attr-defined]

    def conn(self: SqliteStore) -> sqlite3.Connection:
        c = made(self)
        c.set_trace_callback(statements.append)
        return c

    monkeypatch.setattr(SqliteStore, "conn", property(conn))
    yield statements


def test_readiness_and_search_count_nothing(data_dir: Path, traced: list[str]) -> None:
    with TestClient(create_app(Settings(data_dir=data_dir))) as c:
        assert c.post("/v1/identities/Colin_Powell/faces", files=files(lfw_photo("Colin_Powell", 1))).status_code == 201
        photo = group(lfw_photo("Tony_Blair", 1), lfw_photo("George_W_Bush", 1), lfw_photo("Colin_Powell", 2))
        assert len(c.post("/v1/photos", files=files(photo)).json()["faces"]) >= 3  # a background face too
        for path, request in [("/health/ready", lambda: c.get("/health/ready")),
                              ("/v1/search", lambda: c.post("/v1/search", files=files(lfw_photo("Colin_Powell", 3))))]:
            traced.clear()
            r = request()
            assert r.status_code == 200, r.text
            ran = [s for s in traced if not s.upper().startswith(("BEGIN", "COMMIT", "ROLLBACK", "PRAGMA"))]
            assert not [s for s in ran if "COUNT(" in s.upper()], (path, ran)
            assert len(ran) <= 2, (path, ran)  # readiness: a ping; search: the hits' owners
        assert c.get("/health/ready").json()["gallery_faces"] == 1  # the people space: the enrolled face only
        hit = c.post("/v1/search", files=files(lfw_photo("Colin_Powell", 3))).json()["faces"][0]
        assert hit["identity"] == "Colin_Powell" and hit["decision"] == "match"
