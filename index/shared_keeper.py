"""The keeper of the Milvus collections every replica shares, one per search space (:class:`index.keeper.Keeper`,
:mod:`index.spaces`).

The store records how far the collections have applied the change log (meta ``vectors_applied:<collection>``, named
after the ``people`` one);
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
from index.spaces import Placed, Space
from index.store import Conn, Store

log = logging.getLogger(__name__)


class SharedKeeper:
    follows = True  # every replica writes to the collection; each one's searches must see the others' writes

    def __init__(self, store: Store, locks: Locks, indexes: dict[Space, MilvusIndex], *, dim: int,
                 model_version: str) -> None:
        self.store, self.locks, self.indexes = store, locks, indexes
        self.dim, self.model_version = dim, model_version
        self.generation = int(store.get_meta("generation") or 0)
        self.applied = 0
        self.consume()
        self.drop_uncommitted()

    @property
    def _cursor_key(self) -> str:
        return f"vectors_applied:{self.indexes['people'].name}"

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
                self.indexes["people"].drop_collection_of(self.model_version, self.dim, None)  # before the spaces
                for index in self.indexes.values():
                    index.reset()
                for faces in self.store.all_embeddings(c):
                    for space, index in self.indexes.items():
                        index.add(*faces.into(space))
                for index in self.indexes.values():
                    index.flush()
                self.store.set_meta(c, self._cursor_key, str(seq))
                log.info("re-indexed %s from the store in %.1f s", self._cursor_key, time.monotonic() - t0)
                self.applied = seq
                return 0
            rows = self.store.changes_after(cursor, c)
            if rows:  # Milvus upserts: a face named after its add is written again, harmlessly
                apply_changes(self.indexes, *changes(rows, self.dim))
                self.store.set_meta(c, self._cursor_key, str(rows[-1].seq))
            self.applied = rows[-1].seq if rows else cursor
            return len(rows)

    def catch_up(self) -> int:
        return self.consume()

    def drop_uncommitted(self) -> int:
        """Vectors upserted for a write whose transaction never committed (its process was killed between the
        upsert and the commit, or the commit failed) are in no space of the store: remove them. Run at open, under
        the store's write lock, so that no other replica's write is between its upsert and its commit. Returns how
        many went."""
        if model_changed(self.store, self.model_version, self.dim):
            return 0
        gone = 0
        with self.locks.mutex, self.store.transaction():
            for space, index in self.indexes.items():
                if index.live == self.store.count_in_space(space):  # the usual case: one COUNT, no id list
                    continue
                stored = np.array(self.store.face_ids(space), dtype=np.int64)
                extra = np.setdiff1d(index.ids(), stored)
                if len(extra):
                    log.warning("%d vectors in the %s space belong to writes that never committed: removed",
                                len(extra), space)
                    index.remove(extra)
                    gone += len(extra)
        return gone

    def staged(self, faces: Placed) -> None:
        """Under the store's write lock: no delete of another replica overtakes the upsert."""
        for space, index in self.indexes.items():
            index.add(*faces.into(space))

    def added(self, faces: Placed, seqs: list[int]) -> None:
        """Nothing more: the cursor moves only by applying the log in order (:meth:`consume`)."""

    def removed(self, ids: np.ndarray, seqs: list[int]) -> None:
        for index in self.indexes.values():
            index.remove(ids)

    def erase(self, ids: np.ndarray, vectors: list[bytes]) -> None:
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

    def prepare_switch(self, c: Conn, faces: Placed, seq: int) -> int:
        """This model's collections, filled from scratch, with their cursor at the switch."""
        for space, index in self.indexes.items():
            index.reset()
            index.add(*faces.into(space))
        self.store.set_meta(c, self._cursor_key, str(seq))
        self._switch_seq = seq
        return self.generation + 1

    def switched(self, old_model: tuple[str | None, int]) -> None:
        self.generation += 1
        self.applied = self._switch_seq
        if old_model[0] is not None:
            for space, index in self.indexes.items():
                index.drop_collection_of(old_model[0], old_model[1], space)
            self.indexes["people"].drop_collection_of(old_model[0], old_model[1], None)

    def destroy(self) -> None:
        """A deleted collection's vectors: its Milvus collections are dropped."""
        try:
            for index in self.indexes.values():
                index.drop()
        finally:
            for index in reversed(self.indexes.values()):
                index.close()

    def close(self) -> None:
        try:
            self.snapshot()
        except StoreUnavailable as e:
            log.warning("change log not pruned at close: %s", e)
        finally:
            for index in reversed(self.indexes.values()):
                index.close()
