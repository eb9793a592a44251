"""Deletes of many faces (an album, a cluster, a retention sweep) go in batches that release the write lock between
them, and each batch is erased from the snapshots by position: afterwards no file under the gallery's folder holds a
deleted face's vector (float32, nor an HNSW graph's float16 copy), the faces kept are still there and searchable,
and an identity's faces equal to a deleted one's stay (erasure by position, not by bytes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from index import Gallery, NewFace, writes
from index.records import NewPhoto
from tests.erasure import face_bytes, files_holding

DIM = 16


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_an_album_deleted_in_batches_leaves_no_bytes(tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
                                                     ) -> None:
    monkeypatch.setattr(writes, "DELETE_BATCH", 7)
    rng = np.random.default_rng(3)
    vecs = unit(rng, 60)
    g = Gallery(tmp_path, dim=DIM, model_version="m", kind=kind)  # type: ignore[arg-type]
    album = [i for n in range(8) for i in g.photos.add(NewPhoto(f"a{n}", "trip"), [(None, NewFace(v))
                                                                                   for v in vecs[5 * n : 5 * n + 5]],
                                                       cluster_within=0.3)]
    kept = g.photos.add(NewPhoto("home", "home"), [(None, NewFace(v)) for v in vecs[40:50]], cluster_within=0.3)
    twin = g.add_many([("twin", NewFace(vecs[0]))])  # an enrolled face whose vector equals an album face's
    g.snapshot(force=True)  # the faces are in the snapshot files: each batch must overwrite its rows there
    gone = face_bytes(tmp_path / "gallery.db", album, hnsw=kind == "hnsw")

    assert g.photos.delete_album("trip") == (8, 40)
    assert files_holding(tmp_path, {k: v for k, v in gone.items() if not k.startswith(f"{album[0]}/")}) == {}
    lines = [a for a in g.audit_log(limit=1000) if a.event == "delete_album"]
    assert len(lines) == 6 and sorted(f for a in lines for f in a.face_ids) == sorted(album)  # 40 faces in 7s
    assert g.photos.list_photos(album="trip") == ([], 0)
    assert g.photo_index.live == 10 and g.index.live == 1 and g.verify()["ok"]
    hit = g.search(vecs[0][None], k=1)[0].identities[0]
    assert hit.identity == "twin" and hit.face_id == twin[0] and hit.distance < 1e-3
    assert {h.photo for h in g.photos.search(vecs[40:50], 0.01)} == {"home"}
    g.close()
    g = Gallery(tmp_path, dim=DIM, model_version="m", kind=kind)  # type: ignore[arg-type]
    assert g.keeper.loaded_seq > 0 and g.verify()["ok"]  # the overwritten snapshots still load
    assert g.search(vecs[0][None], k=1)[0].identities[0].face_id == twin[0]
    assert sorted(g.embeddings("twin")[0].tolist()) == twin and len(kept) == 10
    g.close()


def test_a_cluster_and_the_retention_sweep_delete_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setattr(writes, "DELETE_BATCH", 4)
    rng = np.random.default_rng(4)
    centre = unit(rng, 1)[0]
    near = centre + 0.02 * rng.standard_normal((10, DIM)).astype(np.float32)
    g = Gallery(tmp_path, dim=DIM, model_version="m")
    ids = [g.photos.add(NewPhoto(f"p{n}"), [(None, NewFace(v))], cluster_within=0.5)[0] for n, v in enumerate(near)]
    clusters, _ = g.photos.list_clusters()
    assert len(clusters) == 1 and clusters[0].faces == 10
    assert g.photos.cluster(clusters[0].id, limit=3, offset=3).face_ids == ids[3:6]  # a page of its faces
    assert g.photos.delete_cluster(clusters[0].id) == 10
    assert g.photos.list_clusters() == ([], 0) and g.photo_index.live == 0
    more = [g.photos.add(NewPhoto(f"q{n}"), [(None, NewFace(v))], cluster_within=None)[0] for n, v in
            enumerate(unit(rng, 9))]
    assert g.photos.expire_unnamed(time.time() + 1) == 9
    assert sorted(f for a in g.audit_log(limit=1000) if a.event == "retention" for f in a.face_ids) == more
    assert g.photo_index.live == 0 and g.verify()["ok"]
    g.close()


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_naming_a_photo_face_adds_it_to_people_once(tmp_path: Path, kind: str) -> None:
    rng = np.random.default_rng(6)
    vecs = unit(rng, 3)
    g = Gallery(tmp_path, dim=DIM, model_version="m", kind=kind)  # type: ignore[arg-type]
    ids = g.photos.add(NewPhoto("p"), [(None, NewFace(v)) for v in vecs], cluster_within=None)
    assert (g.index.live, g.photo_index.live) == (0, 3)
    g.photos.name_face(ids[0], "ann")
    assert (g.index.live, g.photo_index.live) == (1, 3)  # the photos space holds it once still
    assert sorted(g.photo_index.ids().tolist()) == sorted(ids) and g.index.ids().tolist() == [ids[0]]
    assert g.index.holds(np.array([ids[0], ids[1], 10**9])).tolist() == [True, False, False]
    assert g.search(vecs[0][None], k=1)[0].identities[0].identity == "ann"
    g.close()
    g = Gallery(tmp_path, dim=DIM, model_version="m", kind=kind)  # type: ignore[arg-type]
    assert (g.index.live, g.photo_index.live) == (1, 3) and g.verify()["ok"]
    g.close()
