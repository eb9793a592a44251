"""Gallery on real SQLite and FAISS files: search against brute force, identity aggregation, paging,
deletes, renames, export/import, snapshots, concurrency."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from index import Conflict, Gallery, GalleryMismatch, InvalidKey, InvalidVector, NewFace, NotFound, transfer

DIM = 16


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def fill(g: Gallery, vecs: np.ndarray, people: int) -> list[int]:
    return g.add_many([(f"person-{i % people:03d}", NewFace(v, sha256=f"h{i}")) for i, v in enumerate(vecs)])


@pytest.fixture
def gallery(tmp_path: Path, database_url: str | None):
    g = Gallery(tmp_path, dim=DIM, model_version="m1", database_url=database_url)
    yield g
    g.close()


def test_exact_search_equals_brute_force(gallery: Gallery) -> None:
    rng = np.random.default_rng(0)
    vecs = unit(rng, 500)
    ids = np.array(fill(gallery, vecs, people=100))
    queries = unit(rng, 20)
    results = gallery.search(queries, k=5, k_faces=10)
    sims = queries @ vecs.T
    for q, res in enumerate(results):
        order = np.argsort(-sims[q])[:10]
        assert [h.face_id for h in res.faces] == ids[order].tolist()
        np.testing.assert_allclose([h.similarity for h in res.faces], sims[q][order], atol=1e-5)
        np.testing.assert_allclose([h.distance for h in res.faces],
                                   np.sqrt(np.maximum(0, 2 - 2 * sims[q][order])), atol=1e-4)
        # identities: scored by their best face, each once, best first
        best: dict[str, float] = {}
        for i in np.argsort(-sims[q]):
            best.setdefault(f"person-{i % 100:03d}", float(sims[q][i]))
        expected = sorted(best.items(), key=lambda kv: -kv[1])[:5]
        assert [h.identity for h in res.identities] == [k for k, _ in expected]
        assert len({h.identity for h in res.identities}) == len(res.identities)


def test_identity_hit_lists_matched_faces_and_threshold(gallery: Gallery) -> None:
    rng = np.random.default_rng(1)
    base = unit(rng, 1)[0]
    near = base + 0.05 * unit(rng, 3)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    gallery.add_faces("alice", [NewFace(v) for v in near])
    gallery.add_faces("bob", [NewFace(v) for v in unit(rng, 3)])
    hit = gallery.search(base, k=2, threshold=0.3)[0].identities[0]
    assert hit.identity == "alice" and hit.match is True
    assert sorted(hit.matched_faces) == [1, 2, 3]
    other = gallery.search(base, k=2, threshold=0.3)[0].identities[1]
    assert other.identity == "bob" and other.match is False


def test_empty_gallery_returns_empty_results(gallery: Gallery) -> None:
    res = gallery.search(unit(np.random.default_rng(2), 3), k=5)
    assert [r.faces for r in res] == [[], [], []]


def test_refuses_bad_vectors_and_keys(gallery: Gallery) -> None:
    with pytest.raises(InvalidVector):
        gallery.add_faces("a", [NewFace(np.ones(DIM + 1, np.float32))])
    bad = np.ones(DIM, np.float32)
    bad[3] = np.nan
    with pytest.raises(InvalidVector):
        gallery.add_faces("a", [NewFace(bad)])
    with pytest.raises(InvalidVector):
        gallery.search(np.full(DIM, np.inf, np.float32))
    for key in ["", "x" * 129, "tab\there", "nul\x00"]:
        with pytest.raises(InvalidKey):
            gallery.add_faces(key, [NewFace(np.ones(DIM, np.float32))])
    assert gallery.count() == (0, 0)
    gallery.add_faces("Zoë 李 x" * 10, [NewFace(np.ones(DIM, np.float32))])  # 80 printable chars, any script


def test_paging_prefix_rename_metadata_and_deletes(gallery: Gallery) -> None:
    rng = np.random.default_rng(3)
    fill(gallery, unit(rng, 60), people=30)
    page, total = gallery.list_identities(limit=10, offset=25)
    assert total == 30 and [r.key for r in page] == [f"person-{i:03d}" for i in range(25, 30)]
    page, total = gallery.list_identities(prefix="person-01")
    assert total == 10
    faces, total = gallery.list_faces("person-001", limit=1)
    assert total == 2 and len(faces) == 1
    r = gallery.update_identity("person-001", new_key="renamed", metadata={"team": "blue"})
    assert r.key == "renamed" and r.metadata == {"team": "blue"} and r.faces == 2
    with pytest.raises(Conflict):
        gallery.update_identity("renamed", new_key="person-002")
    with pytest.raises(NotFound):
        gallery.get_identity("person-001")
    hit = gallery.search(gallery.embeddings("renamed")[1][0], k=1)[0].identities[0]
    assert hit.identity == "renamed"
    face_id = int(gallery.embeddings("renamed")[0][0])
    assert gallery.delete_face(face_id) == "renamed"
    with pytest.raises(NotFound):
        gallery.delete_face(face_id)
    assert gallery.delete_identity("renamed") == 1
    assert gallery.count() == (29, 58)
    assert gallery.verify()["ok"]
    for res in gallery.search(unit(rng, 5), k=30, k_faces=60):
        assert "renamed" not in {h.identity for h in res.identities}


def test_export_import_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    a = Gallery(tmp_path / "a", dim=DIM, model_version="m1")
    fill(a, unit(rng, 40), people=8)
    a.update_identity("person-003", metadata={"note": "x"})
    transfer.export(a, tmp_path / "export.db")
    b = Gallery(tmp_path / "b", dim=DIM, model_version="m1")
    assert transfer.import_(b, tmp_path / "export.db") == (8, 40)
    assert transfer.import_(b, tmp_path / "export.db") == (0, 0)  # idempotent: same identity + image hash skipped
    assert b.count() == (8, 40)
    assert b.get_identity("person-003").metadata == {"note": "x"}
    q = unit(rng, 5)
    assert [[h.identity for h in r.identities] for r in a.search(q, k=3)] == \
        [[h.identity for h in r.identities] for r in b.search(q, k=3)]
    c = Gallery(tmp_path / "c", dim=DIM, model_version="other")
    with pytest.raises(GalleryMismatch):
        transfer.import_(c, tmp_path / "export.db")
    for g in (a, b, c):
        g.close()


def test_refuses_store_of_another_model(tmp_path: Path) -> None:
    Gallery(tmp_path, dim=DIM, model_version="m1").close()
    with pytest.raises(GalleryMismatch, match="Re-embed"):
        Gallery(tmp_path, dim=DIM, model_version="m2")
    with pytest.raises(GalleryMismatch):
        Gallery(tmp_path, dim=DIM * 2, model_version="m1")


@pytest.mark.parametrize("kept", ["source", "chip"])
def test_reembed_from_stored_crops_with_the_real_encoder(tmp_path: Path, pipeline, lfw: Path, kept: str) -> None:
    """Faces enrolled under another model version are re-embedded by the real encoder from what was kept:
    the source crop (its chip cut again from it), or, for galleries enrolled before source crops, the chip
    itself. The vectors come back as the encoder makes them from the photos, and new photos find them."""
    from model.pipeline import embed_stored

    people = ["Colin_Powell", "George_W_Bush", "Tony_Blair", "Hugo_Chavez"]
    faces = {}
    for name in people:
        a = pipeline.analyze((lfw / name / f"{name}_0001.jpg").read_bytes(), max_faces=1, sources=True)
        faces[name] = a.faces[0]
    g = Gallery(tmp_path, dim=pipeline.dim, model_version="m1")
    for name, f in faces.items():
        crops = ({"source": f.source_image(), "source_geometry": f.source_geometry} if kept == "source"
                 else {"thumbnail": f.thumbnail_jpeg()})
        g.add_faces(name, [NewFace(np.zeros(pipeline.dim, np.float32) + 1 / np.sqrt(pipeline.dim),
                                   **crops)])  # m1's vectors: all alike
    g.close()
    g = Gallery(tmp_path, dim=pipeline.dim, model_version="m2", allow_mismatch=True)
    assert g.needs_reembed
    report = g.reembed(lambda crops: embed_stored(pipeline.embedder, crops))
    assert report.switched and report.reembedded == len(people) and not report.unrecoverable
    assert g.generations()[-1]["model_version"] == "m2"
    g.close()
    g = Gallery(tmp_path, dim=pipeline.dim, model_version="m2")
    for name, f in faces.items():
        again = g.search(f.embedding, k=1)[0].identities[0]
        assert again.identity == name and again.distance < 0.15, (name, again.distance)
        probe = pipeline.analyze((lfw / name / f"{name}_0002.jpg").read_bytes(), max_faces=1).faces[0]
        assert g.search(probe.embedding, k=1)[0].identities[0].identity == name, name
    g.close()


def test_snapshots_are_spaced_by_their_cost_but_close_always_saves(tmp_path: Path) -> None:
    def snapshot_seq() -> int:
        return int(json.loads((tmp_path / "index" / "g0" / "people" / "meta.json").read_text())["seq"])

    rng = np.random.default_rng(6)
    g = Gallery(tmp_path, dim=DIM, model_version="m1")
    fill(g, unit(rng, 20), people=4)
    assert g.snapshot() and snapshot_seq() == 20
    g.keeper._snapshot_took = 3600.0  # as if the last snapshot had held writes off for an hour
    fill(g, unit(rng, 5), people=1)
    assert not g.snapshot() and snapshot_seq() == 20  # not for another 20 hours
    assert g.snapshot(force=True) and snapshot_seq() == 25
    g.keeper._snapshot_took = 3600.0
    fill(g, unit(rng, 5), people=1)
    g.close()  # the last chance to shorten the next start: taken whatever the spacing
    assert snapshot_seq() == 30
    g = Gallery(tmp_path, dim=DIM, model_version="m1")
    assert g.keeper.loaded_seq == 30 and g.index.live == 30
    g.close()


def test_snapshot_replay_and_corruption(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    g = Gallery(tmp_path, dim=DIM, model_version="m1")
    fill(g, unit(rng, 100), people=10)
    g.snapshot()
    meta = json.loads((tmp_path / "index" / "g0" / "people" / "meta.json").read_text())
    assert meta["seq"] == 100 and meta["ntotal"] == 100
    # changes after the snapshot are replayed on open (no close: simulates a crash)
    fill(g, unit(rng, 10), people=2)
    g.delete_identity("person-005")
    g.store.close()
    g = Gallery(tmp_path, dim=DIM, model_version="m1")
    assert g.keeper.loaded_seq == 100 and g.verify()["ok"] and g.index.live == 100
    g.close()
    # a corrupt snapshot is detected and rebuilt from the store
    blob = bytearray((tmp_path / "index" / "g0" / "people" / "vectors.faiss").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (tmp_path / "index" / "g0" / "people" / "vectors.faiss").write_bytes(bytes(blob))
    g = Gallery(tmp_path, dim=DIM, model_version="m1")
    assert g.keeper.loaded_seq == -1 and g.verify()["ok"] and g.index.live == 100
    g.close()
    # truncated
    (tmp_path / "index" / "g0" / "people" / "vectors.faiss").write_bytes(bytes(blob[:100]))
    g = Gallery(tmp_path, dim=DIM, model_version="m1")
    assert g.keeper.loaded_seq == -1 and g.verify()["ok"]
    g.close()


def test_hnsw_snapshot_of_the_float32_layout_is_rebuilt(tmp_path: Path) -> None:
    """Snapshots written before the graph walked float16 copies carry no layout in their meta: an HNSW gallery
    rebuilds from the store rather than load a graph of the old shape; an exact snapshot of then still loads."""
    rng = np.random.default_rng(6)
    vecs = unit(rng, 200)
    for kind, reloaded in (("hnsw", -1), ("exact", 200)):
        g = Gallery(tmp_path / kind, dim=DIM, model_version="m1", kind=kind)
        fill(g, vecs, people=20)
        g.close()
        meta_path = tmp_path / kind / "index" / "g0" / "people" / "meta.json"
        meta = json.loads(meta_path.read_text())
        assert meta["layout"] == ("refine-flat/hnsw-fp16" if kind == "hnsw" else "flat")
        del meta["layout"]  # as the previous version wrote it
        meta_path.write_text(json.dumps(meta))
        g = Gallery(tmp_path / kind, dim=DIM, model_version="m1", kind=kind)
        assert g.keeper.loaded_seq == reloaded and g.verify()["ok"] and g.index.live == 200
        assert [r.identities[0].identity for r in g.search(vecs[:5], k=1)] == [f"person-{i:03d}" for i in range(5)]
        g.close()


def test_photos_space_has_its_own_graph_and_a_snapshot_of_the_other_is_rebuilt(tmp_path: Path) -> None:
    """The photos space's HNSW graph is built with its own parameters (a cheaper insertion than the people space's),
    and its snapshots say so: one written with the people space's graph (as galleries had before) is rebuilt from the
    store with the photos graph, not loaded."""
    from index.records import NewPhoto
    from index.spaces import SPACES, Space
    from index.vectors import GRAPHS

    def graph_of(g: Gallery, space: Space) -> Any:
        index: Any = g.keeper.indexes[space]  # type: ignore[attr-defined]
        return index._graph().hnsw

    assert GRAPHS["photos"] != GRAPHS["people"]
    vecs = unit(np.random.default_rng(8), 200)
    g = Gallery(tmp_path, dim=DIM, model_version="m1", kind="hnsw")
    g.photos.add(NewPhoto("p1", "a"), [(None, NewFace(v)) for v in vecs], cluster_within=None)
    g.add_faces("someone", [NewFace(vecs[0])])
    g.close()
    g = Gallery(tmp_path, dim=DIM, model_version="m1", kind="hnsw")
    assert g.keeper.loaded_seq != -1  # loaded, as it was written
    for space in SPACES:
        meta = json.loads((tmp_path / "index" / "g0" / space / "meta.json").read_text())
        assert meta["layout"] == GRAPHS[space].layout
        assert graph_of(g, space).nb_neighbors(0) == 2 * GRAPHS[space].m
        assert graph_of(g, space).efConstruction == GRAPHS[space].ef_construction
    g.close()
    meta_path = tmp_path / "index" / "g0" / "photos" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["layout"] = GRAPHS["people"].layout  # as the previous version wrote it
    meta_path.write_text(json.dumps(meta))
    g = Gallery(tmp_path, dim=DIM, model_version="m1", kind="hnsw")
    assert g.keeper.loaded_seq == -1 and g.verify()["ok"]  # rebuilt from the store
    assert graph_of(g, "photos").nb_neighbors(0) == 2 * GRAPHS["photos"].m
    assert g.photos.searchable_faces == 200 and [h.photo for h in g.photos.search(vecs[3:4], 0.1)] == ["p1"]
    g.close()


def test_hnsw_recall_tombstones_rebuild_and_kind_switch(tmp_path: Path) -> None:
    from index.local_keeper import REBUILD_TOMBSTONE_FRACTION

    dim = 128  # the encoders' size: recall at 16 dimensions says little about 128
    rng = np.random.default_rng(6)
    centres = unit(rng, 400, dim)
    vecs = centres[rng.integers(0, 400, 8000)] + 0.5 * unit(rng, 8000, dim)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    exact = Gallery(tmp_path / "e", dim=dim, model_version="m1")
    hnsw = Gallery(tmp_path / "h", dim=dim, model_version="m1", kind="hnsw")
    ids = fill(exact, vecs, people=1000)
    assert fill(hnsw, vecs, people=1000) == ids
    q = vecs[rng.integers(0, 8000, 200)] + 0.3 * unit(rng, 200, dim)
    q /= np.linalg.norm(q, axis=1, keepdims=True)

    def recall(a: Gallery, b: Gallery) -> float:
        truth, got = a.search(q, k=10, k_faces=10), b.search(q, k=10, k_faces=10)
        return float(np.mean([len({h.face_id for h in x.faces} & {h.face_id for h in y.faces}) / 10
                              for x, y in zip(truth, got, strict=True)]))

    assert recall(exact, hnsw) >= 0.98
    # deletes are filtered at once, as tombstones, until they pass the rebuild fraction
    doomed = ids[: int(len(ids) * REBUILD_TOMBSTONE_FRACTION) - 1]
    for f in doomed:
        hnsw.delete_face(f)
        exact.delete_face(f)
    assert hnsw.keeper._rebuild_thread is None and len(hnsw.index.tombstones) == len(doomed)
    found = {h.face_id for r in hnsw.search(vecs[: len(doomed)], k=10, k_faces=10) for h in r.faces}
    assert not found & set(doomed)
    # one more passes the fraction: the graph is rebuilt in the background, and writes made meanwhile
    # (adds and deletes) are replayed into the new graph before it is swapped in
    hnsw.delete_face(ids[len(doomed)])
    exact.delete_face(ids[len(doomed)])
    rebuild = hnsw.keeper._rebuild_thread
    assert rebuild is not None
    during_added, during_deleted, overlapped = [], [], 0
    extra = unit(rng, 400, dim)
    i = 0
    while (rebuild.is_alive() or i < 20) and i < len(extra):
        alive = rebuild.is_alive()
        new = hnsw.add_faces(f"late-{i}", [NewFace(extra[i])])
        assert exact.add_faces(f"late-{i}", [NewFace(extra[i])]) == new
        during_added += new
        gone = ids[len(doomed) + 1 + i]
        hnsw.delete_face(gone)
        exact.delete_face(gone)
        during_deleted.append(gone)
        overlapped += alive and rebuild.is_alive()
        i += 1
    rebuild.join()
    assert overlapped >= 1, "no write landed while the graph was being rebuilt"
    assert hnsw.index.tombstone_fraction < REBUILD_TOMBSTONE_FRACTION / 2  # the new graph dropped them
    assert hnsw.verify()["ok"]
    late = hnsw.search(extra[:i], k=1)
    assert [r.identities[0].identity for r in late] == [f"late-{j}" for j in range(i)]
    found = {h.face_id for r in hnsw.search(vecs[len(doomed) : len(doomed) + 1 + i], k=10, k_faces=10)
             for h in r.faces}
    assert not found & set(during_deleted)
    assert recall(exact, hnsw) >= 0.98
    hnsw.close()
    # switching an existing gallery's kind rebuilds the index from the store
    switched = Gallery(tmp_path / "h", dim=dim, model_version="m1", kind="exact")
    assert switched.index.kind == "exact" and switched.verify()["ok"]
    assert switched.index.live == exact.index.live == 8000 - len(doomed) - 1 - i + i
    switched.close()
    exact.close()


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_a_loaded_index_has_room_to_add_without_moving_its_arrays(tmp_path: Path, kind: str) -> None:
    """A snapshot loads into arrays exactly full: without room made at load, the first face added after a start
    moves every array (seconds at 1M faces, under the write lock). The arrays keep their place as faces are added,
    and the index answers as before."""
    import faiss

    from index.vectors import VectorIndex

    def arrays(index: VectorIndex) -> list[int]:
        held: Any = index.index
        base: Any = faiss.downcast_index(held.index)
        found = [held.id_map]
        if kind == "exact":
            found.append(base.codes)
        else:
            graph: Any = faiss.downcast_index(base.base_index)
            found += [faiss.downcast_index(base.refine_index).codes, faiss.downcast_index(graph.storage).codes,
                      graph.hnsw.levels, graph.hnsw.offsets, graph.hnsw.neighbors]
        return [int(a.data()) for a in found]

    vecs = unit(np.random.default_rng(13), 400)
    index = VectorIndex(DIM, kind, "photos")  # type: ignore[arg-type]
    index.add(np.arange(300, dtype=np.int64), vecs[:300])
    before = index.search(vecs[:50], 5)
    index.save(tmp_path, 1, "m1")
    loaded, _ = VectorIndex.load(tmp_path, dim=DIM, kind=kind, model_version="m1", space="photos")  # type: ignore[arg-type]
    assert all((a == b).all() for a, b in zip(loaded.search(vecs[:50], 5), before, strict=True))
    where = arrays(loaded)
    for n in range(300, 400, 10):
        loaded.add(np.arange(n, n + 10, dtype=np.int64), vecs[n : n + 10])
    assert arrays(loaded) == where
    assert loaded.live == 400 and (loaded.search(vecs[300:400], 1)[1].ravel() == np.arange(300, 400)).all()


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_concurrent_readers_and_writers(tmp_path: Path, database_url: str | None, kind: str) -> None:
    gallery = Gallery(tmp_path, dim=DIM, model_version="m1", database_url=database_url, kind=kind)  # type: ignore[arg-type]
    try:
        _readers_and_writers(gallery)
    finally:
        gallery.close()
    if kind == "hnsw":  # what the graphs held at close is what the next start loads
        gallery = Gallery(tmp_path, dim=DIM, model_version="m1", database_url=database_url, kind=kind)  # type: ignore[arg-type]
        assert gallery.keeper.loaded_seq != -1 and gallery.verify()["ok"]
        gallery.close()


def _readers_and_writers(gallery: Gallery) -> None:
    import re

    rng = np.random.default_rng(7)
    first = fill(gallery, unit(rng, 200), people=20)
    owner = {face_id: f"person-{i % 20:03d}" for i, face_id in enumerate(first)}
    written = re.compile(r"w10[01]-[0-4]")  # the writers' identities
    errors: list[BaseException] = []
    stop = threading.Event()
    added: list[int] = []

    def reader(seed: int) -> None:
        r = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                for res in gallery.search(unit(r, 4), k=5, k_faces=10):
                    # every face is reported under the identity that owns it, and no identity twice
                    for h in res.faces:
                        assert owner.get(h.face_id) == h.identity or (
                            h.face_id not in owner and written.fullmatch(h.identity)), (h.face_id, h.identity)
                    keys = [h.identity for h in res.identities]
                    assert len(keys) == len(set(keys))
        except BaseException as e:
            errors.append(e)

    def writer(seed: int) -> None:
        r = np.random.default_rng(seed)
        try:
            for i in range(60):
                ids = gallery.add_faces(f"w{seed}-{i % 5}", [NewFace(v) for v in unit(r, 3)])
                added.extend(ids)
                if i % 4 == 0:
                    gallery.delete_face(ids[0])
                    added.remove(ids[0])
        except BaseException as e:
            errors.append(e)

    readers = [threading.Thread(target=reader, args=(s,)) for s in range(4)]
    writers = [threading.Thread(target=writer, args=(100 + s,)) for s in range(2)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert not errors
    assert gallery.verify()["ok"]
    assert gallery.count()[1] == 200 + len(added)


def test_face_ids_are_never_reused(tmp_path: Path) -> None:
    """A deleted face's id must not name a later face (a client's stale id, an HNSW tombstone)."""
    for kind in ("exact", "hnsw"):
        g = Gallery(tmp_path / kind, dim=DIM, model_version="m1", kind=kind)
        v = unit(np.random.default_rng(8), 2)
        first = g.add_faces("a", [NewFace(v[0])])[0]
        g.delete_face(first)  # the largest id, deleted
        second = g.add_faces("b", [NewFace(v[1])])[0]
        assert second > first
        assert g.search(v[1], k=1)[0].identities[0].identity == "b"  # not hidden behind a tombstone
        g.close()


def test_reembed_beside_a_live_gallery_then_switch(tmp_path: Path) -> None:
    """A reembed (another process in real use: a second Gallery on the same folder here) runs while the old model
    keeps enrolling and deleting: faces enrolled meanwhile are re-embedded before the switch, a face deleted
    meanwhile takes its new vector with it, and after the switch the old model's writer is refused."""
    rng = np.random.default_rng(3)
    old = Gallery(tmp_path, dim=DIM, model_version="m1")
    ids = fill(old, unit(rng, 10), 5)
    new = Gallery(tmp_path, dim=DIM, model_version="m2", allow_mismatch=True)
    calls: list[list[int]] = []
    late: list[int] = []

    def embed(crops):  # type: ignore[no-untyped-def]
        calls.append([c.face_id for c in crops])
        if len(calls) == 1:  # the live gallery writes between two batches
            late.extend(old.add_faces("late", [NewFace(v) for v in unit(rng, 2)]))
            old.delete_face(ids[9])
        return [np.roll(np.eye(DIM, dtype=np.float32)[c.face_id % DIM], 1) for c in crops]

    report = new.reembed(embed, batch=4)
    assert report.switched and report.reembedded == 11 and report.generation == 1
    assert sorted(i for batch in calls for i in batch) == sorted(ids[:9] + late)  # each once, the deleted never
    assert new.index.live == 11 and new.verify()["ok"]
    with pytest.raises(GalleryMismatch):
        old.add_faces("after", [NewFace(unit(rng, 1)[0])])
    assert new.reembed_status() is None and [g["model_version"] for g in new.generations()] == ["m2"]
    old.store.close()
    new.close()


