"""Gallery: identities and their faces in SQLite (truth), searched through a derived FAISS index.

Writes commit to SQLite first, then update the index, under a write lock; searches hold a read lock,
so a search never sees a half-applied write. The index is snapshotted with the store's change
counter; on open, a valid snapshot is loaded and the changes after it replayed, anything else is
rebuilt from the store.

Generations: the faces' embeddings all come from one model, recorded in the store with a generation number;
the snapshot lives in ``index/g<generation>/``. :meth:`Gallery.reembed` embeds every face again with a new
model beside the current generation (resumable: progress is committed per batch), then switches in one
transaction and removes the old generation's snapshot.

Deletion leaves nothing behind: the rows are overwritten by SQLite (``secure_delete``), the WAL is
checkpointed and truncated, and the face's vector is overwritten in the index snapshot before the
call returns; on open, stray files under ``index/`` are removed.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from index.errors import Conflict, GalleryMismatch, InvalidKey, InvalidVector, NotFound
from index.store import ADD, DELETE, Store
from index.vectors import Kind, SnapshotError, VectorIndex, erase_from_snapshot

log = logging.getLogger(__name__)
MAX_KEY_LEN = 128
REBUILD_TOMBSTONE_FRACTION = 0.1


def validate_key(key: object) -> str:
    """Identity keys: 1-128 printable characters (any language)."""
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LEN or not key.isprintable():
        raise InvalidKey("identity must be 1-128 printable characters")
    return key


def similarity_to_distance(sim: np.ndarray | float) -> np.ndarray:
    """Cosine similarity of unit vectors -> Euclidean distance (0..2)."""
    return np.sqrt(np.clip(2.0 - 2.0 * np.asarray(sim, dtype=np.float64), 0.0, 4.0))


@dataclass(frozen=True)
class NewFace:
    """A face to add. embedding: float32 (D,), L2-normalised."""

    embedding: np.ndarray
    box: Sequence[float] | None = None
    score: float | None = None
    sha256: str | None = None
    thumbnail: bytes | None = None  # the encoder's aligned chip (JPEG)
    source: bytes | None = None  # model-independent crop with context (JPEG), for re-embedding
    source_geometry: dict[str, Any] | None = None  # box and landmarks in the source crop's pixels


@dataclass(frozen=True)
class StoredCrop:
    """What a face's embedding can be made again from (see :meth:`Gallery.reembed`)."""

    face_id: int
    identity: str
    source: bytes | None
    source_geometry: dict[str, Any] | None
    chip: bytes | None  # the aligned chip cut for the model that enrolled the face


@dataclass
class ReembedReport:
    model_version: str
    faces: int
    reembedded: int
    unrecoverable: list[tuple[int, str]]  # (face id, identity): no stored crop this model can use
    switched: bool
    generation: int
    seconds: float


@dataclass(frozen=True)
class FaceRecord:
    id: int
    identity: str
    model_version: str
    box: list[float] | None
    score: float | None
    sha256: str | None
    created_at: float
    has_thumbnail: bool
    has_source: bool = False


@dataclass(frozen=True)
class IdentityRecord:
    key: str
    metadata: dict[str, Any]
    faces: int
    created_at: float


@dataclass(frozen=True)
class FaceHit:
    face_id: int
    identity: str
    similarity: float
    distance: float


@dataclass(frozen=True)
class IdentityHit:
    identity: str
    face_id: int  # the best-matching face
    similarity: float
    distance: float
    matched_faces: list[int]
    match: bool | None = None  # against the search's threshold, when one was given


@dataclass
class SearchResult:
    faces: list[FaceHit] = field(default_factory=list)
    identities: list[IdentityHit] = field(default_factory=list)


