"""The Milvus vector index (Milvus Lite: the same engine in process, on a local file) against FAISS exact search,
and a gallery on it: deletes, re-indexing from the store, a restart, two galleries sharing one collection."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from index import Gallery, NewFace
from index.milvus import MilvusIndex, collection_name
from index.store import FaceRow
from index.vectors import VectorIndex

DIM = 128


def faces_like(rng: np.random.Generator, people: int, per: int) -> np.ndarray:
    """Unit vectors shaped like face embeddings: a centre per person, photos spread around it."""
    centres = rng.normal(size=(people, DIM))
    v = np.repeat(centres, per, axis=0) + 0.6 * rng.normal(size=(people * per, DIM))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_milvus_search_equals_faiss_exact_search(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vecs = faces_like(rng, 2_500, 5)  # 12,500 vectors
    ids = np.arange(1, len(vecs) + 1, dtype=np.int64) * 7  # ids need not be dense
    milvus = MilvusIndex(str(tmp_path / "milvus.db"), DIM, "m1", "people")
    exact = VectorIndex(DIM, "exact")
    milvus.add(ids, vecs)
    exact.add(ids, vecs)
    assert milvus.live == exact.live == len(vecs)
    queries = faces_like(np.random.default_rng(1), 200, 1)
    queries[:100] = vecs[rng.choice(len(vecs), 100, replace=False)]  # half the probes are enrolled vectors
    ms, mi = milvus.search(queries, 10)
    es, ei = exact.search(queries, 10)
    assert (mi == ei).mean() >= 0.999, (mi != ei).sum()  # a swap of two near-ties at most
    assert np.abs(ms - es).max() < 1e-4
    gone = ids[:1000]
    milvus.remove(gone)
    exact.remove(gone)
    assert milvus.live == exact.live
    ms, mi = milvus.search(queries, 10)
    es, ei = exact.search(queries, 10)
    assert not np.isin(mi, gone).any()
    assert (mi == ei).mean() >= 0.999
    assert np.array_equal(milvus.ids(), exact.ids())
    milvus.close()


def test_gallery_on_milvus_deletes_reindexes_and_restarts(tmp_path: Path, database_url: str | None) -> None:
    rng = np.random.default_rng(2)
    vecs = faces_like(rng, 300, 4)
    uri = str(tmp_path / "milvus.db")

    def open_gallery(folder: Path) -> Gallery:
        return Gallery(folder, dim=DIM, model_version="m1", database_url=database_url, vector_url=uri)

    g = open_gallery(tmp_path / "a")
    ids = g.add_many([(f"p{i // 4}", NewFace(v)) for i, v in enumerate(vecs)])
    reference = Gallery(tmp_path / "ref", dim=DIM, model_version="m1")  # FAISS, SQLite
    ref_ids = reference.add_many([(f"p{i // 4}", NewFace(v)) for i, v in enumerate(vecs)])
    to_ref = dict(zip(ids, ref_ids, strict=True))
    probes = vecs[::7] + 0.05 * rng.normal(size=vecs[::7].shape).astype(np.float32)

    def same_answers() -> None:
        for got, want in zip(g.search(probes, k=3), reference.search(probes, k=3), strict=True):
            assert [(h.identity, to_ref[h.face_id]) for h in got.identities] == \
                [(h.identity, h.face_id) for h in want.identities]
            assert np.allclose([h.distance for h in got.identities], [h.distance for h in want.identities],
                               atol=1e-4)

    same_answers()
    g.delete_identity("p3")
    reference.delete_identity("p3")
    g.delete_face(ids[100])
    reference.delete_face(to_ref[ids[100]])
    same_answers()
    assert g.verify()["ok"]
    g.close()
    g = open_gallery(tmp_path / "a")  # a restart: the collection and its cursor persist
    assert g.index.live == len(vecs) - 5 and g.verify()["ok"]
    same_answers()
    g.rebuild_index()  # `facesearch gallery reindex`: the collection again from the store alone
    assert g.verify()["ok"]
    same_answers()
    g.close()
    reference.close()


def test_replicas_share_one_collection_fed_by_the_change_log(tmp_path: Path, pg_url: str) -> None:
    uri = str(tmp_path / "milvus.db")
    a, b = (Gallery(tmp_path / n, dim=DIM, model_version="m1", database_url=pg_url, vector_url=uri) for n in "ab")
    try:
        vecs = faces_like(np.random.default_rng(3), 50, 2)
        ids = a.add_many([(f"p{i // 2}", NewFace(v)) for i, v in enumerate(vecs)])
        assert [r.identities[0].identity for r in b.search(vecs[:10], k=1)] == [f"p{i // 2}" for i in range(10)]
        b.delete_identity("p0")  # through b: a never answers with it again
        assert all(h.identity != "p0" for r in a.search(vecs[:2], k=5) for h in r.identities)
        assert not np.isin(ids[:2], a.index.ids()).any()
        # a write committed to the store whose vector never reached Milvus (its replica died in between):
        # the change log brings it there
        extra = faces_like(np.random.default_rng(4), 1, 1)[0]
        with a.store.transaction() as c:
            (face_id,), _ = a.store.add_faces(c, [("late", FaceRow(extra.tobytes(), None, None, None, None, None,
                                                                   None))], "m1", None, None)
        b.catch_up()  # the followers may have done it already (NOTIFY wakes them)
        assert b.search(extra, k=1)[0].identities[0].identity == "late"
        assert a.verify()["ok"] and b.verify()["ok"]
    finally:
        a.close()
        b.close()


def test_reembedding_fills_the_new_models_collection_and_drops_the_old(tmp_path: Path,
                                                                      database_url: str | None) -> None:

    uri = str(tmp_path / "milvus.db")
    rng = np.random.default_rng(6)
    old = Gallery(tmp_path / "a", dim=DIM, model_version="m1", database_url=database_url, vector_url=uri)
    ids = old.add_many([(f"p{i % 5}", NewFace(v)) for i, v in enumerate(faces_like(rng, 10, 1))])
    folder = tmp_path / ("b" if database_url else "a")  # SQLite: the same folder; PostgreSQL: another replica's
    new = Gallery(folder, dim=DIM, model_version="m2", database_url=database_url, vector_url=uri,
                  allow_mismatch=True)
    try:
        target = {i: faces_like(np.random.default_rng(i), 1, 1)[0] for i in ids}
        old.delete_face(ids[0])  # while the new model waits: its face must not reach the new collection
        report = new.reembed(lambda crops: [target[c.face_id] for c in crops], batch=4)
        assert report.switched and report.reembedded == 9
        assert np.array_equal(new.index.ids(), np.array(sorted(ids[1:])))
        assert new.verify()["ok"]
        for i in ids[1:4]:
            hit = new.search(target[i], k=1)[0].identities[0]
            assert hit.face_id == i and hit.distance < 1e-3
        for space in ("people", "photos", None):  # the old model's vectors went (None: before the spaces)
            assert not new.index.client.has_collection(collection_name("m1", DIM, space))
        new.close()
        new = Gallery(folder, dim=DIM, model_version="m2", database_url=database_url, vector_url=uri)
        assert new.verify()["ok"] and new.index.live == 9  # its position in the log was recorded with the switch
    finally:
        old.close()
        new.close()


def test_compact_leaves_no_deleted_vector_in_milvus_files(tmp_path: Path, database_url: str | None) -> None:
    """Milvus Lite keeps deleted vectors in its flushed segment files (a delete only marks them; its compaction
    rewrites nothing): ``Gallery.compact`` fills the collection again from the store, after which no file of
    Milvus holds a deleted face's vector, and the gallery answers as before."""
    from tests.erasure import files_holding

    rng = np.random.default_rng(5)
    vecs = faces_like(rng, 600, 4)  # 2,400 faces: more than one flush's worth, so segment files are written
    folder = tmp_path / "milvus"
    folder.mkdir()
    g = Gallery(tmp_path / "a", dim=DIM, model_version="m1", database_url=database_url,
                vector_url=str(folder / "vectors.db"))
    ids = g.add_many([(f"p{i // 4}", NewFace(v)) for i, v in enumerate(vecs)])
    for face_id in ids[:8]:
        g.delete_face(face_id)
    g.delete_identity("p7")  # ids[28:32]
    gone = {str(i): vecs[k].tobytes() for k, i in enumerate(ids) if k < 8 or 28 <= k < 32}
    kept = {str(i): vecs[k].tobytes() for k, i in enumerate(ids) if k in (8, 100, 2399)}
    probes = vecs[40:60] + 0.05 * rng.normal(size=(20, DIM)).astype(np.float32)
    before = [[(h.identity, h.face_id) for h in r.identities] for r in g.search(probes, k=3)]
    assert files_holding(folder, gone), "Milvus Lite kept the deleted vectors (why compact exists)"

    report = g.compact()
    assert report["index"] == {"kind": "milvus", "rebuilt": True, "faces": {"people": len(ids) - 12, "photos": 0}}
    assert files_holding(folder, gone) == {}
    assert set(files_holding(folder, kept)) == set(kept), "the scan must find what is stored"
    assert [[(h.identity, h.face_id) for h in r.identities] for r in g.search(probes, k=3)] == before
    assert g.verify()["ok"]
    g.close()


