"""Hostile input corpus: every kind gets its documented 4xx (or a clean 2xx) with a JSON body; the service
stays up and its memory stays bounded."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from facesearch.settings import Settings
from tests.conftest import lfw_photo, rss_kb
from tests.images import encode as enc
from tests.images import gif_animated, png_claiming, zip_bytes


def huge_exif_jpeg(face: bytes) -> bytes:
    img = Image.open(io.BytesIO(face))
    exif = Image.Exif()
    exif[0x010E] = "x" * 60_000  # ImageDescription
    exif[0x0112] = 1
    return enc(img, "JPEG", exif=exif.tobytes())


def one(data: bytes, name: str = "x.jpg", ctype: str = "image/jpeg", field: str = "image") -> dict[str, Any]:
    return {"files": {field: (name, data, ctype)}}




def test_hostile_corpus(tmp_path: Path, database_url: str | None) -> None:
    face = lfw_photo("Colin_Powell", 1)
    rgb = Image.open(io.BytesIO(face)).convert("RGB")
    rng = np.random.default_rng(0)
    noise_png = enc(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), "PNG")
    ok = {200, 201}
    corpus: list[tuple[str, Callable[[TestClient], Any], set[int], str | None]] = [
        ("empty file", lambda c: c.post("/v1/search", **one(b"")), {400}, "invalid_image"),
        ("plain text", lambda c: c.post("/v1/search", **one(b"hello world", "a.txt", "text/plain")), {400},
         "invalid_image"),
        ("html", lambda c: c.post("/v1/search", **one(b"<html><body>hi</body></html>", "a.html", "text/html")), {400},
         "invalid_image"),
        ("svg", lambda c: c.post("/v1/search", **one(b"<svg xmlns='http://www.w3.org/2000/svg'/>")), {400},
         "invalid_image"),
        ("truncated jpeg", lambda c: c.post("/v1/search", **one(face[: len(face) // 2])), {400}, "invalid_image"),
        ("jpeg header only", lambda c: c.post("/v1/search", **one(face[:20])), {400}, "invalid_image"),
        ("truncated png", lambda c: c.post("/v1/search", **one(noise_png[:200])), {400}, "invalid_image"),
        ("png claiming 50000x50000", lambda c: c.post("/v1/search", **one(png_claiming(50_000, 50_000))), {413},
         "too_large"),
        ("png claiming 0 pixels wide", lambda c: c.post("/v1/search", **one(png_claiming(0, 10))), {400},
         "invalid_image"),
        ("huge exif", lambda c: c.post("/v1/search", **one(huge_exif_jpeg(face))), ok, None),
        ("cmyk jpeg", lambda c: c.post("/v1/search", **one(enc(rgb.convert("CMYK"), "JPEG"))), ok, None),
        ("16-bit png", lambda c: c.post("/v1/search", **one(enc(rgb.convert("L").convert("I;16"), "PNG"))), ok, None),
        ("rgba png", lambda c: c.post("/v1/search", **one(enc(rgb.convert("RGBA"), "PNG"))), ok, None),
        ("animated gif", lambda c: c.post("/v1/search", **one(gif_animated())), ok, None),
        ("1x1 image", lambda c: c.post("/v1/search", **one(enc(Image.new("RGB", (1, 1)), "PNG"))), ok, None),
        ("8000x8 strip", lambda c: c.post("/v1/search", **one(enc(Image.new("RGB", (8000, 8)), "PNG"))), ok, None),
        ("bogus bmp", lambda c: c.post("/v1/search", **one(b"BM" + b"\xff" * 60)), {400}, "invalid_image"),
        ("bogus tiff", lambda c: c.post("/v1/search", **one(b"II*\x00" + b"\x00" * 60)), {400}, "invalid_image"),
        ("truncated webp", lambda c: c.post("/v1/search", **one(enc(rgb, "WEBP")[:100])), {400}, "invalid_image"),
        ("ico (not accepted)", lambda c: c.post("/v1/search", **one(enc(rgb.resize((32, 32)), "ICO"))), {415},
         "unsupported_media_type"),
        ("zip", lambda c: c.post("/v1/search", **one(zip_bytes(), "a.zip", "application/zip")), {415},
         "unsupported_media_type"),
        ("pdf", lambda c: c.post("/v1/search", **one(b"%PDF-1.4\n%...")), {415}, "unsupported_media_type"),
        ("raw body, wrong content type", lambda c: c.post("/v1/search", content=face,
                                                           headers={"content-type": "image/jpeg"}), {415},
         "unsupported_media_type"),
        ("json body", lambda c: c.post("/v1/search", json={"image": "aGVsbG8="}), {415}, "unsupported_media_type"),
        ("missing image field", lambda c: c.post("/v1/search", data={"k": "3"}, files={"x": ("a", b"1")}), {422},
         "validation_error"),
        ("repeated image fields", lambda c: c.post("/v1/search", files=[("image", ("a.jpg", face, "image/jpeg")),
                                                                        ("image", ("b.jpg", b"junk", "image/jpeg"))]),
         {200, 400, 422}, None),
        ("k negative", lambda c: c.post("/v1/search", **one(face), data={"k": "-3"}), {422}, "validation_error"),
        ("k zero", lambda c: c.post("/v1/search", **one(face), data={"k": "0"}), {422}, "validation_error"),
        ("k huge", lambda c: c.post("/v1/search", **one(face), data={"k": str(10**12)}), {422}, "validation_error"),
        ("k not a number", lambda c: c.post("/v1/search", **one(face), data={"k": "ten"}), {422}, "validation_error"),
        ("threshold nan", lambda c: c.post("/v1/search", **one(face), data={"threshold": "NaN"}), {422},
         "validation_error"),
        ("threshold inf", lambda c: c.post("/v1/search", **one(face), data={"threshold": "inf"}), {422},
         "validation_error"),
        ("threshold negative", lambda c: c.post("/v1/search", **one(face), data={"threshold": "-0.5"}), {422},
         "validation_error"),
        ("threshold huge", lambda c: c.post("/v1/search", **one(face), data={"threshold": "1e308"}), {422},
         "validation_error"),
        ("max_faces zero", lambda c: c.post("/v1/search", **one(face), data={"max_faces": "0"}), {422},
         "validation_error"),
        ("unicode identity", lambda c: c.post("/v1/identities/Zoë 李小龍/faces", **one(face), data={"face": "largest"}),
         {201}, None),
        ("overlong identity", lambda c: c.post(f"/v1/identities/{'é' * 129}/faces", **one(face)), {422},
         "invalid_identity"),
        ("identity with slash", lambda c: c.post("/v1/identities/a%2Fb/faces", **one(face)), {404, 405, 422}, None),
        ("identity ..", lambda c: c.get("/v1/identities/.."), {404, 405, 422}, None),
        ("identity with NUL", lambda c: c.post("/v1/identities/a%00b/faces", **one(face)), {422}, "invalid_identity"),
        ("identity with control char", lambda c: c.post("/v1/identities/a%07b/faces", **one(face)), {422},
         "invalid_identity"),
        ("identity with newline", lambda c: c.post("/v1/identities/a%0Ab/faces", **one(face)), {422},
         "invalid_identity"),
        ("face=bogus", lambda c: c.post("/v1/identities/x/faces", **one(face), data={"face": "all"}), {422},
         "validation_error"),
        ("metadata not json", lambda c: c.post("/v1/identities/x/faces", **one(face), data={"metadata": "{oops"}),
         {422}, "validation_error"),
        ("metadata too big", lambda c: c.post("/v1/identities/x/faces", **one(face),
                                              data={"metadata": '{"a": "' + "x" * 20_000 + '"}'}), {422},
         "validation_error"),
        ("metadata nested 5,000 deep", lambda c: c.post("/v1/identities/x/faces", **one(face),
                                                        data={"metadata": '{"a": ' + "[" * 5000 + "]" * 5000 + "}"}),
         {422}, "validation_error"),
        ("metadata nested 40 deep", lambda c: c.post("/v1/identities/x/faces", **one(face),
                                                     data={"metadata": '{"a": ' + "[" * 40 + "]" * 40 + "}"}),
         {422}, "validation_error"),
        ("photo metadata nested 2,000 deep", lambda c: c.post("/v1/photos", **one(face), data={
            "metadata": '{"a": ' + '{"b": ' * 2000 + "1" + "}" * 2000 + "}"}), {422}, "validation_error"),
        ("photo search misspelt field", lambda c: c.post("/v1/photos/search", **one(face), data={"albm": "x"}),
         {422}, "validation_error"),
        ("photo search misspelt field, urlencoded", lambda c: c.post("/v1/photos/search",
                                                                     data={"identty": "x"}), {422}, "validation_error"),
        ("thumbnail of missing face", lambda c: c.get("/v1/faces/999999/thumbnail"), {404}, "not_found"),
        ("face id negative", lambda c: c.delete("/v1/faces/-1"), {422}, "validation_error"),
        ("face id 2^70", lambda c: c.delete(f"/v1/faces/{2**70}"), {422}, "validation_error"),
        ("face id not a number", lambda c: c.delete("/v1/faces/abc"), {422}, "validation_error"),
        ("limit huge", lambda c: c.get("/v1/identities", params={"limit": 10**9}), {422}, "validation_error"),
        ("offset negative", lambda c: c.get("/v1/identities", params={"offset": -5}), {422}, "validation_error"),
        ("patch invalid json", lambda c: c.patch("/v1/identities/x", content=b"{nope",
                                                 headers={"content-type": "application/json"}), {422},
         "validation_error"),
        ("patch unknown field", lambda c: c.patch("/v1/identities/x", json={"nickname": "y"}), {422},
         "validation_error"),
        ("patch metadata not object", lambda c: c.patch("/v1/identities/x", json={"metadata": [1, 2]}), {422},
         "validation_error"),
        ("patch rename to slash", lambda c: c.patch("/v1/identities/x", json={"identity": "a/b"}), {422},
         "invalid_identity"),
        ("patch missing identity", lambda c: c.patch("/v1/identities/ghost", json={"metadata": {}}), {404},
         "not_found"),
        ("verify one image", lambda c: c.post("/v1/verify", **one(face, field="image1")), {422}, "validation_error"),
        ("verify identity without image", lambda c: c.post("/v1/verify", data={"identity": "x"},
                                                           files={"other": ("a", b"1")}), {422}, "validation_error"),
        ("verify unknown identity", lambda c: c.post("/v1/verify", **one(face), data={"identity": "ghost"}), {404},
         "not_found"),
        ("embed no face", lambda c: c.post("/v1/embed", **one(enc(Image.new("RGB", (100, 100)), "PNG"))), ok, None),
        ("method not allowed", lambda c: c.put("/v1/search"), {405}, "method_not_allowed"),
        ("unknown route", lambda c: c.get("/v1/../../etc/passwd"), {404}, "not_found"),
    ]
    assert len(corpus) >= 40
    # photos of a face in unusual encodings: a 200 is not enough, the face must be found in them
    with_face = {"huge exif", "cmyk jpeg", "16-bit png", "rgba png"}
    app = create_app(Settings(data_dir=tmp_path / "data", max_upload_mb=2, database_url=database_url))

    def check(c: TestClient) -> None:
        for name, call, statuses, code in corpus:
            r = call(c)
            assert r.status_code in statuses, (name, r.status_code, r.text[:300])
            assert r.status_code < 500, name
            body = r.json()
            if r.status_code >= 400:
                assert "detail" in body and "code" in body, (name, body)
                assert "Traceback" not in r.text
                if code:
                    assert body["code"] == code, (name, body)
            if name in with_face:
                assert len(body["faces"]) >= 1 and body["faces"][0]["detection_score"] > 0.9, (name, body)

    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.post("/v1/identities/x/faces", **one(face), data={"face": "largest"}).status_code == 201
        for _ in range(3):  # warm up allocators before measuring memory
            for _name, call, _, _ in corpus[:20]:
                call(c)
        check(c)  # pass 1 of 4
        before = rss_kb()
        for _ in range(3):  # passes 2-4, each checked like the first
            check(c)
        growth_mb = (rss_kb() - before) / 1024
        assert growth_mb < 150, f"resident memory grew by {growth_mb:.0f} MB over the corpus"
        assert c.get("/health/ready").status_code == 200

        # concurrent deletes of the same identity: exactly one succeeds
        assert c.post("/v1/identities/twice/faces", **one(face), data={"face": "largest"}).status_code == 201
        results: list[int] = []
        threads = [threading.Thread(target=lambda: results.append(c.delete("/v1/identities/twice").status_code))
                   for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [200] + [404] * 7


def test_upload_over_the_limit_is_refused(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(data_dir=tmp_path / "d", max_upload_mb=0.01))) as c:
        big = b"\xff\xd8" + b"\0" * 20_000
        r = c.post("/v1/search", **one(big))
        assert r.status_code == 413 and r.json()["code"] == "too_large"
