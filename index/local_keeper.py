"""The keeper of a gallery's FAISS indexes in this process (:class:`index.keeper.Keeper`), one per search space
(:mod:`index.spaces`), snapshotted under the data folder.

A snapshot (``index/g<generation>/<space>/``) records the change-log position it reflects; at open valid snapshots
are loaded and the changes after them replayed, anything else is rebuilt from the store. On a shared store
(PostgreSQL) a thread applies the other replicas' changes; this process's own writes are in the indexes before they
are acknowledged and skipped when the log brings them again. A delete overwrites the face's vectors in the snapshots
before it returns (on PostgreSQL, in every replica's snapshots as it applies the delete); at open, stray files under
``index/`` go.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

import numpy as np

from index.changelog import apply_changes, changes, replay
from index.errors import GalleryError, StoreUnavailable
from index.keeper import model_changed
from index.locks import Locks
from index.spaces import SPACES, Placed, Space
from index.store import DELETE, Conn, Store
from index.vectors import INDEX_FILE, META_FILE, Kind, SnapshotError, VectorIndex, erase_from_snapshot

Indexes = dict[Space, VectorIndex]

log = logging.getLogger(__name__)
REBUILD_TOMBSTONE_FRACTION = 0.1
# A snapshot holds writes off while it is written (2.8 s for 100k HNSW faces of 512 floats here; it grows with the
# gallery): an unforced one waits until this many times the last one's duration has passed since it, so writes are
# held off at most 1/20th of the time whatever the gallery's size; the change log replays what a snapshot not yet
# taken would hold.
SNAPSHOT_SPACING = 20.0


def space_kind(space: Space, kind: Kind) -> Kind:
    """The index a space gets: ``people`` the configured kind (identity search exact, or HNSW for large galleries);
    ``photos`` a graph whatever it is. Every photo indexed searches the photo faces for the clusters its faces join:
    exactly, a scan of all of them per face (at 1M photo faces 0.12x the empty gallery's indexing rate,
    bench/results/photos-scale-api.json at 30b3126); in the photos graph the joins equal exact search's for 99.83%
    of faces and photo search finds all of exact's (bench/results/photos-graph.json), and a small graph is searched
    whole."""
    return "hnsw" if space == "photos" else kind


class LocalKeeper:
    def __init__(self, store: Store, locks: Locks, folder: Path, *, dim: int, kind: Kind, model_version: str) -> None:
        self.store, self.locks, self.folder = store, locks, folder
        self.dim, self.kind, self.model_version = dim, kind, model_version
        self.follows = store.shared
        self.generation = int(store.get_meta("generation") or 0)
        self._rebuild_thread: threading.Thread | None = None
        self._pending: tuple[Indexes, int, int] | None = None  # a switch's (index, generation, seq)
        self._destroyed = False  # a deleted collection's: nothing may be written under its folder again
        # the log is applied up to ``applied``; on a shared store this process's own later changes are in the index
        # already and listed in _own, so that following the log skips them
        self.applied = 0
        self._own: set[int] = set()
        self._remove_stray_snapshots()
        start = time.monotonic()
        self.indexes, self.loaded_seq, replayed_deletes = self._load()
        self._snapshot_seq = self.loaded_seq
        # the last snapshot's duration and end (monotonic): reading one costs about what writing it does, so a loaded
        # snapshot counts as one just taken; indexes built from the store are snapshotted at the first chance
        self._snapshot_done = time.monotonic()
        self._snapshot_took = self._snapshot_done - start if self.loaded_seq >= 0 else 0.0
        if replayed_deletes:  # a kill after a delete committed, before its vector left the snapshot
            self.snapshot(force=True)

    @property
    def snapshot_dir(self) -> Path:
        return self._generation_dir(self.generation)

    def _generation_dir(self, generation: int) -> Path:
        return self.folder / "index" / f"g{generation}"

    def _remove_stray_snapshots(self) -> None:
        """Everything under ``index/`` but the current generation's spaces' two files goes: superseded generations,
        snapshots of a switch that did not commit, temporary files of an interrupted write, the one index of a
        gallery from before the spaces (it is rebuilt)."""
        root = self.folder / "index"
        if not root.is_dir():
            return
        for p in root.iterdir():
            if p == self.snapshot_dir and p.is_dir():
                for q in p.iterdir():
                    if q.name in SPACES and q.is_dir():
                        for f in q.iterdir():
                            if f.name not in (INDEX_FILE, META_FILE):
                                _remove(f)
                    else:
                        _remove(q)
            else:
                _remove(p)

    def _empty(self) -> Indexes:
        return {space: VectorIndex(self.dim, space_kind(space, self.kind), space) for space in SPACES}

    def _model_changed(self, c: Conn | None = None) -> bool:
        return model_changed(self.store, self.model_version, self.dim, c)

    def _load(self) -> tuple[Indexes, int, bool]:
        """(indexes, change they were loaded at: -1 if built from the store, whether replayed changes deleted faces)."""
        if self._model_changed():  # the stored vectors are another model's: nothing to search until reembed
            self.applied = self.store.seq()
            return self._empty(), self.applied, False
        snap = self.snapshot_dir
        try:
            indexes: Indexes = {}
            seqs = set()
            for space in SPACES:
                indexes[space], seq = VectorIndex.load(snap / space, dim=self.dim, kind=space_kind(space, self.kind),
                                                       model_version=self.model_version, space=space)
                seqs.add(seq)
            if len(seqs) != 1:
                raise SnapshotError("the spaces' snapshots were taken at different changes")
            if seq > self.store.seq():
                raise SnapshotError("snapshot is newer than the store")
            if seq < self.store.pruned_through():
                raise SnapshotError("snapshot is older than the change log")
            rows = self.store.changes_after(seq)
            replay(indexes, rows, self.dim)
            self.applied = rows[-1].seq if rows else seq
            log.info("loaded index snapshots at change %d, replayed %d changes", seq, len(rows))
            return indexes, seq, any(r.op == DELETE for r in rows)
        except SnapshotError as e:
            if snap.exists():
                log.warning("index snapshot not used (%s): rebuilding from the store", e)
            indexes, self.applied = self._build_from_store()
            return indexes, -1, False  # -1: snapshot at the next opportunity

    def _build_from_store(self) -> tuple[Indexes, int]:
        """New indexes of every stored face, and the change counter they reflect. The rows are read in one short
        read transaction and indexed after it ends: a long read would hold off the WAL checkpoint that each
        delete waits for (an HNSW build of 1M faces takes minutes)."""
        parts: list[Placed] = []
        with self.store.read(consistent=True) as c:  # one read snapshot for rows + counter
            seq = self.store.seq(c)
            for batch in self.store.all_embeddings(c):
                if batch.vectors.shape[1] != self.dim:
                    parts = []
                    break  # a store awaiting re-embedding: leave the indexes empty
                parts.append(batch)
        return self._indexes_of(Placed.concat(parts, self.dim)), seq

    def _indexes_of(self, faces: Placed) -> Indexes:
        indexes = self._empty()
        for space, index in indexes.items():
            index.add(*faces.into(space))
        return indexes

    # --- following other replicas ---------------------------------------------------------------------
    def catch_up(self) -> int:
        generation = int(self.store.get_meta("generation") or 0)
        if generation != self.generation:  # another replica switched to a re-embedded generation
            if self._model_changed():
                log.error("the gallery was re-embedded with model %s; this replica serves %s: restart it with "
                          "that model", self.store.get_meta("model_version"), self.model_version)
                return 0
            with self.locks.writing():
                old = self.snapshot_dir
                self.generation = generation
                self.indexes, seq = self._build_from_store()
                self._advance(seq)
                self._snapshot_seq = -1
            _remove(old)
            return 0
        if self.applied < self.store.pruned_through():  # the log after our cursor was pruned: start again
            self.rebuild()
            return 0
        rows = self.store.changes_after(self.applied)
        if not rows:
            return 0
        with self.locks.mutex:
            with self.locks.rw.write():
                theirs = [r for r in rows if r.seq not in self._own]
                gone, placed = changes(theirs, self.dim)
                erased = list(dict.fromkeys(v for index in self.indexes.values() for v in index.vectors(gone)))
                apply_changes(self.indexes, gone, placed, idempotent=True)  # a naming re-adds a face it holds
                self._advance(rows[-1].seq)
            if erased:  # another replica's delete: its vectors leave this replica's snapshot too
                self.erase(gone, erased)
        self.maybe_rebuild()
        return len(theirs)

    def _advance(self, seq: int) -> None:
        """The index now holds every change up to ``seq`` (caller holds the write lock)."""
        self.applied = max(self.applied, seq)
        self._own = {s for s in self._own if s > self.applied}

    def _own_changes(self, seqs: list[int]) -> None:
        """This process's write is in the index (caller holds the write lock)."""
        if self.store.shared:
            self._own.update(seqs)
        elif seqs:  # the only writer: the log is applied up to its own last change
            self.applied = max(self.applied, max(seqs))

    # --- writes ----------------------------------------------------------------------------------------
    def staged(self, faces: Placed) -> None:
        """Nothing yet: this process's indexes show only what committed."""

    def added(self, faces: Placed, seqs: list[int]) -> None:
        for space, index in self.indexes.items():
            index.add(*faces.into(space))
        self._own_changes(seqs)

    def removed(self, ids: np.ndarray, seqs: list[int]) -> None:
        for index in self.indexes.values():
            index.remove(ids)
        self._own_changes(seqs)

    def erase(self, ids: np.ndarray, vectors: list[bytes]) -> None:
        """Overwrite these faces' vectors, every copy the indexes store, in the snapshot files."""
        for space, index in self.indexes.items():
            erase_from_snapshot(self.snapshot_dir / space, ids, vectors, index.stored_forms(vectors))

    # --- rebuilds and snapshots -----------------------------------------------------------------------
    def rebuild(self) -> None:
        with self.locks.writing():
            self.indexes, seq = self._build_from_store()
            self.applied, self._own = seq, set()
        self.snapshot(force=True)

    def compact(self) -> bool:
        """Nothing to do: each delete overwrote the vector in the index and its snapshot."""
        return False

    def maybe_rebuild(self) -> None:
        """HNSW: once tombstones pass a fraction, rebuild the graph in the background; the old graph
        (with tombstones filtered) keeps serving until the new one is swapped in."""
        if max(i.tombstone_fraction for i in self.indexes.values() if i.kind == "hnsw") < REBUILD_TOMBSTONE_FRACTION:
            return
        if self._rebuild_thread is not None and self._rebuild_thread.is_alive():
            return
        self._rebuild_thread = threading.Thread(target=self._background_rebuild, name="hnsw-rebuild", daemon=True)
        self._rebuild_thread.start()

    def _background_rebuild(self) -> None:
        try:
            fresh, seq = self._build_from_store()
            with self.locks.writing():
                if self._destroyed:
                    return
                rows = self.store.changes_after(seq)
                replay(fresh, rows, self.dim)
                self.indexes = fresh
                self._advance(rows[-1].seq if rows else seq)
            log.info("rebuilt the HNSW graphs (%s)", ", ".join(f"{s}: {i.live} faces" for s, i in fresh.items()))
        except (GalleryError, RuntimeError) as e:  # the old index keeps serving
            log.error("background HNSW rebuild failed: %s", e)

    def snapshot(self, *, force: bool = False) -> bool:
        if not force and time.monotonic() - self._snapshot_done < SNAPSHOT_SPACING * self._snapshot_took:
            return False
        return self._save(force=force)

    def _save(self, *, force: bool) -> bool:
        """Write the snapshot if the indexes changed since the last one (or ``force``); then prune the log."""
        if self._destroyed or self._model_changed():
            return False
        with self.locks.mutex, self.locks.rw.read():
            if self._destroyed:  # destroyed while this waited (the upkeep's snapshot beside a collection's delete)
                return False
            seq = self.applied
            if seq == self._snapshot_seq and not force:
                return False
            start = time.monotonic()
            for space, index in self.indexes.items():
                index.save(self.snapshot_dir / space, seq, self.model_version)
            self._snapshot_done = time.monotonic()
            self._snapshot_took = self._snapshot_done - start
        self.store.prune_changes(seq - self.store.keep_changes)
        self._snapshot_seq = seq
        return True

    # --- re-embedding's switch -------------------------------------------------------------------------
    def prepare_switch(self, c: Conn, faces: Placed, seq: int) -> int:
        """The new generation's snapshots are written beside the old ones before the switch commits (a switch that
        does not commit leaves a folder the next open removes)."""
        indexes = self._indexes_of(faces)
        generation = self.generation + 1
        for space, index in indexes.items():
            index.save(self._generation_dir(generation) / space, seq, self.model_version)
        self._pending = (indexes, generation, seq)
        return generation

    def switched(self, old_model: tuple[str | None, int]) -> None:
        assert self._pending is not None
        old_dir = self.snapshot_dir
        self.indexes, self.generation, seq = self._pending
        self._pending = None
        self._snapshot_seq = self.applied = seq
        self._own = set()
        _remove(old_dir)  # the old generation's vectors, and those of faces the switch dropped, were only there

    def destroy(self) -> None:
        """A deleted collection's (the caller holds the write lock): the indexes are closed without a snapshot, and
        none is taken later (the caller wipes the folder). A background rebuild under way is not waited for (it
        needs the write lock): it finds the keeper destroyed and drops its work."""
        self._destroyed = True
        for index in self.indexes.values():
            index.close()

    def close(self) -> None:
        if self._rebuild_thread is not None:
            self._rebuild_thread.join()
        try:
            self._save(force=False)  # whenever the last one was: the last chance to shorten the next start
        except StoreUnavailable as e:  # the snapshot only shortens the next start
            log.warning("no snapshot at close: %s", e)
        finally:
            for index in self.indexes.values():
                index.close()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