def test_photos_on_milvus_search_cluster_and_erase(tmp_path: Path, database_url: str | None) -> None:
    """Photos' unnamed faces in a Milvus collection: identity search looks past them, photo search finds them,
    clusters group them, and deleting a photo takes its vectors out of the collection."""
    from index.records import NewPhoto

    rng = np.random.default_rng(5)
    vecs = faces_like(rng, 40, 6)  # 40 people x 6 photos
    g = Gallery(tmp_path / "a", dim=DIM, model_version="m1", database_url=database_url,
                vector_url=str(tmp_path / "milvus.db"))
    g.add_many([("enrolled", NewFace(vecs[0]))])  # person 0's first photo enrolled under an identity
    photo_faces: dict[str, list[int]] = {}
    for n in range(1, 5):  # photos 1-4 of every person, four people per photo
        for start in range(0, 40, 4):
            key = f"photo{n}-{start}"
            photo_faces[key] = g.photos.add(NewPhoto(key, "a"), [(None, NewFace(vecs[6 * p + n]))
                                                                 for p in range(start, start + 4)], cluster_within=0.9)
    # two spaces: the enrolled face in ``people``, the photos' faces in ``photos``
    assert g.index.live == 1 and g.photo_index.live == 160
    assert g.searchable_faces == 1 and g.photos.searchable_faces == 160
    # identity search: the 159 unnamed faces nearer than nothing do not hide the enrolled one
    assert g.search(vecs[5][None], k=1)[0].identities[0].identity == "enrolled"
    hits = g.photos.search(vecs[5][None], 0.9)  # person 0's 5th photo, never indexed: finds photos 1-4 of person 0
    assert sorted(h.photo for h in hits) == [f"photo{n}-0" for n in range(1, 5)]
    clusters, total = g.photos.list_clusters(limit=100)
    assert total <= 60 and all(c.faces <= 4 for c in clusters)
    g.photos.recluster(0.9)
    clusters, total = g.photos.list_clusters(limit=100)
    assert total == 40 and all(c.faces == 4 for c in clusters)  # one per person
    assert g.photos.delete("photo1-0") == 4
    assert g.index.live == 1 and g.photo_index.live == 156 and g.verify()["ok"]
    named = photo_faces["photo2-0"][0]  # person 0 in photo 2, named: found by identity search from now on
    g.photos.name_face(named, "zero")
    assert g.index.live == 2 and g.photo_index.live == 156 and g.verify()["ok"]
    assert {h.identity for h in g.search(vecs[5][None], k=2)[0].identities} == {"enrolled", "zero"}
    assert sorted(h.photo for h in g.photos.search(vecs[5][None], 0.9)) == [f"photo{n}-0" for n in range(2, 5)]
    g.close()


