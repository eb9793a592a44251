"""Joining a cluster as a photo is indexed: the search of the whole ``photos`` space runs before the write lock, so
photos indexed side by side must still find each other (the faces added between a photo's search and its write are
compared under the lock)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from index import Gallery, NewFace
from index.records import NewPhoto

DIM = 16


def person(rng: np.random.Generator, centre: np.ndarray, n: int) -> np.ndarray:
    v = centre + 0.05 * rng.normal(size=(n, DIM))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_photos_indexed_side_by_side_join_one_cluster(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    g = Gallery(tmp_path, dim=DIM, model_version="m")
    strangers = rng.normal(size=(500, DIM)).astype(np.float32)
    strangers /= np.linalg.norm(strangers, axis=1, keepdims=True)
    for n, v in enumerate(strangers):  # a space to search, none of them near the person
        g.photos.add(NewPhoto(f"s{n}"), [(None, NewFace(v))], cluster_within=None)
    faces = person(rng, rng.normal(size=DIM), 48)
    start = threading.Barrier(8)

    def index(worker: int) -> None:
        start.wait()
        for n in range(worker, len(faces), 8):
            g.photos.add(NewPhoto(f"p{n}"), [(None, NewFace(faces[n]))], cluster_within=0.5)

    threads = [threading.Thread(target=index, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    clusters = {g.photos.get(f"p{n}")[1][0].cluster for n in range(len(faces))}
    assert len(clusters) == 1, clusters  # as when they are indexed one after another
    g.close()


def test_a_face_added_after_the_search_is_compared_under_the_lock(tmp_path: Path) -> None:
    g = Gallery(tmp_path, dim=DIM, model_version="m")
    v = np.zeros(DIM, np.float32)
    v[0] = 1
    before = g.photos._nearest(v[None])  # the space is empty when this photo's search runs
    (first,) = g.photos.add(NewPhoto("a"), [(None, NewFace(v))], cluster_within=0.5)
    sims, ids = g.photos._with_recent(v[None], *before)
    assert ids[0, 0] == first and sims[0, 0] > 0.999
    g.close()
