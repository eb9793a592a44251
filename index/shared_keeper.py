"""The keeper of a Milvus collection every replica shares (:class:`index.keeper.Keeper`).

The store records how far the collection has applied the change log (meta ``vectors_applied:<collection>``);
whoever applies the log holds the store's write lock, so no write of another replica interleaves and a face deleted
meanwhile is never upserted again. Faces are added inside their write transaction (under that lock) and deletes are
sent after theirs commits. Milvus persists the collection: there is no snapshot here, and the change log is kept back
to the cursor. What Milvus keeps of deleted vectors until a compaction: :mod:`index.milvus`.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from index.changelog import apply_changes, changes
from index.errors import StoreUnavailable
from index.keeper import model_changed
from index.locks import Locks
from index.milvus import MilvusIndex
from index.store import Conn, Store

log = logging.getLogger(__name__)


class SharedKeeper:
    follows = True  # every replica writes to the collection; each one's searches must see the others' writes

    def __init__(self, store: Store, locks: Locks, index: MilvusIndex, *, dim: int, model_version: str) -> None:
        self.store, self.locks, self.index = store, locks, index
        self.dim, self.model_version = dim, model_version
        self.generation = int(store.get_meta("generation") or 0)
        self.applied = 0
        self.consume()

    @property
    def _cursor_key(self) -> str:
        return f"vectors_applied:{self.index.name}"

    def consume(self, *, reindex: bool = False) -> int:
        """Apply the change log after the collection's cursor; rebuild the collection from the store when the
        cursor is missing, pruned past or ahead of the log, or when asked. Returns how many changes were applied."""
        if model_changed(self.store, self.model_version, self.dim):
            return 0
        with self.locks.mutex, self.store.transaction() as c:
            cursor = int(self.store.get_meta(self._cursor_key, c) or -1)
            seq = self.store.seq(c)
            if reindex or cursor < 0 or cursor < self.store.pruned_through(c) or cursor > seq:
                t0 = time.monotonic()
                self.index.reset()
                for ids, vectors in self.store.all_embeddings(c):
                    self.index.add(ids, vectors)
                self.index.flush()
                self.store.set_meta(c, self._cursor_key, str(seq))
                log.info("re-indexed %s from the store in %.1f s", self._cursor_key, time.monotonic() - t0)
                self.applied = seq
                return 0
            rows = self.store.changes_after(cursor, c)
            if rows:
                apply_changes(self.index, *changes(rows))
                self.store.set_meta(c, self._cursor_key, str(rows[-1].seq))
            self.applied = rows[-1].seq if rows else cursor
            return len(rows)

    def catch_up(self) -> int:
        return self.consume()

    def staged(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Under the store's write lock: no delete of another replica overtakes the upsert."""
        self.index.add(ids, vectors)

    def added(self, ids: np.ndarray, vectors: np.ndarray, seqs: list[int]) -> None:
        """Nothing more: the cursor moves only by applying the log in order (:meth:`consume`)."""

    def removed(self, ids: np.ndarray, seqs: list[int]) -> None:
        self.index.remove(ids)

    def erase(self, vectors: list[bytes]) -> None:
        """No file here: Milvus lets go of deleted vectors at a compaction (:meth:`compact`)."""

    def maybe_rebuild(self) -> None:
        """Milvus maintains its own index."""

    def rebuild(self) -> None:
        self.consume(reindex=True)

    def compact(self) -> bool:
        """Drop the collection and fill it again from the store: the only way Milvus Lite lets go of deleted
        vectors' files."""
        self.rebuild()
        return True

    def snapshot(self, *, force: bool = False) -> bool:
        """Milvus persists the collection; only the change log before the cursor is pruned."""
        if not model_changed(self.store, self.model_version, self.dim):
            self.store.prune_changes(self.applied - self.store.keep_changes)
        return False

    def prepare_switch(self, c: Conn, ids: np.ndarray, vectors: np.ndarray, seq: int) -> int:
        """This model's collection, filled from scratch, with its cursor at the switch."""
        self.index.reset()
        self.index.add(ids, vectors)
        self.store.set_meta(c, self._cursor_key, str(seq))
        self._switch_seq = seq
        return self.generation + 1

    def switched(self, old_model: tuple[str | None, int]) -> None:
        self.generation += 1
        self.applied = self._switch_seq
        if old_model[0] is not None:
            self.index.drop_collection_of(old_model[0], old_model[1])

    def close(self) -> None:
        try:
            self.snapshot()
        except StoreUnavailable as e:
            log.warning("change log not pruned at close: %s", e)
        finally:
            self.index.close()
