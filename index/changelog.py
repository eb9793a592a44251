"""The change log: every add and delete of a face, numbered. Replaying it brings an index (a snapshot, another
replica's, a Milvus collection) up to the store."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from index.records import Change
from index.store import ADD, DELETE
from index.vectors import Vectors


def changes(rows: Sequence[Change], existing: set[int] | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Change-log entries as (ids to remove int64 (n,),
    ids to add int64 (m,), their vectors float32 (m, D)). The last change of a face counts; an added face deleted
    since is skipped (its delete follows). ``existing``: the ids the index holds, for an index that may hold some of
    the changes already (nothing is added twice, only held ids are removed)."""
    last: dict[int, tuple[int, bytes | None]] = {}
    for r in rows:
        last[r.face_id] = (r.op, r.embedding)
    if existing is None:
        gone = [f for f, (op, _) in last.items() if op == DELETE]
    else:
        gone = [f for f, (op, e) in last.items() if f in existing and (op == DELETE or e is None)]
    adds = [(f, e) for f, (op, e) in last.items() if op == ADD and e is not None and f not in (existing or ())]
    vecs = np.stack([np.frombuffer(e, dtype=np.float32) for _, e in adds]) if adds else np.zeros((0, 0), np.float32)
    return np.array(gone, dtype=np.int64), np.array([f for f, _ in adds], dtype=np.int64), vecs


def apply_changes(index: Vectors, gone: np.ndarray, add_ids: np.ndarray, add_vecs: np.ndarray) -> None:
    index.remove(gone)
    if len(add_ids):
        index.add(add_ids, add_vecs)


def replay(index: Vectors, rows: Sequence[Change]) -> None:
    """Apply change-log rows to an index that may hold some of them already (idempotent)."""
    if rows:
        apply_changes(index, *changes(rows, existing=set(index.ids().tolist())))
