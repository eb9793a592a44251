"""Real HTTP through TestClient with real faces: enroll, search, verify, manage, restart, errors, auth."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app import errors
from app.main import create_app
from facesearch.settings import Settings
from tests.conftest import lfw_photo, orl_photo
from tests.helpers import files, two_face_photo

# LFW people with several photos: enrolled with photos 1-2, probed with photo 3
PEOPLE = ["Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Gerhard_Schroeder", "Ariel_Sharon",
          "Hugo_Chavez", "Jean_Chretien", "John_Ashcroft"]
STRANGERS = ["Serena_Williams", "Vladimir_Putin", "Junichiro_Koizumi", "Jacques_Chirac"]




@pytest.fixture
def client(data_dir: Path, database_url: str | None) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(data_dir=data_dir, database_url=database_url))) as c:
        yield c


@pytest.fixture
def enrolled(client: TestClient) -> TestClient:
    for name in PEOPLE:
        r = client.post(f"/v1/identities/{name}/faces", files=files(lfw_photo(name, 1), lfw_photo(name, 2)),
                        data={"face": "largest"})
        assert r.status_code == 201, r.text
    return client


def test_enroll_returns_faces_quality_and_ids(client: TestClient) -> None:
    r = client.post("/v1/identities/Colin Powell/faces", files=files(lfw_photo("Colin_Powell", 1)),
                    data={"metadata": '{"team": "state"}'})
    assert r.status_code == 201
    body = r.json()
    face = body["faces"][0]
    assert body["identity"] == "Colin Powell" and face["face_id"] >= 1
    assert len(face["box"]) == 4 and len(face["landmarks"]) == 5 and face["detection_score"] > 0.9
    x1, y1, x2, y2 = face["box"]
    assert 40 < x1 < x2 < 210 and 40 < y1 < y2 < 230  # LFW: the subject is centred in 250x250
    assert set(face["quality"]) == {"face_size", "blur", "yaw"}
    detail = client.get("/v1/identities/Colin Powell").json()
    assert detail["metadata"] == {"team": "state"} and detail["faces"] == 1
    thumb = client.get(detail["face_list"]["items"][0]["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    size = client.get("/v1/info").json()["model"]["input"]["size"]  # the encoder's chip
    assert Image.open(io.BytesIO(thumb.content)).size == (size, size)
    # the same photo again: a warning, not an error
    again = client.post("/v1/identities/Colin Powell/faces", files=files(lfw_photo("Colin_Powell", 1)))
    assert any("already enrolled" in w for w in again.json()["faces"][0]["warnings"])
    assert any("near-duplicate" in w for w in again.json()["faces"][0]["warnings"])


def test_search_finds_the_right_person_first(enrolled: TestClient) -> None:
    correct = 0
    for name in PEOPLE:
        r = enrolled.post("/v1/search", files=files(lfw_photo(name, 3)), data={"k": "3"})
        assert r.status_code == 200
        body = r.json()
        face = body["faces"][0]
        assert len(face["candidates"]) == 3
        assert len({c["identity"] for c in face["candidates"]}) == 3  # one row per identity
        correct += face["candidates"][0]["identity"] == name
        assert body["threshold"]["source"] == "fpir" and body["threshold"]["gallery_faces"] == 16
    assert correct >= len(PEOPLE) - 1, f"right person first for only {correct} of {len(PEOPLE)}"


def test_strangers_are_unknown(enrolled: TestClient) -> None:
    decisions = [enrolled.post("/v1/search", files=files(lfw_photo(n, 1))).json()["faces"][0]["decision"]
                 for n in STRANGERS]
    assert decisions.count("unknown") >= len(STRANGERS) - 1, decisions
    # a request may loosen the threshold: everyone becomes a match
    r = enrolled.post("/v1/search", files=files(lfw_photo(STRANGERS[0], 1)), data={"threshold": "2"})
    assert r.json()["faces"][0]["decision"] == "match" and r.json()["threshold"]["source"] == "request"


def test_verify_same_and_different_people(enrolled: TestClient) -> None:
    same = enrolled.post("/v1/verify", files=[*files(lfw_photo("Tony_Blair", 4), field="image1"),
                                              *files(lfw_photo("Tony_Blair", 5), field="image2")]).json()
    diff = enrolled.post("/v1/verify", files=[*files(lfw_photo("Tony_Blair", 4), field="image1"),
                                              *files(lfw_photo("Hugo_Chavez", 4), field="image2")]).json()
    assert same["same_person"] is True and diff["same_person"] is False
    assert same["distance"] < diff["distance"]
    assert same["threshold"]["source"] == "verification"
    ident = enrolled.post("/v1/verify", files=files(lfw_photo("Ariel_Sharon", 3)), data={"identity": "Ariel_Sharon"})
    assert ident.status_code == 200 and ident.json()["same_person"] is True
    assert ident.json()["matched_face_id"] is not None
    assert enrolled.post("/v1/verify", files=files(lfw_photo("Ariel_Sharon", 3)),
                         data={"identity": "nobody"}).json()["code"] == "not_found"
    usage = enrolled.post("/v1/verify", files=files(lfw_photo("Ariel_Sharon", 3)))
    assert usage.status_code == 422 and usage.json()["code"] == "validation_error"


def test_delete_then_search_and_restart_keeps_everything(data_dir: Path, database_url: str | None) -> None:
    with TestClient(create_app(Settings(data_dir=data_dir, database_url=database_url))) as c:
        for name in PEOPLE[:4]:
            r = c.post(f"/v1/identities/{name}/faces", files=files(lfw_photo(name, 1)), data={"face": "largest"})
            assert r.status_code == 201
        assert c.delete("/v1/identities/Tony_Blair").json()["faces_deleted"] == 1
        r = c.post("/v1/search", files=files(lfw_photo("Tony_Blair", 1)), data={"k": "10"}).json()
        assert "Tony_Blair" not in {x["identity"] for x in r["faces"][0]["candidates"]}
        face_id = c.get("/v1/identities/Colin_Powell").json()["face_list"]["items"][0]["face_id"]
        assert c.patch("/v1/identities/Colin_Powell", json={"identity": "Powell"}).json()["identity"] == "Powell"
    with TestClient(create_app(Settings(data_dir=data_dir, database_url=database_url))) as c:
        listing = c.get("/v1/identities").json()
        assert listing["total"] == 3
        assert {i["identity"] for i in listing["items"]} == {"Powell", "Donald_Rumsfeld", "Gerhard_Schroeder"}
        top = c.post("/v1/search", files=files(lfw_photo("Colin_Powell", 1))).json()["faces"][0]
        assert top["identity"] == "Powell" and top["decision"] == "match"
        assert c.delete(f"/v1/faces/{face_id}").status_code == 200
        assert c.get(f"/v1/faces/{face_id}/thumbnail").json()["code"] == "not_found"


def test_a_photo_whose_subject_is_clear_enrolls_without_asking(client: TestClient) -> None:
    """Someone small in the background does not stop an enrollment: the largest face is the subject when it is at
    least 1.3 times the size of the next (facesearch/enrollment.py SUBJECT_RATIO); similar sizes stay refused."""
    big = Image.open(io.BytesIO(lfw_photo("Colin_Powell", 1))).convert("RGB")
    small = Image.open(io.BytesIO(lfw_photo("Tony_Blair", 1))).convert("RGB").resize((110, 110))
    canvas = Image.new("RGB", (big.width + small.width + 60, big.height + 40), (120, 120, 120))
    canvas.paste(big, (20, 20))
    canvas.paste(small, (40 + big.width, 20))
    buf = io.BytesIO()
    canvas.save(buf, format="JPEG", quality=95)
    r = client.post("/v1/identities/Powell/faces", files=files(buf.getvalue()))
    assert r.status_code == 201, r.text
    box = r.json()["faces"][0]["box"]
    assert box[2] <= 20 + big.width  # the large face, on the left
    search = client.post("/v1/search", files=files(lfw_photo("Colin_Powell", 3))).json()
    assert search["faces"][0]["identity"] == "Powell"
    same_size = client.post("/v1/identities/group/faces",
                            files=files(two_face_photo(lfw_photo("Colin_Powell", 3), lfw_photo("Tony_Blair", 3))))
    assert same_size.status_code == 422 and same_size.json()["code"] == "multiple_faces"
    assert "ambiguous" in same_size.json()["detail"]


def test_two_faces_in_one_photo(enrolled: TestClient) -> None:
    photo = two_face_photo(lfw_photo("Colin_Powell", 3), lfw_photo("Tony_Blair", 3))
    r = enrolled.post("/v1/search", files=files(photo)).json()
    assert r["faces_found"] >= 2
    matched = [f["identity"] for f in r["faces"] if f["decision"] == "match"]
    assert len(matched) == len(set(matched))  # never the same identity twice in one photo
    assert {"Colin_Powell", "Tony_Blair"} <= {f["candidates"][0]["identity"] for f in r["faces"][:2]}
    multi = enrolled.post("/v1/identities/group/faces", files=files(photo))
    assert multi.status_code == 422 and multi.json()["code"] == "multiple_faces"
    assert len(multi.json()["boxes"]) >= 2
    largest = enrolled.post("/v1/identities/group/faces", files=files(photo), data={"face": "largest"})
    assert largest.status_code == 201
    emb = enrolled.post("/v1/embed", files=files(photo)).json()
    assert len(emb["faces"]) >= 2 and len(emb["faces"][0]["embedding"]) == 512
    v = np.array(emb["faces"][0]["embedding"])
    assert abs(np.linalg.norm(v) - 1) < 1e-4


def test_enroll_of_several_photos_is_all_or_nothing(client: TestClient) -> None:
    blank = io.BytesIO()
    Image.new("RGB", (200, 200), (200, 200, 200)).save(blank, format="PNG")
    r = client.post("/v1/identities/atomic/faces", files=files(lfw_photo("Colin_Powell", 1), blank.getvalue()))
    assert r.status_code == 422 and r.json()["code"] == "no_face" and r.json()["file_index"] == 1
    assert client.get("/v1/identities/atomic").status_code == 404
    assert client.get("/v1/identities").json()["total"] == 0


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("x.txt", "hello")
    return buf.getvalue()


def test_error_codes(data_dir: Path, database_url: str | None) -> None:
    with TestClient(create_app(Settings(data_dir=data_dir, database_url=database_url, max_upload_mb=0.05))) as c:
        photo = lfw_photo("Colin_Powell", 1)
        big = np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(big).save(buf, format="PNG")
        cases = [
            (c.post("/v1/search", files=files(b"not an image")), 400, "invalid_image"),
            (c.post("/v1/search", files=files(photo[: len(photo) // 2])), 400, "invalid_image"),
            (c.post("/v1/search", files=files(buf.getvalue())), 413, "too_large"),
            (c.post("/v1/search", files=files(_zip())), 415, "unsupported_media_type"),
            (c.post("/v1/search", json={"image": "x"}), 415, "unsupported_media_type"),
            (c.post("/v1/search", data={"k": "3"}, files={"other": ("a", b"x")}), 422, "validation_error"),
            (c.post("/v1/search", files=files(photo), data={"k": "0"}), 422, "validation_error"),
            (c.post("/v1/search", files=files(photo), data={"k": "many"}), 422, "validation_error"),
            (c.post("/v1/search", files=files(photo), data={"threshold": "nan"}), 422, "validation_error"),
            (c.post("/v1/search", files=files(photo), data={"threshold": "-1"}), 422, "validation_error"),
            (c.get("/v1/identities/nobody"), 404, "not_found"),
            (c.delete("/v1/faces/12345"), 404, "not_found"),
            (c.get("/v1/faces/abc/thumbnail"), 422, "validation_error"),
            (c.get("/v1/identities", params={"limit": "-1"}), 422, "validation_error"),
            (c.post(f"/v1/identities/{'x' * 129}/faces", files=files(photo)), 422, "invalid_identity"),
            (c.post("/v1/identities/tab%09name/faces", files=files(photo)), 422, "invalid_identity"),
            (c.post("/v1/identities/a/faces", files=files(photo), data={"metadata": "[1]"}), 422,
             "validation_error"),
            (c.get("/v1/nothing-here"), 404, "not_found"),
        ]
        for i, (r, status, code) in enumerate(cases):
            assert r.status_code == status and r.json()["code"] == code, (i, r.status_code, r.text)
            assert "Traceback" not in r.text
        blank = io.BytesIO()
        Image.new("RGB", (300, 300), (90, 90, 90)).save(blank, format="JPEG")
        r = c.post("/v1/identities/x/faces", files=files(blank.getvalue()))
        assert r.status_code == 422 and r.json() == {"detail": errors.NO_FACE, "code": "no_face", "file_index": 0}
        r = c.post("/v1/verify", files=[*files(blank.getvalue(), field="image1"), *files(photo, field="image2")])
        assert r.status_code == 422 and r.json()["code"] == "no_face"
        assert c.post("/v1/search", files=files(blank.getvalue())).json()["faces"] == []
        assert c.get("/health/ready").status_code == 200  # still up


def test_auth_on_every_v1_route(data_dir: Path, database_url: str | None) -> None:
    with TestClient(create_app(Settings(data_dir=data_dir, database_url=database_url, api_keys=["k1", "k2"]))) as c:
        for method, path in [("get", "/v1/info"), ("get", "/v1/identities"), ("post", "/v1/search"),
                             ("post", "/v1/verify"), ("post", "/v1/embed"), ("delete", "/v1/faces/1"),
                             ("get", "/v1/faces/1/thumbnail"), ("post", "/v1/identities/a/faces"),
                             ("patch", "/v1/identities/a"), ("delete", "/v1/identities/a"),
                             ("get", "/v1/identities/a/export"), ("get", "/v1/audit")]:
            for headers in ({}, {"X-API-Key": "wrong"}):
                r = getattr(c, method)(path, headers=headers)
                assert r.status_code == 401 and r.json()["code"] == "unauthorized", (method, path)
        assert c.get("/v1/identities", headers={"X-API-Key": "k2"}).status_code == 200
        assert c.get("/health/live").status_code == 200 and c.get("/health/ready").status_code == 200
        assert c.get("/v1/info", headers={"X-API-Key": "k1"}).json()["auth"] is True


def test_orl_faces_enroll_and_match(client: TestClient) -> None:
    for person in range(1, 6):
        r = client.post(f"/v1/identities/orl-{person}/faces", files=files(orl_photo(person, 1), orl_photo(person, 2)))
        assert r.status_code == 201, r.text
    hits = [client.post("/v1/search", files=files(orl_photo(p, 7))).json()["faces"][0]["candidates"][0]["identity"]
            for p in range(1, 6)]
    assert sum(h == f"orl-{p}" for p, h in zip(range(1, 6), hits, strict=True)) >= 4, hits


def test_concurrent_requests_share_encoder_batches(data_dir: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    photos = [lfw_photo(n, 1) for n in PEOPLE]
    with TestClient(create_app(Settings(data_dir=data_dir, batch_wait_ms=60, workers=8))) as c:
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda p: c.post("/v1/embed", files=files(p)).status_code, photos * 2))
        assert statuses == [200] * len(photos) * 2
        metrics = c.get("/metrics").text
    count = float(next(ln.split()[-1] for ln in metrics.splitlines()
                        if ln.startswith("facesearch_embed_batch_size_count")))
    faces = float(next(ln.split()[-1] for ln in metrics.splitlines()
                        if ln.startswith("facesearch_embed_batch_size_sum")))
    # the warm-up batch holds one face; with the requests' faces gathered, batches hold more than one on average
    assert faces > count, metrics


def test_milvus_tier_enroll_search_delete_restart(data_dir: Path, pg_url: str) -> None:
    settings = Settings(data_dir=data_dir, database_url=pg_url, vector_url=str(data_dir.parent / "milvus.db"))
    with TestClient(create_app(settings)) as c:
        for name in PEOPLE[:4]:
            r = c.post(f"/v1/identities/{name}/faces", files=files(lfw_photo(name, 1), lfw_photo(name, 2)),
                       data={"face": "largest"})
            assert r.status_code == 201, r.text
        assert c.get("/v1/info").json()["gallery"]["index_kind"] == "milvus"
        top = c.post("/v1/search", files=files(lfw_photo("Tony_Blair", 3))).json()["faces"][0]
        assert top["identity"] == "Tony_Blair" and top["decision"] == "match"
        assert c.delete("/v1/identities/Tony_Blair").json()["faces_deleted"] == 2
    with TestClient(create_app(settings)) as c:
        gallery = c.get("/v1/info").json()["gallery"]
        assert gallery["indexed"] == gallery["faces"] == 6
        r = c.post("/v1/search", files=files(lfw_photo("Tony_Blair", 3)), data={"k": "10"}).json()
        assert "Tony_Blair" not in {x["identity"] for x in r["faces"][0]["candidates"]}
        assert c.post("/v1/search", files=files(lfw_photo("Colin_Powell", 3))).json()["faces"][0]["identity"] == \
            "Colin_Powell"