class RWLock:
    """Many readers or one writer; writers are not starved (new readers wait while one is queued)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class Gallery:
    """Open (or create) the gallery in ``folder``: ``gallery.db`` + ``index/g<generation>/`` snapshot.

    ``dim`` and ``model_version`` must match what the store was written with, unless ``allow_mismatch``
    (then call :meth:`reembed` before searching or enrolling: until then the index is empty).
    """

    def __init__(self, folder: Path, *, dim: int, model_version: str, kind: Kind = "exact",
                 allow_mismatch: bool = False) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        self.model_version = model_version
        self.kind: Kind = kind
        self.store = Store(self.folder / "gallery.db")
        self._lock = RWLock()
        self._write_mutex = threading.Lock()  # serialises writers before they queue for the RW lock
        self._rebuild_thread: threading.Thread | None = None
        self._check_meta(allow_mismatch)
        self.generation = int(self.store.get_meta("generation") or 0)
        self._remove_stray_snapshots()
        self.index = self._load_index()
        self._snapshot_seq = self._loaded_seq
        if self._replayed_deletes:  # a kill after a delete committed, before its vector left the snapshot
            self.snapshot(force=True)
        self.store.checkpoint()

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
        dim, version = self.store.get_meta("dim"), self.store.get_meta("model_version")
        if dim is None:
            with self.store.transaction() as c:
                self.store.set_meta(c, "dim", str(self.dim))
                self.store.set_meta(c, "model_version", self.model_version)
            return
        if (int(dim) != self.dim or version != self.model_version) and not allow_mismatch:
            raise GalleryMismatch(
                f"gallery {self.folder} was written by model {version} ({dim}-d embeddings); this encoder is "
                f"{self.model_version} ({self.dim}-d). Re-embed it from its stored crops (`facesearch gallery "
                f"reembed`, or start with FACESEARCH_REEMBED=auto), or serve it with the model that made it "
                f"(FACESEARCH_CHECKPOINT)."
            )

    @property
    def needs_reembed(self) -> bool:
        return self.store.get_meta("model_version") != self.model_version or \
            int(self.store.get_meta("dim") or 0) != self.dim

    def stored_model(self) -> tuple[str | None, int]:
        """(model version, dimension) the stored embeddings were made with."""
        return self.store.get_meta("model_version"), int(self.store.get_meta("dim") or 0)

    def _load_index(self) -> VectorIndex:
        snap = self.snapshot_dir
        self._replayed_deletes = False
        if self.needs_reembed:  # the stored vectors are another model's: nothing to search until reembed
            self._loaded_seq = self.store.seq()
            return VectorIndex(self.dim, self.kind)
        try:
            index, seq = VectorIndex.load(snap, dim=self.dim, kind=self.kind, model_version=self.model_version)
            current = self.store.seq()
            if seq > current:
                raise SnapshotError("snapshot is newer than the store")
            # The change log is pruned only up to snapshots, so everything after seq is there.
            rows = self.store.conn.execute(
                "SELECT c.face_id, c.op, f.embedding FROM changes c LEFT JOIN faces f ON f.id = c.face_id "
                "WHERE c.seq > ? ORDER BY c.seq", (seq,)).fetchall()
            self._replay(index, rows)
            self._replayed_deletes = any(op == DELETE for _, op, _ in rows)
            self._loaded_seq = seq
            log.info("loaded index snapshot at change %d, replayed %d changes", seq, len(rows))
            return index
        except SnapshotError as e:
            if snap.exists():
                log.warning("index snapshot not used (%s): rebuilding from the store", e)
            index, seq = self._build_from_store()
            self._loaded_seq = -1  # force a snapshot at the next opportunity
            return index

    def _replay(self, index: VectorIndex, rows: list[tuple[int, int, bytes | None]]) -> None:
        present: dict[int, bytes | None] = {}
        for face_id, op, emb in rows:
            if op == ADD:
                present[face_id] = emb
            else:
                present[face_id] = None
        existing = set(index.ids().tolist()) if rows else set()
        to_remove = np.array([f for f, e in present.items() if e is None and f in existing], dtype=np.int64)
        index.remove(to_remove)
        adds = [(f, e) for f, e in present.items() if e is not None and f not in existing]
        if adds:
            ids = np.array([f for f, _ in adds], dtype=np.int64)
            vecs = np.stack([np.frombuffer(e, dtype=np.float32) for _, e in adds])
            index.add(ids, vecs)

    def _build_from_store(self) -> tuple[VectorIndex, int]:
        """A new index of every stored face, and the change counter it reflects. The rows are read in one short
        read transaction and indexed after it ends: a long read would hold off the WAL checkpoint that each
        delete waits for (an HNSW build of 1M faces takes minutes)."""
        c = self.store.conn
        ids: list[np.ndarray] = []
        vecs: list[np.ndarray] = []
        c.execute("BEGIN")  # one read snapshot for rows + counter
        try:
            seq = self.store.seq()
            cur = c.execute("SELECT id, embedding FROM faces ORDER BY id")
            while rows := cur.fetchmany(50_000):
                v = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
                if v.shape[1] != self.dim:
                    ids, vecs = [], []
                    break  # a store awaiting re-embedding: leave the index empty
                ids.append(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))
                vecs.append(v)
        finally:
            c.execute("COMMIT")
        index = VectorIndex(self.dim, self.kind)
        if ids:
            index.add(np.concatenate(ids), np.concatenate(vecs))
        return index, seq

    # --- snapshots -------------------------------------------------------------------------------------
    def snapshot(self, *, force: bool = False) -> bool:
        """Write the index snapshot if the store changed since the last one; prune the change log."""
        if self.needs_reembed:
            return False
        with self._write_mutex, self._lock.read():
            seq = self.store.seq()
            if seq == self._snapshot_seq and not force:
                return False
            self.index.save(self.snapshot_dir, seq, self.model_version)
        with self._write_mutex, self.store.transaction() as c:
            c.execute("DELETE FROM changes WHERE seq <= ?", (seq,))
        self._snapshot_seq = seq
        return True

    def close(self) -> None:
        if self._rebuild_thread is not None:
            self._rebuild_thread.join()
        try:
            self.snapshot()
        finally:
            self.store.close()

    # --- writes ----------------------------------------------------------------------------------------
    @contextmanager
    def _writing(self) -> Iterator[None]:
        with self._write_mutex, self._lock.write():
            yield

    def _check_vectors(self, faces: Sequence[NewFace]) -> np.ndarray:
        if not faces:
            raise InvalidVector("no faces given")
        try:
            vecs = np.stack([np.asarray(f.embedding, dtype=np.float32).reshape(-1) for f in faces])
        except ValueError as e:
            raise InvalidVector(f"embeddings must all be {self.dim}-d") from e
        if vecs.shape[1] != self.dim:
            raise InvalidVector(f"embedding dimension {vecs.shape[1]}, gallery expects {self.dim}")
        if not np.isfinite(vecs).all():
            raise InvalidVector("embedding contains NaN or inf")
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        if (norms < 1e-6).any():
            raise InvalidVector("embedding has zero length")
        return vecs / norms

    def add_faces(self, identity: str, faces: Sequence[NewFace], *, metadata: dict[str, Any] | None = None
                  ) -> list[int]:
        """Add faces to an identity (created if new), atomically. Returns the new face ids."""
        return self.add_many([(identity, f) for f in faces], metadata={identity: metadata} if metadata else None)

    def add_many(self, items: Sequence[tuple[str, NewFace]], *,
                 metadata: dict[str, dict[str, Any]] | None = None, actor: str | None = None) -> list[int]:
        """Add faces of one or more identities in one transaction (all or none). Returns face ids in order."""
        for key, _ in items:
            validate_key(key)
        vecs = self._check_vectors([f for _, f in items])
        now = time.time()
        with self._writing():
            with self.store.transaction() as c:
                # inside the transaction: another process (a reembed) may have switched the model meanwhile
                if self.needs_reembed:
                    raise GalleryMismatch("gallery awaits re-embedding with the current model")
                ident: dict[str, int] = {}
                for key in dict.fromkeys(k for k, _ in items):
                    meta = (metadata or {}).get(key)
                    c.execute("INSERT OR IGNORE INTO identities(key, metadata, created_at) VALUES (?, ?, ?)",
                              (key, json.dumps(meta or {}), now))
                    if meta is not None:
                        c.execute("UPDATE identities SET metadata = ? WHERE key = ?", (json.dumps(meta), key))
                    ident[key] = c.execute("SELECT id FROM identities WHERE key = ?", (key,)).fetchone()[0]
                ids = []
                for (key, f), v in zip(items, vecs, strict=True):
                    cur = c.execute(
                        "INSERT INTO faces(identity_id, embedding, model_version, box, score, sha256, thumbnail,"
                        " created_at, source, source_geometry) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (ident[key], v.tobytes(), self.model_version,
                         json.dumps([float(x) for x in f.box]) if f.box is not None else None,
                         f.score, f.sha256, f.thumbnail, now, f.source,
                         json.dumps(f.source_geometry) if f.source_geometry is not None else None))
                    ids.append(int(cur.lastrowid or 0))
                c.executemany("INSERT INTO changes(face_id, op) VALUES (?, ?)", [(i, ADD) for i in ids])
                for key in ident:
                    self.store.audit(c, "enroll", actor=actor, identity=key,
                                     face_ids=[i for (k, _), i in zip(items, ids, strict=True) if k == key])
            self.index.add(np.array(ids, dtype=np.int64), vecs)
        return ids

    def delete_face(self, face_id: int, *, actor: str | None = None) -> str:
        """Delete one face; returns its identity. An identity left without faces is kept.
        When it returns, no file under the gallery's folder holds the face's embedding or crops."""
        with self._write_mutex:
            with self._lock.write():
                with self.store.transaction() as c:
                    row = c.execute("SELECT i.key, f.embedding FROM faces f JOIN identities i ON i.id = f.identity_id "
                                    "WHERE f.id = ?", (int(face_id),)).fetchone() if _is_int64(face_id) else None
                    if row is None:
                        raise NotFound(f"face {face_id} not found")
                    c.execute("DELETE FROM faces WHERE id = ?", (int(face_id),))
                    c.execute("INSERT INTO changes(face_id, op) VALUES (?, ?)", (int(face_id), DELETE))
                    self.store.audit(c, "delete_face", actor=actor, identity=row[0], face_ids=[int(face_id)])
                self.index.remove(np.array([face_id], dtype=np.int64))
            self._erase([row[1]])
        self._maybe_rebuild()
        return str(row[0])

    def delete_identity(self, identity: str, *, actor: str | None = None) -> int:
        """Delete an identity with all its faces; returns how many faces went. When it returns, no file
        under the gallery's folder holds their embeddings or crops (the audit keeps the event)."""
        with self._write_mutex:
            with self._lock.write():
                with self.store.transaction() as c:
                    row = c.execute("SELECT id FROM identities WHERE key = ?", (identity,)).fetchone()
                    if row is None:
                        raise NotFound(f"identity {identity!r} not found")
                    faces = c.execute("SELECT id, embedding FROM faces WHERE identity_id = ?", (row[0],)).fetchall()
                    ids = [r[0] for r in faces]
                    c.execute("DELETE FROM faces WHERE identity_id = ?", (row[0],))
                    c.execute("DELETE FROM identities WHERE id = ?", (row[0],))
                    c.executemany("INSERT INTO changes(face_id, op) VALUES (?, ?)", [(i, DELETE) for i in ids])
                    self.store.audit(c, "delete_identity", actor=actor, identity=identity, face_ids=ids)
                self.index.remove(np.array(ids, dtype=np.int64))
            self._erase([r[1] for r in faces])
        self._maybe_rebuild()
        return len(ids)

    def _erase(self, vectors: list[bytes]) -> None:
        """After a delete committed (caller holds the write mutex, so no snapshot is being written): overwrite
        the vectors in the current snapshot and move the WAL, which still holds the rows' old pages, into the
        database file, where secure_delete has zeroed them."""
        erase_from_snapshot(self.snapshot_dir, vectors)
        self.store.checkpoint()

    def update_identity(self, identity: str, *, new_key: str | None = None,
                        metadata: dict[str, Any] | None = None, actor: str | None = None) -> IdentityRecord:
        """Rename and/or replace the metadata of an identity."""
        if new_key is not None:
            validate_key(new_key)
        with self._writing(), self.store.transaction() as c:
            row = c.execute("SELECT id FROM identities WHERE key = ?", (identity,)).fetchone()
            if row is None:
                raise NotFound(f"identity {identity!r} not found")
            if new_key is not None and new_key != identity:
                if c.execute("SELECT 1 FROM identities WHERE key = ?", (new_key,)).fetchone():
                    raise Conflict(f"identity {new_key!r} already exists")
                c.execute("UPDATE identities SET key = ? WHERE id = ?", (new_key, row[0]))
                self.store.audit(c, "rename", actor=actor, identity=new_key, previous=identity)
            if metadata is not None:
                c.execute("UPDATE identities SET metadata = ? WHERE id = ?", (json.dumps(metadata), row[0]))
                self.store.audit(c, "update_metadata", actor=actor, identity=new_key or identity)
        return self.get_identity(new_key if new_key is not None else identity)

    # --- reads -----------------------------------------------------------------------------------------
    def count(self) -> tuple[int, int]:
        """(identities, faces)."""
        c = self.store.conn
        return (c.execute("SELECT COUNT(*) FROM identities").fetchone()[0],
                c.execute("SELECT COUNT(*) FROM faces").fetchone()[0])

    def get_identity(self, identity: str) -> IdentityRecord:
        row = self.store.conn.execute(
            "SELECT i.key, i.metadata, i.created_at, (SELECT COUNT(*) FROM faces f WHERE f.identity_id = i.id) "
            "FROM identities i WHERE i.key = ?", (identity,)).fetchone()
        if row is None:
            raise NotFound(f"identity {identity!r} not found")
        return IdentityRecord(key=row[0], metadata=json.loads(row[1]), created_at=row[2], faces=row[3])

    def list_identities(self, *, limit: int = 50, offset: int = 0, prefix: str = ""
                        ) -> tuple[list[IdentityRecord], int]:
        """Identities ordered by key, optionally those starting with ``prefix``; returns (page, total)."""
        where, args = ("WHERE substr(i.key, 1, ?) = ?", [len(prefix), prefix]) if prefix else ("", [])
        c = self.store.conn
        total = c.execute(f"SELECT COUNT(*) FROM identities i {where}", args).fetchone()[0]
        rows = c.execute(
            "SELECT i.key, i.metadata, i.created_at, (SELECT COUNT(*) FROM faces f WHERE f.identity_id = i.id) "
            f"FROM identities i {where} ORDER BY i.key LIMIT ? OFFSET ?", [*args, limit, offset]).fetchall()
        return [IdentityRecord(key=r[0], metadata=json.loads(r[1]), created_at=r[2], faces=r[3]) for r in rows], total

    _FACE_COLS = ("f.id, i.key, f.model_version, f.box, f.score, f.sha256, f.created_at, "
                  "f.thumbnail IS NOT NULL, f.source IS NOT NULL")

    @staticmethod
    def _face(r: tuple[Any, ...]) -> FaceRecord:
        return FaceRecord(id=r[0], identity=r[1], model_version=r[2], box=json.loads(r[3]) if r[3] else None,
                          score=r[4], sha256=r[5], created_at=r[6], has_thumbnail=bool(r[7]), has_source=bool(r[8]))

    def list_faces(self, identity: str, *, limit: int = 100, offset: int = 0) -> tuple[list[FaceRecord], int]:
        c = self.store.conn
        row = c.execute("SELECT id FROM identities WHERE key = ?", (identity,)).fetchone()
        if row is None:
            raise NotFound(f"identity {identity!r} not found")
        total = c.execute("SELECT COUNT(*) FROM faces WHERE identity_id = ?", (row[0],)).fetchone()[0]
        rows = c.execute(f"SELECT {self._FACE_COLS} FROM faces f JOIN identities i ON i.id = f.identity_id "
                         "WHERE f.identity_id = ? ORDER BY f.id LIMIT ? OFFSET ?", (row[0], limit, offset))
        return [self._face(r) for r in rows], total

    def get_face(self, face_id: int) -> FaceRecord:
        row = self.store.conn.execute(
            f"SELECT {self._FACE_COLS} FROM faces f JOIN identities i ON i.id = f.identity_id WHERE f.id = ?",
            (int(face_id),)).fetchone() if _is_int64(face_id) else None
        if row is None:
            raise NotFound(f"face {face_id} not found")
        return self._face(row)

    def thumbnail(self, face_id: int) -> bytes:
        row = self.store.conn.execute("SELECT thumbnail FROM faces WHERE id = ?", (int(face_id),)).fetchone() \
            if _is_int64(face_id) else None
        if row is None or row[0] is None:
            raise NotFound(f"face {face_id} has no thumbnail" if row else f"face {face_id} not found")
        return bytes(row[0])

    def faces_with_sha256(self, sha256: str) -> list[FaceRecord]:
        rows = self.store.conn.execute(
            f"SELECT {self._FACE_COLS} FROM faces f JOIN identities i ON i.id = f.identity_id WHERE f.sha256 = ?",
            (sha256,))
        return [self._face(r) for r in rows]

    def embeddings(self, identity: str) -> tuple[np.ndarray, np.ndarray]:
        """(face ids int64 (n,), embeddings float32 (n, D)) of one identity."""
        c = self.store.conn
        row = c.execute("SELECT id FROM identities WHERE key = ?", (identity,)).fetchone()
        if row is None:
            raise NotFound(f"identity {identity!r} not found")
        rows = c.execute("SELECT id, embedding FROM faces WHERE identity_id = ? ORDER BY id", (row[0],)).fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        vecs = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows]) if rows else \
            np.zeros((0, self.dim), np.float32)
        return ids, vecs

    # --- search ----------------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, *, k: int = 5, k_faces: int | None = None,
               threshold: float | None = None) -> list[SearchResult]:
        """For each query (float32 (n, D), L2-normalised): the top faces and the top-k identities.

        Identities are scored by their best face. ``threshold`` (a distance) marks each identity hit
        as a match or not. An empty gallery gives empty results.
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
            sims, ids = self.index.search(q, fetch)
            wanted = sorted({int(i) for i in ids.ravel() if i >= 0})
            owner = self._owners(wanted)
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

    def _owners(self, face_ids: list[int]) -> dict[int, str]:
        out: dict[int, str] = {}
        c = self.store.conn
        for i in range(0, len(face_ids), 500):
            chunk = face_ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            out.update(c.execute(f"SELECT f.id, i.key FROM faces f JOIN identities i ON i.id = f.identity_id "
                                 f"WHERE f.id IN ({marks})", chunk).fetchall())
        return out

    # --- maintenance -----------------------------------------------------------------------------------
    def verify(self) -> dict[str, Any]:
        """Compare the index with the store: ids on both sides and vectors of a sample."""
        with self._lock.read():
            index_ids = self.index.ids()
            store_ids = np.array([r[0] for r in self.store.conn.execute("SELECT id FROM faces ORDER BY id")],
                                 dtype=np.int64)
            missing = np.setdiff1d(store_ids, index_ids)
            extra = np.setdiff1d(index_ids, store_ids)
        return {"faces_in_store": int(len(store_ids)), "faces_in_index": int(len(index_ids)),
                "missing_from_index": missing[:20].tolist(), "extra_in_index": extra[:20].tolist(),
                "ok": not len(missing) and not len(extra)}

    def rebuild_index(self) -> None:
        """Rebuild the index from the store now (blocking writes meanwhile) and snapshot it."""
        with self._writing():
            self.index, _ = self._build_from_store()
        self.snapshot(force=True)

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
                rows = self.store.conn.execute(
                    "SELECT c.face_id, c.op, f.embedding FROM changes c LEFT JOIN faces f ON f.id = c.face_id "
                    "WHERE c.seq > ? ORDER BY c.seq", (seq,)).fetchall()
                self._replay(fresh, rows)
                self.index = fresh
            log.info("rebuilt the HNSW graph (%d faces)", fresh.live)
        except (sqlite3.Error, RuntimeError) as e:  # the old index keeps serving
            log.error("background HNSW rebuild failed: %s", e)

    # --- re-embedding --------------------------------------------------------------------------------
    def reembed_status(self) -> dict[str, Any] | None:
        """Progress of a re-embedding under way (in this or another process), or None."""
        target = self.store.get_meta("reembed_target")
        if target is None:
            return None
        c = self.store.conn
        return {"target_model": json.loads(target)[0],
                "done": c.execute("SELECT COUNT(*) FROM reembedding").fetchone()[0],
                "total": c.execute("SELECT COUNT(*) FROM faces").fetchone()[0]}

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
            if self.store.get_meta("reembed_target") != target:  # a new run (or a run for another model)
                c.execute("DELETE FROM reembedding")
                self.store.set_meta(c, "reembed_target", target)
                self.store.audit(c, "reembed_started", actor=actor, to_model=self.model_version,
                                 from_model=self.store.get_meta("model_version"))
        c = self.store.conn
        done = 0
        while True:
            while rows := c.execute(
                    "SELECT f.id, i.key, f.source, f.source_geometry, f.thumbnail FROM faces f "
                    "JOIN identities i ON i.id = f.identity_id LEFT JOIN reembedding r ON r.face_id = f.id "
                    "WHERE r.face_id IS NULL ORDER BY f.id LIMIT ?", (batch,)).fetchall():
                crops = [StoredCrop(r[0], r[1], r[2], json.loads(r[3]) if r[3] else None, r[4]) for r in rows]
                vecs = embed(crops)
                with self._write_mutex, self.store.transaction() as w:  # skipped if the face went meanwhile
                    w.executemany(
                        "INSERT INTO reembedding(face_id, embedding) SELECT ?, ? WHERE EXISTS "
                        "(SELECT 1 FROM faces WHERE id = ?)",
                        [(r[0], None if v is None else self._check_vectors([NewFace(v)])[0].tobytes(), r[0])
                         for r, v in zip(rows, vecs, strict=True)])
                done = c.execute("SELECT COUNT(*) FROM reembedding").fetchone()[0]
                total = self.count()[1]
                if progress is not None:
                    progress(done, total)
            report = self._switch(drop_unrecoverable, actor)
            if report is not None:
                report.seconds = time.monotonic() - t0
                return report

    def _switch(self, drop_unrecoverable: bool, actor: str | None) -> ReembedReport | None:
        """Swap the new embeddings in, atomically; None if faces were enrolled since the last batch."""
        with self._writing():
            with self.store.transaction() as c:
                if c.execute("SELECT COUNT(*) FROM faces f LEFT JOIN reembedding r ON r.face_id = f.id "
                             "WHERE r.face_id IS NULL").fetchone()[0]:
                    return None
                lost = c.execute("SELECT f.id, i.key FROM faces f JOIN identities i ON i.id = f.identity_id "
                                 "JOIN reembedding r ON r.face_id = f.id WHERE r.embedding IS NULL ORDER BY f.id"
                                 ).fetchall()
                unrecoverable = [(int(i), str(k)) for i, k in lost]
                total = c.execute("SELECT COUNT(*) FROM faces").fetchone()[0]
                if unrecoverable and not drop_unrecoverable:
                    return ReembedReport(self.model_version, total, total - len(lost), unrecoverable, False,
                                         self.generation, 0.0)
                old_vectors = []
                if unrecoverable:
                    ids = [i for i, _ in unrecoverable]
                    old_vectors = [r[0] for r in c.execute(
                        f"SELECT embedding FROM faces WHERE id IN ({','.join('?' * len(ids))})", ids)]
                    c.executemany("DELETE FROM faces WHERE id = ?", [(i,) for i in ids])
                    c.executemany("INSERT INTO changes(face_id, op) VALUES (?, ?)", [(i, DELETE) for i in ids])
                    for key in dict.fromkeys(k for _, k in unrecoverable):
                        self.store.audit(c, "delete_face", actor=actor, identity=key, reason="no crop to re-embed",
                                         face_ids=[i for i, k in unrecoverable if k == key])
                index = VectorIndex(self.dim, self.kind)
                rows = c.execute("SELECT face_id, embedding FROM reembedding WHERE embedding IS NOT NULL "
                                 "ORDER BY face_id").fetchall()
                if rows:
                    index.add(np.array([r[0] for r in rows], dtype=np.int64),
                              np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1))
                old_dir, generation, seq = self.snapshot_dir, self.generation + 1, self.store.seq()
                # the new generation's snapshot is written beside the old one before the switch commits
                index.save(self.folder / "index" / f"g{generation}", seq, self.model_version)
                c.execute("UPDATE faces SET model_version = ?, embedding = "
                          "(SELECT r.embedding FROM reembedding r WHERE r.face_id = faces.id)", (self.model_version,))
                c.execute("DELETE FROM reembedding")
                c.execute("DELETE FROM meta WHERE key = 'reembed_target'")
                previous = self.store.get_meta("model_version")
                self.store.set_meta(c, "model_version", self.model_version)
                self.store.set_meta(c, "dim", str(self.dim))
                self.store.set_meta(c, "generation", str(generation))
                c.execute("INSERT INTO generations(id, model_version, dim, faces, switched_at) VALUES (?, ?, ?, ?, ?)",
                          (generation, self.model_version, self.dim, len(rows), time.time()))
                self.store.audit(c, "reembed", actor=actor, from_model=previous, to_model=self.model_version,
                                 generation=generation, faces=len(rows))
            self.generation, self.index, self._snapshot_seq = generation, index, seq
        _remove(old_dir)
        if old_vectors:
            self._erase(old_vectors)
        self.store.checkpoint()
        return ReembedReport(self.model_version, total, len(rows), unrecoverable, True, generation, 0.0)

    def generations(self) -> list[dict[str, Any]]:
        rows = self.store.conn.execute("SELECT id, model_version, dim, faces, switched_at FROM generations ORDER BY id")
        return [{"generation": r[0], "model_version": r[1], "dim": r[2], "faces": r[3], "switched_at": r[4]}
                for r in rows]

    # --- subject access and audit ---------------------------------------------------------------------
    def identity_export(self, identity: str) -> tuple[IdentityRecord, Iterator[dict[str, Any]]]:
        """Everything stored about one identity: its record and, lazily, each face with its crops and embedding.

        The faces are read one query each (on the calling thread's connection), so the iterator may be
        consumed from any thread; a face deleted meanwhile is skipped."""
        record = self.get_identity(identity)
        ids = [r[0] for r in self.store.conn.execute(
            "SELECT f.id FROM faces f JOIN identities i ON i.id = f.identity_id WHERE i.key = ? ORDER BY f.id",
            (identity,))]

        def faces() -> Iterator[dict[str, Any]]:
            for face_id in ids:
                r = self.store.conn.execute(
                    "SELECT id, model_version, box, score, sha256, created_at, source_geometry, embedding, thumbnail, "
                    "source FROM faces WHERE id = ?", (face_id,)).fetchone()
                if r is None:
                    continue
                yield {"face_id": r[0], "model_version": r[1], "box": json.loads(r[2]) if r[2] else None,
                       "detection_score": r[3], "sha256": r[4], "created_at": r[5],
                       "source_geometry": json.loads(r[6]) if r[6] else None,
                       "embedding": np.frombuffer(r[7], dtype=np.float32).tolist(), "chip": r[8], "source": r[9]}

        return record, faces()

    def audit_log(self, *, since: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """Audit lines with seq > ``since``, oldest first."""
        rows = self.store.conn.execute(
            "SELECT seq, at, event, actor, identity, face_ids, detail FROM audit WHERE seq > ? ORDER BY seq LIMIT ?",
            (int(since), int(limit)))
        return [{"seq": r[0], "at": r[1], "event": r[2], "actor": r[3], "identity": r[4],
                 "face_ids": json.loads(r[5]), "detail": json.loads(r[6])} for r in rows]

    def record_audit(self, event: str, *, actor: str | None = None, identity: str | None = None,
                     face_ids: list[int] | None = None, **detail: object) -> None:
        """An audit line for an event that writes nothing else (an export)."""
        with self._write_mutex, self.store.transaction() as c:
            self.store.audit(c, event, actor=actor, identity=identity, face_ids=face_ids, **detail)

    def export(self, path: Path) -> None:
        """Write the whole gallery (identities, faces, embeddings, crops) to one SQLite file."""
        path = Path(path)
        if path.exists():
            path.unlink()
        dst = sqlite3.connect(path)
        try:
            self.store.conn.backup(dst)
        finally:
            dst.close()

    def import_(self, path: Path) -> tuple[int, int]:
        """Merge an exported gallery: identities by key, faces not already present (same identity and
        image hash). Returns (identities touched, faces added)."""
        src = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
        try:
            meta = dict(src.execute("SELECT key, value FROM meta").fetchall())
            if int(meta.get("dim", 0)) != self.dim or meta.get("model_version") != self.model_version:
                raise GalleryMismatch(f"export was made by model {meta.get('model_version')} "
                                      f"({meta.get('dim')}-d); this gallery uses {self.model_version}")
            idents = {r[0]: (r[1], json.loads(r[2])) for r in src.execute("SELECT id, key, metadata FROM identities")}
            cols = {r[1] for r in src.execute("PRAGMA table_info(faces)")}
            source_cols = "source, source_geometry" if "source" in cols else "NULL, NULL"
            rows = src.execute(f"SELECT identity_id, embedding, box, score, sha256, thumbnail, {source_cols} "
                               "FROM faces").fetchall()
        except sqlite3.DatabaseError as e:
            raise GalleryMismatch(f"not a FaceSearch gallery export: {e}") from e
        finally:
            src.close()
        have = {(r[0], r[1]) for r in self.store.conn.execute(
            "SELECT i.key, f.sha256 FROM faces f JOIN identities i ON i.id = f.identity_id")}
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
        db = self.folder / "gallery.db"
        return {"identities": identities, "faces": faces, "index_kind": self.index.kind,
                "indexed": self.index.live, "dim": self.dim, "model_version": self.model_version,
                "stored_model_version": self.stored_model()[0], "generation": self.generation,
                "reembed": self.reembed_status(),
                "db_bytes": db.stat().st_size if db.exists() else 0, "change_counter": self.store.seq()}


def _is_int64(x: object) -> bool:
    return isinstance(x, int | np.integer) and -(2**63) <= int(x) < 2**63 and not math.isnan(float(x))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