def test_a_gallery_from_before_the_spaces_drops_its_one_collection(tmp_path: Path) -> None:
    """Before the search spaces, every face was in one collection per model: opening such a gallery fills the two
    spaces' collections from the store and drops the old one (it held every face's vector, deleted ones included)."""
    rng = np.random.default_rng(9)
    uri = str(tmp_path / "milvus.db")
    g = Gallery(tmp_path / "a", dim=DIM, model_version="m1", vector_url=uri)
    ids = g.add_many([(f"p{i}", NewFace(v)) for i, v in enumerate(faces_like(rng, 6, 1))])
    cursor = g.keeper._cursor_key  # type: ignore[attr-defined]
    g.close()  # (its follower would re-index at once, before the old collection below exists)
    from index.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "a" / "gallery.db")
    with store.transaction() as c:  # as a gallery of before: no cursor for the spaces' collections
        store.delete_meta(c, cursor)
    store.close()
    legacy = MilvusIndex(uri, DIM, "m1", None)  # type: ignore[arg-type]
    legacy.add(np.array(ids, dtype=np.int64), faces_like(rng, 6, 1))
    assert legacy.client.has_collection(collection_name("m1", DIM, None))
    legacy.close()
    g = Gallery(tmp_path / "a", dim=DIM, model_version="m1", vector_url=uri)
    assert not g.index.client.has_collection(collection_name("m1", DIM, None))  # type: ignore[attr-defined]
    assert g.index.live == 6 and g.photo_index.live == 0 and g.verify()["ok"]
    g.close()