def test_open_removes_stray_snapshots_and_temporary_files(tmp_path: Path) -> None:
    """What an interrupted switch or snapshot leaves under index/ (a generation that never became current, a
    superseded one, a temporary file, the layout before generations) is removed when the gallery opens, and the
    current snapshot is used, not rebuilt."""
    rng = np.random.default_rng(5)
    g = Gallery(tmp_path, dim=DIM, model_version="m1")
    fill(g, unit(rng, 6), 3)
    g.close()
    root = tmp_path / "index"
    strays = [root / "g1" / "people" / "vectors.faiss", root / "g0" / "people" / "vectors.faiss.tmp",
              root / "g0" / "vectors.faiss", root / "vectors.faiss", root / "meta.json.tmp"]
    for p in strays:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"a vector that must not outlive its deletion")
    g = Gallery(tmp_path, dim=DIM, model_version="m1")
    assert not any(p.exists() for p in strays) and not (root / "g1").exists()
    assert sorted(p.name for p in (root / "g0").iterdir()) == ["people", "photos"]
    for space in ("people", "photos"):
        assert sorted(p.name for p in (root / "g0" / space).iterdir()) == ["meta.json", "vectors.faiss"]
    assert g.keeper.loaded_seq > 0 and g.index.live == 6  # loaded from the snapshot
    g.close()


def test_a_sql_ascii_postgresql_database_serves_like_a_utf8_one(pg_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A database created without a UTF-8 encoding (initdb without a locale makes SQL_ASCII) answers text as bytes
    unless the client asks for UTF-8: the gallery must reopen it, with keys in any script intact."""
    import uuid

    import psycopg

    name = "t_ascii_" + uuid.uuid4().hex[:8]
    with psycopg.connect(pg_cluster.url(), autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    url = pg_cluster.url(name)
    try:
        g = Gallery(tmp_path / "a", dim=4, model_version="m-é", database_url=url)
        g.add_faces("Zoë 山田", [NewFace(np.array([1, 0, 0, 0], np.float32))])
        g.close()
        g = Gallery(tmp_path / "b", dim=4, model_version="m-é", database_url=url)  # reopened: the meta compares
        assert [r.key for r in g.list_identities()[0]] == ["Zoë 山田"]
        g.close()
    finally:
        pg_cluster.drop_database(url)
