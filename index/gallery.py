"""Gallery: identities and their faces in a store (the truth: SQLite, or PostgreSQL shared by replicas), searched
through a vector index derived from it (FAISS in this process, or a Milvus collection shared by every replica).

Writes commit to the store first, then update the index, under a write lock; searches hold a read lock,
so a search never sees a half-applied write, and every hit is checked against the store (a face another replica
deleted a moment ago is never returned). A FAISS index is snapshotted with the change-log position it reflects; on
open, a valid snapshot is loaded and the changes after it replayed, anything else is rebuilt from the store. On
PostgreSQL a thread follows the change log (NOTIFY wakes it, a poll every second is the fallback) and applies the
other replicas' writes; this process's own writes are applied before they are acknowledged. A Milvus collection
records in the store how far it has applied the change log; whoever applies it holds the store's write lock.

Generations: the faces' embeddings all come from one model, recorded in the store with a generation number;
the snapshot lives in ``index/g<generation>/``. :meth:`Gallery.reembed` embeds every face again with a new
model beside the current generation (resumable: progress is committed per batch), then switches in one
transaction and removes the old generation's snapshot (or Milvus collection).

Deletion leaves nothing behind in the embedded tier: the rows are overwritten by SQLite (``secure_delete``), the
WAL is checkpointed and truncated, and the face's vector is overwritten in the index snapshot before the call
returns (on PostgreSQL, in every replica's snapshot as it applies the delete); on open, stray files under
``index/`` are removed. What PostgreSQL and Milvus keep of deleted rows: :mod:`index.postgres`, :mod:`index.milvus`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from index import photo_queries
from index.changelog import apply_changes, changes, replay
from index.config import new_vectors, open_store
from index.errors import (
    Conflict,
    GalleryError,
    GalleryMismatch,
    InvalidKey,
    InvalidVector,
    NotFound,
    StoreUnavailable,
)
from index.locks import RWLock
from index.photos import Photos
from index.records import (
    FaceHit,
    FaceRecord,
    IdentityHit,
    IdentityRecord,
    NewFace,
    NewPhoto,
    ReembedReport,
    SearchResult,
    StoredCrop,
    face_record,
    identity_record,
    is_int64,
    similarity_to_distance,
    unit_vectors,
    validate_key,
)
from index.sqlite import read_export
from index.store import DELETE, Conn, FaceRow, Store
from index.vectors import Kind, SnapshotError, VectorIndex, Vectors, erase_from_snapshot

log = logging.getLogger(__name__)
REBUILD_TOMBSTONE_FRACTION = 0.1
FOLLOW_POLL_S = 1.0  # a replica reads the change log at least this often (NOTIFY wakes it sooner)


class Gallery:
    """Open (or create) the gallery in ``folder``: the store (``gallery.db``, or PostgreSQL at ``database_url``)
    and the FAISS index with its snapshot in ``index/g<generation>/``.

    ``dim`` and ``model_version`` must match what the store was written with, unless ``allow_mismatch``
    (then call :meth:`reembed` before searching or enrolling: until then the index is empty). On a shared store
    (PostgreSQL) a thread follows the other replicas' writes through the change log.
    """

    def __init__(self, folder: Path, *, dim: int, model_version: str, kind: Kind = "exact",
                 allow_mismatch: bool = False, database_url: str | None = None, pool_size: int = 8,
                 vector_url: str | None = None, milvus_index: str = "FLAT") -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        self.model_version = model_version
        self.kind: Kind = kind
        self.vector_url, self.milvus_index = vector_url, milvus_index
        self.store: Store = open_store(self.folder, database_url, pool_size)
        self._lock = RWLock()
        self._write_mutex = threading.Lock()  # serialises writers before they queue for the RW lock
        self._rebuild_thread: threading.Thread | None = None
        self._follower: threading.Thread | None = None
        self._closing = threading.Event()
        # the change log is applied up to _applied; on a shared store, this replica's own later changes are in
        # the index already and listed in _own, so that following the log skips them
        self._applied = 0
        self._own: set[int] = set()
        try:
            self._check_meta(allow_mismatch)
            self.generation = int(self.store.get_meta("generation") or 0)
            self._remove_stray_snapshots()
            self.index = self._load_index()
            self._snapshot_seq = self._loaded_seq
            if self._replayed_deletes:  # a kill after a delete committed, before its vector left the snapshot
                self.snapshot(force=True)
            self.store.erase_deleted()
        except BaseException:
            if getattr(self, "index", None) is not None:
                self.index.close()
            self.store.close()
            raise
        self.photos = Photos(self)
        if self.store.shared or self.index.shared:
            self._follower = threading.Thread(target=self._follow, name="gallery-follower", daemon=True)
            self._follower.start()

    @property
    def snapshot_dir(self) -> Path:
        return self.folder / "index" / f"g{self.generation}"

    def _remove_stray_snapshots(self) -> None:
        """Everything under ``index/`` but the current generation's two files goes: superseded generations,
        snapshots of a switch that did not commit, temporary files of an interrupted write."""
        root = self.folder / "index"
        if not root.is_dir():
            return
        for p in root.iterdir():
            if p == self.snapshot_dir and p.is_dir():
                for q in p.iterdir():
                    if q.name not in ("vectors.faiss", "meta.json"):
                        _remove(q)
            else:
                _remove(p)

    # --- opening ---------------------------------------------------------------------------------------
    def _check_meta(self, allow_mismatch: bool) -> None:
        with self.store.transaction() as c:  # replicas starting together: one writes the meta, the others read it
            dim, version = self.store.get_meta("dim", c), self.store.get_meta("model_version", c)
            if dim is None:
                self.store.set_meta(c, "dim", str(self.dim))
                self.store.set_meta(c, "model_version", self.model_version)
                return
        if (int(dim) != self.dim or version != self.model_version) and not allow_mismatch:
            raise GalleryMismatch(
                f"gallery {self.location} was written by model {version} ({dim}-d embeddings); this encoder is "
                f"{self.model_version} ({self.dim}-d). Re-embed it from its stored crops (`facesearch gallery "
                f"reembed`, or start with FACESEARCH_REEMBED=auto), or serve it with the model that made it "
                f"(FACESEARCH_CHECKPOINT)."
            )

    @property
    def location(self) -> str:
        """Where the truth lives, for messages (never with a password)."""
        return "in PostgreSQL" if self.store.shared else str(self.folder)

    def _needs_reembed(self, c: Conn | None = None) -> bool:
        return self.store.get_meta("model_version", c) != self.model_version or \
            int(self.store.get_meta("dim", c) or 0) != self.dim

    @property
    def needs_reembed(self) -> bool:
        return self._needs_reembed()

    def stored_model(self) -> tuple[str | None, int]:
        """(model version, dimension) the stored embeddings were made with."""
        return self.store.get_meta("model_version"), int(self.store.get_meta("dim") or 0)

    def _new_index(self, model_version: str | None = None) -> Vectors:
        """An empty index of this gallery's kind; Milvus: the model's collection (created if missing)."""
        return new_vectors(self.dim, model_version or self.model_version, self.kind, self.vector_url,
                           self.milvus_index)

    def _load_index(self) -> Vectors:
        snap = self.snapshot_dir
        self._replayed_deletes = False
        if self.vector_url:  # the engine keeps the vectors: bring them up to the change log
            self.index = self._new_index()
            if not self.needs_reembed:
                self._consume()
            self._loaded_seq = self._applied
            return self.index
        if self.needs_reembed:  # the stored vectors are another model's: nothing to search until reembed
            self._applied = self._loaded_seq = self.store.seq()
            return VectorIndex(self.dim, self.kind)
        try:
            index, seq = VectorIndex.load(snap, dim=self.dim, kind=self.kind, model_version=self.model_version)
            if seq > self.store.seq():
                raise SnapshotError("snapshot is newer than the store")
            if seq < self.store.pruned_through():
                raise SnapshotError("snapshot is older than the change log")
            rows = self.store.changes_after(seq)
            replay(index, rows)
            self._replayed_deletes = any(op == DELETE for _, _, op, _ in rows)
            self._loaded_seq = seq
            self._applied = rows[-1][0] if rows else seq
            log.info("loaded index snapshot at change %d, replayed %d changes", seq, len(rows))
            return index
        except SnapshotError as e:
            if snap.exists():
                log.warning("index snapshot not used (%s): rebuilding from the store", e)
            index, seq = self._build_from_store()
            self._applied = seq
            self._loaded_seq = -1  # force a snapshot at the next opportunity
            return index

    def _build_from_store(self) -> tuple[VectorIndex, int]:
        """A new index of every stored face, and the change counter it reflects. The rows are read in one short
        read transaction and indexed after it ends: a long read would hold off the WAL checkpoint that each
        delete waits for (an HNSW build of 1M faces takes minutes)."""
        ids: list[np.ndarray] = []
        vecs: list[np.ndarray] = []
        with self.store.read(consistent=True) as c:  # one read snapshot for rows + counter
            seq = self.store.seq(c)
            for batch_ids, blob in self.store.all_embeddings(c):
                v = np.frombuffer(blob, dtype=np.float32).reshape(len(batch_ids), -1)
                if v.shape[1] != self.dim:
                    ids, vecs = [], []
                    break  # a store awaiting re-embedding: leave the index empty
                ids.append(np.array(batch_ids, dtype=np.int64))
                vecs.append(v)
        index = VectorIndex(self.dim, self.kind)
        if ids:
            index.add(np.concatenate(ids), np.concatenate(vecs))
        return index, seq

    @property
    def applied_change(self) -> int:
        """The change log is applied to this process's index up to this sequence number."""
        return self._applied

    # --- following other replicas ---------------------------------------------------------------------
    def _follow(self) -> None:
        while not self._closing.is_set():
            try:
                self.catch_up()
                self.store.wait_for_changes(FOLLOW_POLL_S)
            except StoreUnavailable as e:
                log.warning("following the change log: %s", e)
                self._closing.wait(FOLLOW_POLL_S)
            except Exception:  # keep following; the next round reads the log again from the same cursor
                log.exception("following the change log failed")
                self._closing.wait(FOLLOW_POLL_S)

    def catch_up(self) -> int:
        """Apply the changes other processes committed after this replica's cursor; returns how many."""
        if self.index.shared:
            return self._consume()
        generation = int(self.store.get_meta("generation") or 0)
        if generation != self.generation:  # another replica switched to a re-embedded generation
            if self.needs_reembed:
                log.error("the gallery was re-embedded with model %s; this replica serves %s: restart it with "
                          "that model", self.stored_model()[0], self.model_version)
                return 0
            with self._writing():
                old = self.snapshot_dir
                self.generation = generation
                self.index, seq = self._build_from_store()
                self._advance(seq)
                self._snapshot_seq = -1
            _remove(old)
            return 0
        if self._applied < self.store.pruned_through():  # the log after our cursor was pruned: start again
            self.rebuild_index()
            return 0
        rows = self.store.changes_after(self._applied)
        if not rows:
            return 0
        with self._write_mutex:
            with self._lock.write():
                theirs = [r for r in rows if r[0] not in self._own]
                gone, add_ids, add_vecs = changes(theirs)
                erased = self.index.vectors(gone)
                apply_changes(self.index, gone, add_ids, add_vecs)
                self._advance(rows[-1][0])
            if erased:  # another replica's delete: its vectors leave this replica's snapshot too
                self._erase_snapshot(erased)
        self._maybe_rebuild()
        return len(theirs)

    def _cursor_key(self) -> str:
        return f"vectors_applied:{self.index.name}"

    def _consume(self, *, reindex: bool = False) -> int:
        """Shared vector index (Milvus): apply the change log after the cursor the store keeps for it, under the
        store's write lock, so no write of another replica interleaves: a face deleted meanwhile is never upserted
        again. Rebuilds the collection from the store when the cursor is missing, pruned past or ahead of the log,
        or when asked. Returns how many changes were applied."""
        if self.needs_reembed:
            return 0
        key = self._cursor_key()
        with self._write_mutex, self.store.transaction() as c:
            cursor = int(self.store.get_meta(key, c) or -1)
            seq = self.store.seq(c)
            if reindex or cursor < 0 or cursor < self.store.pruned_through(c) or cursor > seq:
                t0 = time.monotonic()
                self.index.reset()
                for ids, blob in self.store.all_embeddings(c):
                    self.index.add(np.array(ids, dtype=np.int64),
                                   np.frombuffer(blob, dtype=np.float32).reshape(len(ids), -1))
                self.index.flush()
                self.store.set_meta(c, key, str(seq))
                log.info("re-indexed %s from the store in %.1f s", key, time.monotonic() - t0)
                self._applied = seq
                return 0
            rows = self.store.changes_after(cursor, c)
            if rows:
                apply_changes(self.index, *changes(rows))
                self.store.set_meta(c, key, str(rows[-1][0]))
            self._applied = rows[-1][0] if rows else cursor
            return len(rows)

    def _advance(self, seq: int) -> None:
        """The index now holds every change up to ``seq`` (caller holds the write lock)."""
        self._applied = max(self._applied, seq)
        self._own = {s for s in self._own if s > self._applied}

    def _applied_own(self, seqs: list[int]) -> None:
        """This process's write is in the index (caller holds the write lock)."""
        if self.index.shared:  # the shared cursor moves only by applying the log in order (_consume)
            return
        if self.store.shared:
            self._own.update(seqs)
        elif seqs:  # the only writer: the log is applied up to its own last change
            self._applied = max(self._applied, max(seqs))

    # --- snapshots -------------------------------------------------------------------------------------
    def snapshot(self, *, force: bool = False) -> bool:
        """Write the index snapshot if the store changed since the last one; prune the change log."""
        if self.needs_reembed:
            return False
        if not isinstance(self.index, VectorIndex):  # the engine persists it; the log is kept back to its cursor
            self.store.prune_changes(self._applied - self.store.keep_changes)
            return False
        with self._write_mutex, self._lock.read():
            seq = self._applied
            if seq == self._snapshot_seq and not force:
                return False
            self.index.save(self.snapshot_dir, seq, self.model_version)
        self.store.prune_changes(seq - self.store.keep_changes)
        self._snapshot_seq = seq
        return True

    def close(self) -> None:
        self._closing.set()
        if self._follower is not None:
            self._follower.join()
        if self._rebuild_thread is not None:
            self._rebuild_thread.join()
        try:
            self.snapshot()
        except StoreUnavailable as e:  # the snapshot only shortens the next start
            log.warning("no snapshot at close: %s", e)
        finally:
            self.index.close()
            self.store.close()

    # --- writes ----------------------------------------------------------------------------------------
    @contextmanager
    def _writing(self) -> Iterator[None]:
        with self._write_mutex, self._lock.write():
            yield

    def _check_vectors(self, faces: Sequence[NewFace]) -> np.ndarray:
        return unit_vectors(faces, self.dim)

    def add_faces(self, identity: str, faces: Sequence[NewFace], *, metadata: dict[str, Any] | None = None
                  ) -> list[int]:
        """Add faces to an identity (created if new), atomically. Returns the new face ids."""
        return self.add_many([(identity, f) for f in faces], metadata={identity: metadata} if metadata else None)

    def add_many(self, items: Sequence[tuple[str | None, NewFace]], *,
                 metadata: dict[str, dict[str, Any]] | None = None, actor: str | None = None,
                 photo: NewPhoto | None = None, cluster_within: float | None = None) -> list[int]:
        """Add faces of one or more identities in one transaction (all or none). Returns face ids in order.

        ``photo``: the faces are that photo's (stored with it; Conflict if its key exists); a face with identity
        None is nobody's yet and, with ``cluster_within`` (a distance), joins the cluster of its nearest unnamed
        face that close, else starts its own."""
        if photo is None and any(key is None for key, _ in items):
            raise InvalidKey("identity must not be blank")
        items = [(None if key is None else validate_key(key), f) for key, f in items]
        vecs = self._check_vectors([f for _, f in items]) if items else np.zeros((0, self.dim), np.float32)
        rows = [(key, FaceRow(v.tobytes(), json.dumps([float(x) for x in f.box]) if f.box is not None else None,
                              f.score, f.sha256, f.thumbnail, f.source,
                              json.dumps(f.source_geometry) if f.source_geometry is not None else None))
                for (key, f), v in zip(items, vecs, strict=True)]
        with self._writing():
            with self.store.transaction() as c:
                # inside the transaction: another process (a reembed) may have switched the model meanwhile
                if self._needs_reembed(c):
                    raise GalleryMismatch("gallery awaits re-embedding with the current model")
                if photo is not None:
                    pid = photo_queries.insert_photo(self.store, c, photo)
                    if pid is None:
                        raise Conflict(f"photo {photo.key!r} already exists")
                    rows = [(k, dataclasses.replace(r, photo_id=pid)) for k, r in rows]
                ids, seqs = self.store.add_faces(c, rows, self.model_version, metadata, actor) if rows else ([], [])
                if photo is not None:
                    self.store.audit(c, "index_photo", actor=actor, face_ids=ids, photo=photo.key)
                    if cluster_within is not None:
                        unnamed = [n for n, (k, _) in enumerate(rows) if k is None]
                        self._join_clusters(c, [ids[n] for n in unnamed], vecs[unnamed], cluster_within)
                if self.index.shared and ids:  # under the store's write lock: no delete of another replica overtakes
                    self.index.add(np.array(ids, dtype=np.int64), vecs)
            if not self.index.shared and ids:  # this process's own index shows only what committed
                self.index.add(np.array(ids, dtype=np.int64), vecs)
            self._applied_own(seqs)
        return ids

    def _join_clusters(self, c: Conn, ids: list[int], vecs: np.ndarray, within: float) -> None:
        """New unnamed faces (not yet in the index) join their nearest unnamed neighbour's cluster when it is
        ``within`` that distance, else start their own; faces of the same photo never share one."""
        if not ids:
            return
        sims, nbrs = self.index.search(vecs, 8) if self.index.live else \
            (np.zeros((len(ids), 0), np.float32), np.zeros((len(ids), 0), np.int64))
        near = photo_queries.unnamed_clusters(c, sorted({int(i) for i in nbrs.ravel() if i >= 0}))
        taken: set[int] = set()
        assignment = []
        for n, face_id in enumerate(ids):
            cluster = face_id
            for s, i in zip(sims[n], nbrs[n], strict=True):
                k = near.get(int(i))
                if k is not None and k not in taken and float(similarity_to_distance(s)) <= within:
                    cluster = k
                    break
            taken.add(cluster)
            assignment.append((face_id, cluster))
        photo_queries.set_clusters(c, assignment)

    def _delete(self, select: Callable[[Conn], list[int]], event: str, actor: str | None, *,
                finish: Callable[[Conn], None] | None = None, identity: str | None = None,
                **detail: object) -> list[int]:
        """Delete the faces ``select`` picks (it raises NotFound), then run ``finish`` (deleting the rows that
        held them), in one write transaction; returns the face ids. When it returns, no file under the gallery's
        folder holds their embeddings or crops (the audit keeps the event, without face data)."""
        with self._write_mutex:
            with self._lock.write():
                with self.store.transaction() as c:
                    ids = select(c)
                    vectors, seqs = self.store.delete_faces(c, ids, event=event, actor=actor, **detail)
                    if not ids:
                        self.store.audit(c, event, actor=actor, identity=identity, face_ids=[], **detail)
                    if finish is not None:
                        finish(c)
                self.index.remove(np.array(ids, dtype=np.int64))
                self._applied_own(seqs)
            self._erase(vectors)
        self._maybe_rebuild()
        return ids

    def delete_face(self, face_id: int, *, actor: str | None = None) -> str | None:
        """Delete one face; returns its identity (None: a photo's unnamed face). An identity left without faces
        is kept. When it returns, no file under the gallery's folder holds the face's embedding or crops."""
        owner: list[str | None] = []

        def select(c: Conn) -> list[int]:
            row = self.store.face_owner(c, int(face_id)) if is_int64(face_id) else None
            if row is None:
                raise NotFound(f"face {face_id} not found")
            owner.append(row[0])
            return [int(face_id)]

        self._delete(select, "delete_face", actor)
        return owner[0]

    def delete_identity(self, identity: str, *, actor: str | None = None) -> int:
        """Delete an identity with all its faces (those found in photos too); returns how many faces went. When it
        returns, no file under the gallery's folder holds their embeddings or crops (the audit keeps the event)."""
        ident: list[int] = []

        def select(c: Conn) -> list[int]:
            i = self.store.identity_id(c, identity)
            if i is None:
                raise NotFound(f"identity {identity!r} not found")
            ident.append(i)
            return self.store.identity_face_ids(c, i)

        return len(self._delete(select, "delete_identity", actor, identity=identity,
                                finish=lambda c: self.store.delete_identity_row(c, ident[0])))

    def _erase(self, vectors: list[bytes]) -> None:
        """After a delete committed (caller holds the write mutex, so no snapshot is being written): overwrite
        the vectors in the current snapshot and let the store drop its copies of the rows."""
        self._erase_snapshot(vectors)
        self.store.erase_deleted()

    def _erase_snapshot(self, vectors: list[bytes]) -> None:
        """Overwrite these vectors, in every form this process's index stores them, in its snapshot file."""
        if isinstance(self.index, VectorIndex):  # a shared index has no snapshot here
            erase_from_snapshot(self.snapshot_dir, self.index.stored_forms(vectors))

    def update_identity(self, identity: str, *, new_key: str | None = None,
                        metadata: dict[str, Any] | None = None, actor: str | None = None) -> IdentityRecord:
        """Rename and/or replace the metadata of an identity."""
        if new_key is not None:
            new_key = validate_key(new_key)
        with self._writing(), self.store.transaction() as c:
            ident = self.store.identity_id(c, identity)
            if ident is None:
                raise NotFound(f"identity {identity!r} not found")
            if new_key is not None and new_key != identity:
                if self.store.identity_id(c, new_key) is not None:
                    raise Conflict(f"identity {new_key!r} already exists")
                self.store.rename_identity(c, ident, new_key)
                self.store.audit(c, "rename", actor=actor, identity=new_key, previous=identity)
            if metadata is not None:
                self.store.set_identity_metadata(c, ident, metadata)
                self.store.audit(c, "update_metadata", actor=actor, identity=new_key or identity)
        return self.get_identity(new_key if new_key is not None else identity)

    def merge_identities(self, into: str, other: str, *, actor: str | None = None) -> IdentityRecord:
        """Every face of ``other`` becomes ``into``'s and ``other`` is deleted (its metadata with it); audited."""
        with self._writing(), self.store.transaction() as c:
            a, b = self.store.identity_id(c, into), self.store.identity_id(c, other)
            if a is None or b is None:
                raise NotFound(f"identity {into if a is None else other!r} not found")
            if a == b:
                raise Conflict("an identity cannot be merged into itself")
            moved = self.store.identity_face_ids(c, b)
            photo_queries.name_faces(c, moved, a)
            self.store.delete_identity_row(c, b)
            self.store.audit(c, "merge_identities", actor=actor, identity=into, face_ids=moved, merged=other)
        return self.get_identity(into)

    # --- reads -----------------------------------------------------------------------------------------
    def count(self) -> tuple[int, int]:
        """(identities, faces)."""
        return self.store.count()

    def get_identity(self, identity: str) -> IdentityRecord:
        row = self.store.get_identity(identity)
        if row is None:
            raise NotFound(f"identity {identity!r} not found")
        return identity_record(row)

    def list_identities(self, *, limit: int = 50, offset: int = 0, prefix: str = ""
                        ) -> tuple[list[IdentityRecord], int]:
        """Identities ordered by key, optionally those starting with ``prefix``; returns (page, total)."""
        rows, total = self.store.list_identities(limit, offset, prefix)
        return [identity_record(r) for r in rows], total

    def list_faces(self, identity: str, *, limit: int = 100, offset: int = 0) -> tuple[list[FaceRecord], int]:
        page = self.store.list_faces(identity, limit, offset)
        if page is None:
            raise NotFound(f"identity {identity!r} not found")
        return [face_record(r) for r in page[0]], page[1]

    def get_face(self, face_id: int) -> FaceRecord:
        row = self.store.get_face(int(face_id)) if is_int64(face_id) else None
        if row is None:
            raise NotFound(f"face {face_id} not found")
        return face_record(row)

    def thumbnail(self, face_id: int) -> bytes:
        exists, data = self.store.face_column(int(face_id), "thumbnail") if is_int64(face_id) else (False, None)
        if data is None:
            raise NotFound(f"face {face_id} has no thumbnail" if exists else f"face {face_id} not found")
        return data

    def faces_with_sha256(self, sha256: str) -> list[FaceRecord]:
        return [face_record(r) for r in self.store.faces_with_sha256(sha256)]

    def embeddings(self, identity: str) -> tuple[np.ndarray, np.ndarray]:
        """(face ids int64 (n,), embeddings float32 (n, D)) of one identity."""
        rows = self.store.identity_embeddings(identity)
        if rows is None:
            raise NotFound(f"identity {identity!r} not found")
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        vecs = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows]) if rows else \
            np.zeros((0, self.dim), np.float32)
        return ids, vecs

    # --- search ----------------------------------------------------------------------------------------
    def ping(self) -> None:
        """Raises StoreUnavailable when the store does not answer."""
        self.store.ping()

    @property
    def searchable_faces(self) -> int:
        """How many identities' faces a search compares against (what the search threshold is calibrated for);
        photos' unnamed faces are not searched for identities."""
        with self.store.read() as c:
            return max(0, self.index.live - photo_queries.count_unnamed(c))

    def search(self, queries: np.ndarray, *, k: int = 5, k_faces: int | None = None,
               threshold: float | None = None) -> list[SearchResult]:
        """For each query (float32 (n, D), L2-normalised): the top faces and the top-k identities.

        Identities are scored by their best face. ``threshold`` (a distance) marks each identity hit
        as a match or not. An empty gallery gives empty results. Hits are checked against the store: a face
        deleted by another replica a moment ago is never returned.
        """
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise InvalidVector(f"queries must have shape (n, {self.dim})")
        if not np.isfinite(q).all():
            raise InvalidVector("query contains NaN or inf")
        norms = np.linalg.norm(q, axis=1, keepdims=True)
        q = q / np.maximum(norms, 1e-12)
        k = max(1, int(k))
        k_faces = max(1, int(k_faces or k))
        fetch = max(k_faces, 4 * k, 32)  # enough faces to fill k distinct identities in most galleries
        with self._lock.read():
            while True:
                sims, ids = self.index.search(q, fetch)
                owner = self.store.owners(sorted({int(i) for i in ids.ravel() if i >= 0}))
                # photos' unnamed faces are in the index too: look further while they crowd out identities
                short = any(sum(int(i) in owner for i in row) < k_faces and (row >= 0).all() for row in ids)
                if not short or fetch >= self.index.live:
                    break
                fetch *= 4
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

    # --- maintenance -----------------------------------------------------------------------------------
    def verify(self) -> dict[str, Any]:
        """Compare the index with the store: ids on both sides."""
        with self._lock.read():
            index_ids = self.index.ids()
            store_ids = np.array(self.store.face_ids(), dtype=np.int64)
            missing = np.setdiff1d(store_ids, index_ids)
            extra = np.setdiff1d(index_ids, store_ids)
        return {"faces_in_store": int(len(store_ids)), "faces_in_index": int(len(index_ids)),
                "missing_from_index": missing[:20].tolist(), "extra_in_index": extra[:20].tolist(),
                "ok": not len(missing) and not len(extra)}

    def rebuild_index(self) -> None:
        """Rebuild the index from the store now (blocking writes meanwhile) and snapshot it."""
        if self.index.shared:
            self._consume(reindex=True)
            return
        with self._writing():
            self.index, seq = self._build_from_store()
            self._applied, self._own = seq, set()
        self.snapshot(force=True)

    def compact(self) -> dict[str, Any]:
        """Rewrite everything that keeps deleted faces' bytes in free space: the store's tables and log
        (:meth:`Store.compact`), and a shared Milvus collection, dropped and filled again from the store (the only
        way Milvus Lite lets go of deleted vectors' files). This process's FAISS index and snapshot already
        overwrote them at each delete."""
        with self._writing():
            store = self.store.compact()
        if self.index.shared:
            self.rebuild_index()
        return {"store": store, "index": {"kind": self.index.kind, "rebuilt": self.index.shared,
                                          "faces": self.index.live}}

    def _maybe_rebuild(self) -> None:
        """HNSW: once tombstones pass a fraction, rebuild the graph in the background; the old graph
        (with tombstones filtered) keeps serving until the new one is swapped in."""
        if self.index.kind != "hnsw" or self.index.tombstone_fraction < REBUILD_TOMBSTONE_FRACTION:
            return
        if self._rebuild_thread is not None and self._rebuild_thread.is_alive():
            return
        self._rebuild_thread = threading.Thread(target=self._background_rebuild, name="hnsw-rebuild", daemon=True)
        self._rebuild_thread.start()

    def _background_rebuild(self) -> None:
        try:
            fresh, seq = self._build_from_store()
            with self._writing():
                rows = self.store.changes_after(seq)
                replay(fresh, rows)
                self.index = fresh
                self._advance(rows[-1][0] if rows else seq)
            log.info("rebuilt the HNSW graph (%d faces)", fresh.live)
        except (GalleryError, RuntimeError) as e:  # the old index keeps serving
            log.error("background HNSW rebuild failed: %s", e)

    # --- re-embedding --------------------------------------------------------------------------------
    def reembed_status(self) -> dict[str, Any] | None:
        """Progress of a re-embedding under way (in this or another process), or None."""
        target = self.store.get_meta("reembed_target")
        if target is None:
            return None
        done, total = self.store.reembed_progress()
        return {"target_model": json.loads(target)[0], "done": done, "total": total}

    def reembed(self, embed: Callable[[list[StoredCrop]], list[np.ndarray | None]], *, batch: int = 64,
                progress: Callable[[int, int], None] | None = None, drop_unrecoverable: bool = False,
                actor: str | None = None) -> ReembedReport:
        """Embed every face again with this gallery's model (``model_version``, ``dim``) into a new generation.

        ``embed(crops) -> one float32 (D,) vector per crop, None where no stored crop serves the model`` is
        the model side's. Each batch commits on its own, so enrollment and deletion go on meanwhile and a run
        killed at any point resumes where it stopped. When every face has its new vector, one transaction
        swaps the embeddings in, records the generation and drops the old generation's snapshot. Faces with
        no usable crop block the switch and are reported, unless ``drop_unrecoverable`` deletes them.
        """
        t0 = time.monotonic()
        target = json.dumps([self.model_version, self.dim])
        total = self.count()[1]
        if not self.needs_reembed:
            return ReembedReport(self.model_version, total, 0, [], False, self.generation, 0.0)
        with self._write_mutex, self.store.transaction() as c:
            if self.store.start_reembed(c, target):  # a new run (or a run for another model)
                self.store.audit(c, "reembed_started", actor=actor, to_model=self.model_version,
                                 from_model=self.store.get_meta("model_version", c))
        while True:
            while rows := self.store.pending_reembed(batch):
                crops = [StoredCrop(int(r[0]), r[1], None if r[2] is None else bytes(r[2]),
                                    json.loads(r[3]) if r[3] else None, None if r[4] is None else bytes(r[4]))
                         for r in rows]
                vecs = embed(crops)
                new = [(int(r[0]), None if v is None else self._check_vectors([NewFace(v)])[0].tobytes())
                       for r, v in zip(rows, vecs, strict=True)]
                with self._write_mutex, self.store.transaction() as w:  # skipped if the face went meanwhile
                    self.store.save_reembedded(w, new)
                if progress is not None:
                    progress(*self.store.reembed_progress())
            report = self._switch(drop_unrecoverable, actor)
            if report is not None:
                report.seconds = time.monotonic() - t0
                return report

    def _switch(self, drop_unrecoverable: bool, actor: str | None) -> ReembedReport | None:
        """Swap the new embeddings in, atomically; None if faces were enrolled since the last batch."""
        with self._writing():
            with self.store.transaction() as c:
                if self.store.unembedded(c):
                    return None
                unrecoverable = self.store.unrecoverable(c)
                total = self.store.count_faces(c)
                if unrecoverable and not drop_unrecoverable:
                    return ReembedReport(self.model_version, total, total - len(unrecoverable), unrecoverable,
                                         False, self.generation, 0.0)
                self.store.delete_faces(c, [i for i, _ in unrecoverable], event="delete_face", actor=actor,
                                        reason="no crop to re-embed")
                rows = self.store.reembedded(c)
                old_model = (self.store.get_meta("model_version", c), int(self.store.get_meta("dim", c) or 0))
                index = self.index if self.index.shared else VectorIndex(self.dim, self.kind)
                if self.index.shared:  # this model's collection, filled from scratch
                    index.reset()
                if rows:
                    index.add(np.array([r[0] for r in rows], dtype=np.int64),
                              np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1))
                old_dir, generation, seq = self.snapshot_dir, self.generation + 1, self.store.seq(c)
                if isinstance(index, VectorIndex):
                    # the new generation's snapshot is written beside the old one before the switch commits
                    index.save(self.folder / "index" / f"g{generation}", seq, self.model_version)
                else:
                    self.store.set_meta(c, self._cursor_key(), str(seq))
                previous = self.store.switch_embeddings(c, self.model_version, self.dim, generation, len(rows))
                self.store.audit(c, "reembed", actor=actor, from_model=previous, to_model=self.model_version,
                                 generation=generation, faces=len(rows))
            self.generation, self.index, self._snapshot_seq = generation, index, seq
            self._applied, self._own = seq, set()
        _remove(old_dir)  # the dropped faces' old vectors were only there
        if old_model[0] is not None:
            self.index.drop_collection_of(old_model[0], old_model[1])
        self.store.erase_deleted()
        return ReembedReport(self.model_version, total, len(rows), unrecoverable, True, generation, 0.0)

    def generations(self) -> list[dict[str, Any]]:
        return [{"generation": r[0], "model_version": r[1], "dim": r[2], "faces": r[3], "switched_at": r[4]}
                for r in self.store.generations()]

    # --- subject access and audit ---------------------------------------------------------------------
    def identity_export(self, identity: str) -> tuple[IdentityRecord, Iterator[dict[str, Any]]]:
        """Everything stored about one identity: its record and, lazily, each face (:meth:`export_faces`)."""
        record = self.get_identity(identity)
        with self.store.read() as c:
            ident = self.store.identity_id(c, identity)
            ids = self.store.identity_face_ids(c, ident) if ident is not None else []
        return record, self.export_faces(ids)

    def export_faces(self, ids: list[int]) -> Iterator[dict[str, Any]]:
        """Each face with its crops and embedding (subject access). The faces are read one query each, so the
        iterator may be consumed from any thread; a face deleted meanwhile is skipped."""
        for face_id in ids:
            r = self.store.export_face(face_id)
            if r is None:
                continue
            yield {"face_id": int(r[0]), "model_version": r[1], "box": json.loads(r[2]) if r[2] else None,
                   "detection_score": r[3], "sha256": r[4], "created_at": r[5],
                   "source_geometry": json.loads(r[6]) if r[6] else None,
                   "embedding": np.frombuffer(bytes(r[7]), dtype=np.float32).tolist(),
                   "chip": None if r[8] is None else bytes(r[8]), "source": None if r[9] is None else bytes(r[9])}

    def audit_log(self, *, since: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """Audit lines with seq > ``since``, oldest first."""
        return [{"seq": int(r[0]), "at": r[1], "event": r[2], "actor": r[3], "identity": r[4],
                 "face_ids": json.loads(r[5]), "detail": json.loads(r[6])}
                for r in self.store.audit_log(int(since), int(limit))]

    def record_audit(self, event: str, *, actor: str | None = None, identity: str | None = None,
                     face_ids: list[int] | None = None, **detail: object) -> None:
        """An audit line for an event that writes nothing else (an export)."""
        with self._write_mutex, self.store.transaction() as c:
            self.store.audit(c, event, actor=actor, identity=identity, face_ids=face_ids, **detail)

    def export(self, path: Path) -> None:
        """Write the whole gallery (identities, faces, embeddings, crops) to one SQLite file."""
        self.store.export_to(Path(path), self.dim, self.model_version)

    def import_(self, path: Path) -> tuple[int, int]:
        """Merge an exported gallery: identities by key, faces not already present (same identity and
        image hash). Returns (identities touched, faces added)."""
        try:
            meta, idents, rows = read_export(Path(path))
        except sqlite3.DatabaseError as e:
            raise GalleryMismatch(f"not a FaceSearch gallery export: {e}") from e
        if int(meta.get("dim", 0)) != self.dim or meta.get("model_version") != self.model_version:
            raise GalleryMismatch(f"export was made by model {meta.get('model_version')} "
                                  f"({meta.get('dim')}-d); this gallery uses {self.model_version}")
        have = self.store.identity_sha256s()
        items = []
        for ident_id, emb, box, score, sha, thumb, source, geometry in rows:
            key = idents[ident_id][0]
            if sha is not None and (key, sha) in have:
                continue
            items.append((key, NewFace(np.frombuffer(emb, dtype=np.float32), json.loads(box) if box else None,
                                       score, sha, thumb, source, json.loads(geometry) if geometry else None)))
        if items:
            self.add_many(items, metadata={k: m for k, m in idents.values() if m})
        return len({k for k, _ in items}), len(items)

    def stats(self) -> dict[str, Any]:
        identities, faces = self.count()
        with self.store.read() as c:
            photos, unnamed = photo_queries.count_photos(c), photo_queries.count_unnamed(c)
        return {"identities": identities, "faces": faces, "photos": photos, "unnamed_faces": unnamed,
                "index_kind": self.index.kind,
                "indexed": self.index.live, "dim": self.dim, "model_version": self.model_version,
                "stored_model_version": self.stored_model()[0], "generation": self.generation,
                "reembed": self.reembed_status(), "store": "postgresql" if self.store.shared else "sqlite",
                "db_bytes": self.store.size_bytes(), "change_counter": self.store.seq(),
                "applied_change": self._applied}


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
