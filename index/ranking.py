"""A search's answer from the index's nearest faces: faces, and identities scored by their best face."""

from __future__ import annotations

import numpy as np

from index.records import FaceHit, IdentityHit, SearchResult, similarity_to_distance
from index.store import Store
from index.vectors import Vectors


def nearest_faces(index: Vectors, store: Store, q: np.ndarray, k: int, k_faces: int
                  ) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """(similarities, face ids, face id -> identity) of the nearest faces to each query: enough to fill ``k``
    identities and ``k_faces`` faces in most galleries. Faces the store no longer has (another replica deleted them a
    moment ago) and photos' unnamed faces have no identity; while they crowd identities out, it looks further."""
    fetch = max(k_faces, 4 * k, 32)
    while True:
        sims, ids = index.search(q, fetch)
        owner = store.owners(sorted({int(i) for i in ids.ravel() if i >= 0}))
        if not _short_of_faces(ids, owner, k_faces) or fetch >= index.live:
            return sims, ids, owner
        fetch *= 4


def group_hits(sims: np.ndarray, ids: np.ndarray, owner: dict[int, str], *, k: int, k_faces: int,
               threshold: float | None) -> list[SearchResult]:
    """Per query row: the first ``k_faces`` faces that belong to an identity (``owner``: face id -> identity) and the
    first ``k`` identities, each with its best face and every face of it found; ``threshold`` (a distance) marks
    each identity as a match or not."""
    results = []
    for row_s, row_i in zip(sims, ids, strict=True):
        res = SearchResult()
        grouped: dict[str, IdentityHit] = {}
        for s, i in zip(row_s, row_i, strict=True):
            key = owner.get(int(i)) if i >= 0 else None
            if key is None:
                continue
            sim = float(min(1.0, max(-1.0, s)))
            dist = float(similarity_to_distance(sim))
            if len(res.faces) < k_faces:
                res.faces.append(FaceHit(int(i), key, sim, dist))
            hit = grouped.get(key)
            if hit is None:
                grouped[key] = IdentityHit(key, int(i), sim, dist, [int(i)],
                                           None if threshold is None else dist <= threshold)
            else:
                hit.matched_faces.append(int(i))
        res.identities = list(grouped.values())[:k]
        results.append(res)
    return results


def _short_of_faces(ids: np.ndarray, owner: dict[int, str], k_faces: int) -> bool:
    """Whether a row found fewer than ``k_faces`` identities' faces while the index had more to give."""
    return any(sum(int(i) in owner for i in row) < k_faces and (row >= 0).all() for row in ids)
