"""Photos through real HTTP with real faces, on SQLite and PostgreSQL: index group photos, find a person's photos
from a selfie, clusters of unnamed faces named into identities, erasure of photos, albums and clusters."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from facesearch.settings import Settings
from model.embedder import load_encoder
from tests.conftest import lfw_photo
from tests.erasure import face_bytes, files_holding
from tests.helpers import files, group

# LFW people with several photos; photos 1-4 go into group photos, photo 5 is each person's selfie
A, B, C, D = "Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Gerhard_Schroeder"
STRANGER = "Serena_Williams"



@pytest.fixture
def client(data_dir: Path, database_url: str | None) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(data_dir=data_dir, database_url=database_url))) as c:
        yield c


def wait_for_regrouping(client: TestClient) -> dict:
    deadline = time.monotonic() + 300
    while (job := client.get("/v1/clusters/rebuild").json())["state"] == "running":
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    return job


def index(client: TestClient, photo: bytes, **fields: str) -> dict:
    r = client.post("/v1/photos", files=files(photo), data=fields)
    assert r.status_code == 201, r.text
    return r.json()


def who(client: TestClient) -> dict[int, str]:
    """face id -> person, for the album's people: in each half of a group photo, the face nearest the half's
    centre (LFW's convention: its photos may hold other faces around the one of interest)."""
    out = {}
    for key, people in {"ab1": (A, B), "ac2": (A, C), "bc3": (B, C), "ab4": (A, B), "d5": (D,)}.items():
        faces = client.get(f"/v1/photos/{key}").json()["face_list"]
        out.update((centred(faces, half, len(people))["face_id"], p) for half, p in enumerate(people))
    return out


def centred(faces: list[dict], half: int = 0, halves: int = 1) -> dict:
    """The face nearest the centre of one 250x250 LFW photo: alone, or the left or right half of group()."""
    cx, cy = (125, 125) if halves == 1 else (145 + 270 * half, 145)
    return min(faces, key=lambda f: ((f["box"][0] + f["box"][2]) / 2 - cx) ** 2 + ((f["box"][1] + f["box"][3]) / 2
                                                                                   - cy) ** 2)


@pytest.fixture
def album(client: TestClient) -> TestClient:
    """Four group photos of A, B, C, D in pairs; one photo of D alone in another album."""
    index(client, group(lfw_photo(A, 1), lfw_photo(B, 1)), photo_id="ab1", album="party")
    index(client, group(lfw_photo(A, 2), lfw_photo(C, 1)), photo_id="ac2", album="party")
    index(client, group(lfw_photo(B, 2), lfw_photo(C, 2)), photo_id="bc3", album="party")
    index(client, group(lfw_photo(A, 3), lfw_photo(B, 3)), photo_id="ab4", album="party")
    index(client, lfw_photo(D, 1), photo_id="d5", album="trip")
    return client


def test_every_face_of_a_photo_is_indexed_and_told_who_it_is(client: TestClient) -> None:
    r = client.post(f"/v1/identities/{A}/faces", files=files(lfw_photo(A, 4)), data={"face": "largest"})
    assert r.status_code == 201
    body = index(client, group(lfw_photo(A, 1), lfw_photo(B, 1)), photo_id="p1", album="party",
                 metadata='{"where": "hall"}')
    assert body["photo_id"] == "p1" and body["album"] == "party" and body["faces_found"] >= 2
    faces = body["faces"]
    a_face = centred(faces, 0, 2)
    assert a_face["identity"] == A  # A enrolled (matched under the threshold); B (and a face behind him) nobody's
    assert [f["identity"] for f in faces if f is not a_face] == [None] * (len(faces) - 1)
    assert all(f["face_id"] > 0 and f["cluster_id"] for f in faces)
    assert all(isinstance(f["low_quality"], list) for f in faces)

    got = client.get("/v1/photos/p1").json()
    assert got["metadata"] == {"where": "hall"} and got["faces"] == len(faces)
    assert got["image"]["width"] > 250
    assert {f["identity"] for f in got["face_list"]} == {None}  # found faces stay unnamed until someone names them
    assert all(f["photo_id"] == "p1" for f in got["face_list"])
    assert client.get(f"/v1/faces/{faces[0]['face_id']}/thumbnail").status_code == 200

    # the photo's faces do not count as the identity's, and identity search still finds A
    assert client.get(f"/v1/identities/{A}").json()["faces"] == 1
    s = client.post("/v1/search", files=files(lfw_photo(A, 5))).json()
    assert s["faces"][0]["identity"] == A
    assert s["threshold"]["gallery_faces"] == 1  # identity search is calibrated for the identities' faces

    # a photo without a face is stored with none; the same key again is a conflict
    blank = io.BytesIO()
    Image.new("RGB", (200, 200), (90, 90, 90)).save(blank, format="JPEG")
    assert index(client, blank.getvalue(), photo_id="empty")["faces"] == []
    r = client.post("/v1/photos", files=files(lfw_photo(C, 1)), data={"photo_id": "p1"})
    assert r.status_code == 409 and r.json()["code"] == "conflict"
    generated = index(client, lfw_photo(C, 1))["photo_id"]
    assert len(generated) == 32
    listed = client.get("/v1/photos", params={"album": "party"}).json()
    assert listed["total"] == 1 and listed["items"][0]["photo_id"] == "p1"
    assert client.get("/v1/photos").json()["total"] == 3
    gallery = client.get("/v1/info").json()["gallery"]
    assert gallery["photos"] == 3 and gallery["unnamed_faces"] == len(faces) + 1  # and the generated photo's face


def test_find_my_photos_from_a_selfie_and_from_an_identity(album: TestClient) -> None:
    r = album.post("/v1/photos/search", files=files(lfw_photo(A, 5)))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == "selfie" and body["threshold"]["source"] == "fpir"
    assert body["threshold"]["gallery_faces"] >= 9
    assert [p["photo_id"] for p in body["photos"]] and {p["photo_id"] for p in body["photos"]} <= {"ab1", "ac2",
                                                                                                     "ab4"}
    assert len(body["photos"]) >= 2
    assert all(p["distance"] <= body["threshold"]["distance"] for p in body["photos"] if not p["expanded"])
    assert body["photos"] == sorted(body["photos"], key=lambda p: (p["expanded"], p["distance"]))

    # an album narrows it; a stranger finds nothing
    trip = album.post("/v1/photos/search", files=files(lfw_photo(D, 2)), data={"album": "trip"}).json()
    assert [p["photo_id"] for p in trip["photos"]] == ["d5"]
    assert album.post("/v1/photos/search", files=files(lfw_photo(D, 2)), data={"album": "party"}).json()[
        "photos"] == []
    assert album.post("/v1/photos/search", files=files(lfw_photo(STRANGER, 1))).json()["photos"] == []

    # from an enrolled identity: all its faces
    assert album.post(f"/v1/identities/{C}/faces", files=files(lfw_photo(C, 3))).status_code == 201
    by_id = album.post("/v1/photos/search", data={"identity": C}).json()
    assert by_id["query"] == "identity" and {p["photo_id"] for p in by_id["photos"]} == {"ac2", "bc3"}

    for bad, code in [({"data": {}}, "validation_error"), ({"data": {"identity": "nobody"}}, "not_found"),
                      ({"data": {"identity": C}, "files": files(lfw_photo(A, 5))}, "validation_error")]:
        r = album.post("/v1/photos/search", **bad)
        assert r.status_code in (404, 422) and r.json()["code"] == code, r.text


def test_clusters_group_unnamed_faces_and_naming_makes_them_an_identity(album: TestClient) -> None:
    truth = who(album)
    clusters = album.get("/v1/clusters", params={"min_faces": 2}).json()["items"]
    # faces joined their cluster as each photo arrived: every cluster holds one person only
    assert clusters
    for c in clusters:
        assert len({truth.get(f, f) for f in c["face_ids"]}) == 1, c

    # rebuild from scratch, then name the largest cluster
    assert album.get("/v1/clusters/rebuild").json()["state"] == "idle"
    r = album.post("/v1/clusters/rebuild")
    assert r.status_code == 202 and r.json()["state"] in ("running", "done")
    job = wait_for_regrouping(album)
    assert job["state"] == "done" and job["faces"] >= 9 and job["clusters"] >= 4 and job["finished_at"]
    top = album.get("/v1/clusters").json()["items"][0]
    assert top["faces"] == 3 and top["thumbnail_url"].endswith("/thumbnail")
    person = truth[top["face_ids"][0]]
    assert person in (A, B) and {truth[f] for f in top["face_ids"]} == {person}
    assert set(top["photos"]) == ({"ab1", "ac2", "ab4"} if person == A else {"ab1", "bc3", "ab4"})
    named = album.post(f"/v1/clusters/{top['cluster_id']}/name", json={"identity": "person one"})
    assert named.status_code == 200 and sorted(named.json()["face_ids"]) == sorted(top["face_ids"])
    ident = album.get("/v1/identities/person one").json()
    assert ident["faces"] == 3 and {f["photo_id"] for f in ident["face_list"]["items"]} == set(top["photos"])
    assert album.get(f"/v1/clusters/{top['cluster_id']}").status_code == 404
    # the named faces now answer identity search
    s = album.post("/v1/search", files=files(lfw_photo(person, 5))).json()
    assert s["faces"][0]["identity"] == "person one"
    audit = [a["event"] for a in album.get("/v1/audit").json()["items"]]
    assert "index_photo" in audit and "recluster" in audit and "name_faces" in audit

    # merge two clusters; move a face; a face that has an identity is not renamed
    rest = album.get("/v1/clusters").json()["items"]
    a, b = rest[0]["cluster_id"], rest[1]["cluster_id"]
    merged = album.post(f"/v1/clusters/{a}/merge", json={"cluster_id": b})
    assert merged.status_code == 200 and merged.json()["faces"] == rest[0]["faces"] + rest[1]["faces"]
    assert album.get(f"/v1/clusters/{b}").status_code == 404
    moved = rest[2]["face_ids"][0]
    assert album.post(f"/v1/faces/{moved}/cluster", json={"cluster_id": a}).json()["faces"] == \
        merged.json()["faces"] + 1
    r = album.post(f"/v1/faces/{top['face_ids'][0]}/name", json={"identity": "someone else"})
    assert r.status_code == 409

    # two names for one person: merge the identities
    other = album.get("/v1/clusters").json()["items"][0]
    assert album.post(f"/v1/clusters/{other['cluster_id']}/name", json={"identity": "person two"}).status_code == 200
    r = album.post("/v1/identities/person one/merge", json={"identity": "person two"})
    assert r.status_code == 200 and r.json()["faces"] == 3 + other["faces"]
    assert album.get("/v1/identities/person two").status_code == 404
    assert album.post("/v1/identities/person one/merge", json={"identity": "person one"}).status_code == 409
    assert album.post("/v1/identities/person one/merge", json={"identity": "nobody"}).status_code == 404
    for url, body in [(f"/v1/clusters/{a}/merge", {"cluster_id": a}), ("/v1/clusters/99999/name", {"identity": "x"}),
                      (f"/v1/clusters/{a}/name", {"identity": "a/b"}), (f"/v1/clusters/{a}/name", {"nope": 1})]:
        r = album.post(url, json=body)
        assert r.status_code in (404, 422) and isinstance(r.json()["detail"], str | list), r.text


def test_deleting_photos_albums_and_clusters_erases_their_faces(album: TestClient, data_dir: Path,
                                                                database_url: str | None) -> None:
    db: Path | str = database_url or data_dir / "gallery.db"
    photo = album.get("/v1/photos/ab1").json()
    trip = album.get("/v1/photos/d5").json()
    doomed = [f["face_id"] for f in photo["face_list"] + trip["face_list"]]
    stored = face_bytes(db, doomed)
    kept = face_bytes(db, [f["face_id"] for f in album.get("/v1/photos/bc3").json()["face_list"]])

    r = album.delete("/v1/photos/ab1")
    assert r.status_code == 200 and r.json()["faces_deleted"] == len(photo["face_list"])
    assert album.get("/v1/photos/ab1").status_code == 404
    assert album.delete("/v1/photos/ab1").status_code == 404
    r = album.delete("/v1/albums/trip")
    assert r.json()["photos_deleted"] == 1 and album.get("/v1/photos/d5").status_code == 404
    assert album.delete("/v1/albums/trip").status_code == 404
    # the deleted faces are nowhere in the data folder (on PostgreSQL: not in the replica's files); kept ones are
    assert files_holding(data_dir, stored) == {}
    if database_url is None:
        assert set(files_holding(data_dir, kept)) == set(kept)
    assert not any(p["photo_id"] == "ab1" for p in album.post("/v1/photos/search",
                                                                files=files(lfw_photo(B, 5))).json()["photos"])

    # a cluster's faces can be erased too; its photos stay without them
    cluster = album.get("/v1/clusters").json()["items"][0]
    r = album.delete(f"/v1/clusters/{cluster['cluster_id']}")
    assert r.status_code == 200 and r.json()["faces_deleted"] == cluster["faces"]
    for f in cluster["face_ids"]:
        assert album.get(f"/v1/faces/{f}/thumbnail").status_code == 404
    events = [a["event"] for a in album.get("/v1/audit", params={"limit": 1000}).json()["items"]]
    assert {"delete_photo", "delete_album", "delete_cluster"} <= set(events)


def test_bad_photo_requests_get_clear_errors(client: TestClient) -> None:
    for data, code in [({"photo_id": "a/b"}, "invalid_photo_id"), ({"photo_id": " \t"}, "invalid_photo_id"),
                       ({"photo_id": "x" * 200}, "invalid_photo_id"), ({"metadata": "[1]"}, "validation_error"),
                       ({"album": "a\x00b"}, "validation_error")]:
        r = client.post("/v1/photos", files=files(lfw_photo(A, 1)), data=data)
        assert r.status_code == 422 and r.json()["code"] == code, (data, r.text)
    r = client.post("/v1/photos", files=files(lfw_photo(A, 1)), data={"photo_id": "search"})
    assert r.status_code == 422 and "reserved" in r.json()["detail"]  # /v1/photos/search is find-my-photos
    r = client.get("/v1/photos/search")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = client.post("/v1/photos", files=files(b"not an image"))
    assert r.status_code == 400 and r.json()["code"] == "invalid_image"
    assert client.get("/v1/photos/missing").status_code == 404
    assert client.get("/v1/photos", params={"limit": 0}).status_code == 422
    assert client.get("/v1/clusters/0").status_code == 422
    assert client.get("/v1/clusters").json() == {"items": [], "total": 0}


def test_a_cluster_can_be_exported_for_subject_access(album: TestClient) -> None:
    import zipfile

    cluster = album.get("/v1/clusters").json()["items"][0]
    r = album.get(f"/v1/clusters/{cluster['cluster_id']}/export")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    z = zipfile.ZipFile(io.BytesIO(r.content))
    summary = json.loads(z.read("cluster.json"))
    assert summary["cluster_id"] == cluster["cluster_id"] and set(summary["photos"]) == set(cluster["photos"])
    assert sorted(f["face_id"] for f in summary["faces"]) == sorted(cluster["face_ids"])
    for f in cluster["face_ids"]:
        face = json.loads(z.read(f"faces/{f}/face.json"))
        assert len(face["embedding"]) == 512 and z.read(f"faces/{f}/chip.jpg")[:2] == b"\xff\xd8"
        assert z.read(f"faces/{f}/source.webp")[:4] == b"RIFF"
    export = [a for a in album.get("/v1/audit", params={"limit": 1000}).json()["items"] if a["event"] == "export"]
    assert export and export[-1]["detail"] == {"cluster": cluster["cluster_id"]}
    assert album.get("/v1/clusters/424242/export").status_code == 404


def test_unnamed_faces_are_erased_after_the_retention_period(data_dir: Path) -> None:
    """FACESEARCH_UNASSIGNED_RETENTION_DAYS: a restart past the period (the check also runs every minute) erases
    the photos' faces nobody named, leaves named faces and enrolled identities, and audits it."""
    with TestClient(create_app(Settings(data_dir=data_dir))) as c:
        assert c.post(f"/v1/identities/{A}/faces", files=files(lfw_photo(A, 4))).status_code == 201
        photo = index(c, group(lfw_photo(B, 1), lfw_photo(C, 1)), photo_id="old")
        unnamed = [f["face_id"] for f in photo["faces"]]
        named = unnamed.pop(0)
        assert c.post(f"/v1/faces/{named}/name", json={"identity": "kept"}).status_code == 200
    stored = face_bytes(data_dir / "gallery.db", unnamed)
    time.sleep(1.0)
    with TestClient(create_app(Settings(data_dir=data_dir, unassigned_retention_days=0.5 / 86400))) as c:
        # the sweep runs in the background once the service is ready
        deadline = time.monotonic() + 60
        while len(c.get("/v1/photos/old").json()["face_list"]) > 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        got = c.get("/v1/photos/old").json()
        assert [f["face_id"] for f in got["face_list"]] == [named]  # the photo keeps its named face
        assert c.get(f"/v1/identities/{A}").json()["faces"] == 1
        assert c.get("/v1/clusters").json()["total"] == 0
        lines = [a for a in c.get("/v1/audit", params={"limit": 1000}).json()["items"] if a["event"] == "retention"]
        assert len(lines) == 1 and sorted(lines[0]["face_ids"]) == sorted(unnamed) and lines[0]["actor"] == "retention"
    assert files_holding(data_dir, stored) == {}
    with TestClient(create_app(Settings(data_dir=data_dir))) as c:  # off by default: nothing more goes
        index(c, lfw_photo(D, 1), photo_id="new")
    with TestClient(create_app(Settings(data_dir=data_dir))) as c:
        assert c.get("/v1/photos/new").json()["faces"] >= 1


def test_the_cluster_command_regroups_an_album(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from facesearch.commands.gallery import main

    with TestClient(create_app(Settings(data_dir=data_dir))) as c:
        index(c, group(lfw_photo(A, 1), lfw_photo(B, 1)), photo_id="ab1", album="party")
        index(c, group(lfw_photo(A, 2), lfw_photo(C, 1)), photo_id="ac2", album="party")
        index(c, lfw_photo(A, 3), photo_id="a3", album="other")
        c.post("/v1/clusters/99/merge", json={"cluster_id": 98})  # nothing to merge: 404, nothing changes
    assert main(["cluster", "--data-dir", str(data_dir), "--album", "party"]) == 0
    out = json.loads(capsys.readouterr().out)
    verification = load_encoder()[1]["thresholds"]["verification"]
    assert out["faces"] >= 4 and 3 <= out["clusters"] <= out["faces"] and 0.3 < out["threshold"] < verification
    with TestClient(create_app(Settings(data_dir=data_dir))) as c:
        truth = {centred(c.get(f"/v1/photos/{k}").json()["face_list"], 0, 2)["face_id"] for k in ("ab1", "ac2")}
        a_cluster = [cl for cl in c.get("/v1/clusters").json()["items"] if truth & set(cl["face_ids"])]
        assert len(a_cluster) == 1 and truth <= set(a_cluster[0]["face_ids"])  # A's two party faces: one cluster
    assert main(["cluster", "--data-dir", str(data_dir / "none")]) == 2
