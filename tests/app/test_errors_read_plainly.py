"""Every error a newcomer meets reads plainly: our limits in our words, one string `detail`, keys trimmed, an
encoded '/' explained, options a route does not take refused by name, and both ways of sending an API key."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app import errors
from app.main import create_app
from facesearch.settings import Settings
from tests.conftest import lfw_photo


def files(*blobs: bytes) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("image", (f"p{i}.jpg", b, "image/jpeg")) for i, b in enumerate(blobs)]


def png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (w, h)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data = tmp_path_factory.mktemp("data")
    with TestClient(create_app(Settings(data_dir=data, max_upload_mb=20))) as c:
        yield c


@pytest.mark.parametrize("side", [8000, 12000])  # under and over Pillow's own limit (89,478,485 pixels)
def test_oversized_images_answer_our_limit_in_our_words(client: TestClient, side: int) -> None:
    r = client.post("/v1/search", files=files(png(side, side)))
    assert r.status_code == 413 and r.json()["code"] == "too_large"
    detail = r.json()["detail"]
    assert detail == f"image has {side}x{side} = {side * side:,} pixels; the limit is 40,000,000 pixels"


def test_corrupt_images_say_so_without_internals(client: TestClient) -> None:
    face = lfw_photo("Colin_Powell")
    r = client.post("/v1/search", files=files(face[: len(face) // 2]))
    assert r.status_code == 400 and r.json() == {"detail": "the image data is corrupt or truncated",
                                                 "code": "invalid_image"}


def test_validation_errors_have_a_string_detail_and_the_field_list_beside_it(client: TestClient) -> None:
    r = client.post("/v1/search", files=files(lfw_photo("Colin_Powell")), data={"k": "0"})
    body = r.json()
    assert r.status_code == 422 and body["code"] == "validation_error"
    assert isinstance(body["detail"], str) and body["detail"].startswith("k: ")
    assert body["errors"][0]["loc"] == ["body", "k"]
    r = client.get("/v1/identities", params={"limit": "-1"})
    assert r.status_code == 422 and r.json()["detail"].startswith("limit: ")


def test_unknown_form_fields_are_refused_by_name(client: TestClient) -> None:
    r = client.post("/v1/search", files=files(lfw_photo("Colin_Powell")), data={"face": "largest"})
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    assert "unknown form field 'face'" in r.json()["detail"] and "image" in r.json()["detail"]
    r = client.post("/v1/verify", files=[("image1", ("a.jpg", b"x", "image/jpeg"))], data={"treshold": "0.5"})
    assert r.status_code == 422 and "'treshold'" in r.json()["detail"]


def test_identity_keys_are_trimmed_and_blank_ones_refused(client: TestClient) -> None:
    photo = lfw_photo("Tony_Blair")
    r = client.post("/v1/identities/%20%20/faces", files=files(photo))
    assert r.status_code == 422 and r.json() == {"detail": "identity must not be blank", "code": "invalid_identity"}
    r = client.post("/v1/identities/%20tony%20/faces", files=files(photo))
    assert r.status_code == 201 and r.json()["identity"] == "tony"
    assert client.get("/v1/identities/tony%20").json()["identity"] == "tony"
    r = client.patch("/v1/identities/tony", json={"identity": "   "})
    assert r.status_code == 422 and r.json()["code"] == "invalid_identity"
    assert client.delete("/v1/identities/tony").status_code == 200


def test_an_encoded_slash_is_explained_like_renames_rule(client: TestClient) -> None:
    for method, path in (("post", "/v1/identities/a%2Fb/faces"), ("get", "/v1/identities/a%2Fb"),
                         ("delete", "/v1/identities/a%2fb")):
        kwargs = {"files": files(lfw_photo("Tony_Blair"))} if method == "post" else {}
        r = getattr(client, method)(path, **kwargs)
        assert r.status_code == 422 and r.json() == {"detail": errors.SLASH_IN_IDENTITY, "code": "invalid_identity"}
    r = client.patch("/v1/identities/anyone", json={"identity": "a/b"})
    assert r.json()["detail"] == errors.SLASH_IN_IDENTITY


def test_bearer_keys_and_metrics_behind_the_keys(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(data_dir=tmp_path / "d", api_keys=["k1"]))) as c:
        assert c.get("/v1/identities").status_code == 401
        assert c.get("/v1/identities", headers={"Authorization": "Bearer k1"}).status_code == 200
        assert c.get("/v1/identities", headers={"Authorization": "Bearer k2"}).status_code == 401
        assert c.get("/v1/identities", headers={"Authorization": "Basic k1"}).status_code == 401
        assert c.get("/v1/identities", headers={"X-API-Key": "k1"}).status_code == 200
        r = c.get("/metrics")
        assert r.status_code == 401 and r.json()["code"] == "unauthorized"
        assert "facesearch_requests_total" in c.get("/metrics", headers={"Authorization": "Bearer k1"}).text
        assert c.get("/health/ready").status_code == 200  # probes stay open
    with TestClient(create_app(Settings(data_dir=tmp_path / "d", api_keys=["k1"], metrics_public=True))) as c:
        assert c.get("/metrics").status_code == 200
        assert c.get("/v1/identities").status_code == 401
