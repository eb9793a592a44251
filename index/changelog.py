"""The change log: every add, naming and delete of a face, numbered. Replaying it brings a space's index (a snapshot,
another replica's, a Milvus collection) up to the store (:mod:`index.spaces`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from index.records import Change
from index.spaces import SPACES, Placed, Space
from index.store import ADD
from index.vectors import Vectors


def changes(rows: Sequence[Change], dim: int) -> tuple[np.ndarray, Placed]:
    """Change-log entries as (ids to remove from every space int64 (n,), faces to add where they belong). The last
    change of a face counts, and a face is placed as it is now: one deleted since is removed, one named since an
    earlier add also goes into ``people``."""
    last: dict[int, Change] = {}
    for r in rows:
        last[r.face_id] = r
    gone = [f for f, r in last.items() if r.embedding is None]
    adds = [r for r in last.values() if r.op == ADD and r.embedding is not None]
    vecs = (np.stack([np.frombuffer(r.embedding, dtype=np.float32) for r in adds]) if adds  # type: ignore[arg-type]
            else np.zeros((0, dim), np.float32))
    placed = Placed.of([r.face_id for r in adds], vecs, named=[r.named for r in adds],
                       in_photo=[r.in_photo for r in adds])
    return np.array(gone, dtype=np.int64), placed


def apply_changes(indexes: Mapping[Space, Vectors], gone: np.ndarray, placed: Placed, *,
                  idempotent: bool = False) -> None:
    """Remove ``gone`` from every space and add ``placed`` where it belongs. ``idempotent``: the indexes may hold
    some of the faces already (a replay, a face named after its add): those are not added twice. Milvus upserts, so
    only FAISS indexes need it."""
    for space in SPACES:
        index = indexes[space]
        index.remove(gone)
        ids, vecs = placed.into(space)
        if idempotent and len(ids):  # looked up per face: following the log costs what it applies, not the index
            fresh = ~index.holds(ids)
            ids, vecs = ids[fresh], vecs[fresh]
        if len(ids):
            index.add(ids, vecs)


def replay(indexes: Mapping[Space, Vectors], rows: Sequence[Change], dim: int) -> None:
    """Apply change-log rows to indexes that may hold some of them already."""
    if rows:
        apply_changes(indexes, *changes(rows, dim), idempotent=True)