def test_collections_on_one_milvus_keep_apart_and_a_deleted_one_drops_its_collections(
        tmp_path: Path, database_url: str | None) -> None:
    """Two collections (galleries under storage tags) and the default one on one Milvus: the same face ids and
    names in each, each search sees its own; deleting one drops its Milvus collections and leaves the others'."""
    from index.collections import Collections
    from index.config import GalleryConfig, open_gallery

    uri = str(tmp_path / "milvus.db")
    config = GalleryConfig(folder=tmp_path / "data", dim=DIM, model_version="m1", database_url=database_url,
                           vector_url=uri)
    default = open_gallery(config)
    collections = Collections(default, config)
    rng = np.random.default_rng(3)
    vecs = faces_like(rng, 3, 1)
    try:
        collections.create("shop-a")
        collections.create("shop-b")
        for name, vec in zip(("default", "shop-a", "shop-b"), vecs, strict=True):
            collections.get(name).add_faces("alex", [NewFace(vec)])
        for name, vec in zip(("default", "shop-a", "shop-b"), vecs, strict=True):
            for other, gallery in collections.galleries():
                top = gallery.search(vec[None, :], k=1)[0].identities[0]
                assert (top.similarity > 0.999) == (other == name), (name, other)
        a = collections.get("shop-a")
        tag = a.keeper.indexes["people"].prefix  # type: ignore[attr-defined]
        client = default.keeper.indexes["people"].client  # type: ignore[attr-defined]
        assert sum(c.startswith(f"{tag}_") for c in client.list_collections()) == 2
        assert collections.delete("shop-a") == 1
        assert not any(c.startswith(f"{tag}_") for c in client.list_collections())
        assert collections.get("shop-b").search(vecs[2][None, :], k=1)[0].identities[0].similarity > 0.999
    finally:
        collections.close()
        default.close()


def test_vectors_of_a_write_that_never_committed_are_removed_at_open(tmp_path: Path) -> None:
    """A replica killed between its upsert into Milvus (inside the write transaction) and the commit leaves vectors
    of faces the store never had: the next open removes them (a face nobody was told is stored is kept nowhere)."""
    from index.spaces import Placed

    uri = str(tmp_path / "milvus.db")
    vecs = faces_like(np.random.default_rng(5), 3, 1)
    g = Gallery(tmp_path / "a", dim=DIM, model_version="m1", vector_url=uri)
    kept = g.add_faces("alex", [NewFace(vecs[0])])
    g.keeper.staged(Placed.of([10_001, 10_002], vecs[1:], named=True, in_photo=False))  # then the kill
    assert sorted(g.keeper.indexes["people"].ids().tolist()) == [*kept, 10_001, 10_002]
    g.close()
    g = Gallery(tmp_path / "a", dim=DIM, model_version="m1", vector_url=uri)
    assert g.keeper.indexes["people"].ids().tolist() == kept and g.verify()["ok"]
    assert g.stats()["indexed"] == g.stats()["faces"] == 1
    g.close()
