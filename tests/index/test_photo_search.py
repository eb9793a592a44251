"""Photo search on hand-placed vectors: what the threshold admits directly, and what two direct matches vouch for."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from index import Gallery, NewFace
from index.records import NewPhoto


def unit(*x: float) -> np.ndarray:
    v = np.zeros(8, np.float32)
    v[: len(x)] = x
    return v / np.linalg.norm(v)


def test_photos_found_directly_and_through_two_direct_matches(tmp_path: Path) -> None:
    t = 0.40
    q = unit(1)
    faces = {"near1": unit(1, 0.3, 0), "near2": unit(1, 0, 0.3),  # 0.29 from the query
             "vouched": unit(1, 0.38, 0.38),  # 0.49 from the query, 0.35 from both near faces
             "one_voucher": unit(1, 0.55, -0.1),  # 0.50 from the query, within t of near1 only
             "far": unit(0, 1)}
    g = Gallery(tmp_path, dim=8, model_version="m")
    for key, v in faces.items():
        g.photos.add(NewPhoto(key), [(None, NewFace(v))], cluster_within=None)

    direct = g.photos.search(q[None], t)
    assert [h.photo for h in direct] == ["near1", "near2"] or [h.photo for h in direct] == ["near2", "near1"]
    assert not any(h.expanded for h in direct) and all(h.distance <= t for h in direct)

    hits = g.photos.search(q[None], t, expand=True)
    assert [h.photo for h in hits][2:] == ["vouched"] and hits[2].expanded
    assert abs(hits[2].distance - float(np.linalg.norm(faces["vouched"] - q))) < 1e-5  # reported against the query
    assert g.photos.search(q[None], 0.25, expand=True) == []  # nothing direct, nothing to vouch
    g.photos.delete("near2")  # one voucher left: the vouched photo goes with it
    assert [h.photo for h in g.photos.search(q[None], t, expand=True)] == ["near1"]
    g.close()


def test_the_photos_space_is_a_graph_whatever_identity_search_uses(tmp_path: Path) -> None:
    """``kind`` (FACESEARCH_INDEX_KIND) picks identity search's index; photo faces are always in a graph, since every
    photo indexed searches them for its cluster joins (index.local_keeper.space_kind). Photo search finds each photo
    from a near copy of its face on either kind, and a reopened gallery loads both spaces from its snapshot."""
    rng = np.random.default_rng(7)
    faces = rng.standard_normal((300, 16)).astype(np.float32)
    faces /= np.linalg.norm(faces, axis=1, keepdims=True)
    probes = faces[:20] + 0.05 * rng.standard_normal((20, 16)).astype(np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    for kind in ("exact", "hnsw"):
        g = Gallery(tmp_path / kind, dim=16, model_version="m", kind=kind)
        for i, v in enumerate(faces):
            g.photos.add(NewPhoto(f"p{i}"), [(None, NewFace(v))], cluster_within=None)
        for _ in range(2):
            assert g.index.kind == kind and g.keeper.indexes["photos"].kind == "hnsw"
            assert [[h.photo for h in g.photos.search(q[None], 0.4)] for q in probes] == [[f"p{i}"] for i in range(20)]
            g.close()
            g = Gallery(tmp_path / kind, dim=16, model_version="m", kind=kind)
            assert g.keeper.loaded_seq >= 0  # from the snapshot, not rebuilt
        g.close()
