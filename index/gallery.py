"""Gallery: identities and their faces in SQLite (truth), searched through a derived FAISS index.

Writes commit to SQLite first, then update the index, under a write lock; searches hold a read lock,
so a search never sees a half-applied write. The index is snapshotted with the store's change
counter; on open, a valid snapshot is loaded and the changes after it replayed, anything else is
rebuilt from the store.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from index.errors import Conflict, GalleryMismatch, InvalidKey, InvalidVector, NotFound
from index.store import ADD, DELETE, Store
from index.vectors import Kind, SnapshotError, VectorIndex

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
    thumbnail: bytes | None = None


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
    """Open (or create) the gallery in ``folder``: ``gallery.db`` + ``index/`` snapshot.

    ``dim`` and ``model_version`` must match what the store was written with, unless ``allow_mismatch``
    (then call :meth:`reembed` before searching).
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
        self.index = self._load_index()
        self._snapshot_seq = self._loaded_seq

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
                f"reembed`; it refuses crops cut for another encoder's chip), enroll the photos again into a new "
                f"data folder, or serve it with the model that made it (FACESEARCH_CHECKPOINT)."
            )

    @property
    def needs_reembed(self) -> bool:
        return self.store.get_meta("model_version") != self.model_version or \
            int(self.store.get_meta("dim") or 0) != self.dim

    def _load_index(self) -> VectorIndex:
        snap = self.folder / "index"
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
        index = VectorIndex(self.dim, self.kind)
        c = self.store.conn
        c.execute("BEGIN")  # one read snapshot for rows + counter
        try:
            seq = self.store.seq()
            cur = c.execute("SELECT id, embedding FROM faces ORDER BY id")
            while rows := cur.fetchmany(50_000):
                ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
                if vecs.shape[1] != self.dim:
                    break  # a store awaiting re-embedding: leave the index empty
                index.add(ids, vecs)
        finally:
            c.execute("COMMIT")
        return index, seq

    # --- snapshots -------------------------------------------------------------------------------------
    def snapshot(self, *, force: bool = False) -> bool:
        """Write the index snapshot if the store changed since the last one; prune the change log."""
        with self._write_mutex, self._lock.read():
            seq = self.store.seq()
            if seq == self._snapshot_seq and not force:
                return False
            self.index.save(self.folder / "index", seq, self.model_version)
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
                 metadata: dict[str, dict[str, Any]] | None = None) -> list[int]:
        """Add faces of one or more identities in one transaction (all or none). Returns face ids in order."""
        if self.needs_reembed:
            raise GalleryMismatch("gallery awaits re-embedding with the current model")
        for key, _ in items:
            validate_key(key)
        vecs = self._check_vectors([f for _, f in items])
        now = time.time()
        with self._writing():
            with self.store.transaction() as c:
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
                        " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (ident[key], v.tobytes(), self.model_version,
                         json.dumps([float(x) for x in f.box]) if f.box is not None else None,
                         f.score, f.sha256, f.thumbnail, now))
                    ids.append(int(cur.lastrowid or 0))
                c.executemany("INSERT INTO changes(face_id, op) VALUES (?, ?)", [(i, ADD) for i in ids])
            self.index.add(np.array(ids, dtype=np.int64), vecs)
        return ids

    def delete_face(self, face_id: int) -> str:
        """Delete one face; returns its identity. An identity left without faces is kept."""
        with self._writing():
            with self.store.transaction() as c:
                row = c.execute("SELECT i.key FROM faces f JOIN identities i ON i.id = f.identity_id "
                                "WHERE f.id = ?", (int(face_id),)).fetchone() if _is_int64(face_id) else None
                if row is None:
                    raise NotFound(f"face {face_id} not found")
                c.execute("DELETE FROM faces WHERE id = ?", (int(face_id),))
                c.execute("INSERT INTO changes(face_id, op) VALUES (?, ?)", (int(face_id), DELETE))
            self.index.remove(np.array([face_id], dtype=np.int64))
        self._maybe_rebuild()
        return str(row[0])

    def delete_identity(self, identity: str) -> int:
        """Delete an identity with all its faces; returns how many faces went."""
        with self._writing():
            with self.store.transaction() as c:
                row = c.execute("SELECT id FROM identities WHERE key = ?", (identity,)).fetchone()
                if row is None:
                    raise NotFound(f"identity {identity!r} not found")
                ids = [r[0] for r in c.execute("SELECT id FROM faces WHERE identity_id = ?", (row[0],))]
                c.execute("DELETE FROM faces WHERE identity_id = ?", (row[0],))
                c.execute("DELETE FROM identities WHERE id = ?", (row[0],))
                c.executemany("INSERT INTO changes(face_id, op) VALUES (?, ?)", [(i, DELETE) for i in ids])
            self.index.remove(np.array(ids, dtype=np.int64))
        self._maybe_rebuild()
        return len(ids)

    def update_identity(self, identity: str, *, new_key: str | None = None,
                        metadata: dict[str, Any] | None = None) -> IdentityRecord:
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
            if metadata is not None:
                c.execute("UPDATE identities SET metadata = ? WHERE id = ?", (json.dumps(metadata), row[0]))
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
                  "f.thumbnail IS NOT NULL")

    @staticmethod
    def _face(r: tuple[Any, ...]) -> FaceRecord:
        return FaceRecord(id=r[0], identity=r[1], model_version=r[2], box=json.loads(r[3]) if r[3] else None,
                          score=r[4], sha256=r[5], created_at=r[6], has_thumbnail=bool(r[7]))

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

    def reembed(self, embed_thumbnails: Any, *, batch: int = 256) -> int:
        """Re-embed every face from its stored aligned crop with the current model.

        ``embed_thumbnails(list[bytes]) -> float32 (n, D)`` is supplied by the caller (the model side).
        """
        n = 0
        with self._writing():
            with self.store.transaction() as c:
                rows = c.execute("SELECT id, thumbnail FROM faces ORDER BY id").fetchall()
                if any(r[1] is None for r in rows):
                    raise GalleryMismatch("some faces have no stored crop: re-enroll them from photos")
                for i in range(0, len(rows), batch):
                    chunk = rows[i : i + batch]
                    vecs = np.asarray(embed_thumbnails([r[1] for r in chunk]), dtype=np.float32)
                    c.executemany("UPDATE faces SET embedding = ?, model_version = ? WHERE id = ?",
                                  [(v.tobytes(), self.model_version, r[0]) for v, r in zip(vecs, chunk, strict=True)])
                    n += len(chunk)
                self.store.set_meta(c, "dim", str(self.dim))
                self.store.set_meta(c, "model_version", self.model_version)
            self.index, _ = self._build_from_store()
        self.snapshot(force=True)
        return n

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
            rows = src.execute("SELECT identity_id, embedding, box, score, sha256, thumbnail FROM faces").fetchall()
        except sqlite3.DatabaseError as e:
            raise GalleryMismatch(f"not a FaceSearch gallery export: {e}") from e
        finally:
            src.close()
        have = {(r[0], r[1]) for r in self.store.conn.execute(
            "SELECT i.key, f.sha256 FROM faces f JOIN identities i ON i.id = f.identity_id")}
        items = []
        for ident_id, emb, box, score, sha, thumb in rows:
            key = idents[ident_id][0]
            if sha is not None and (key, sha) in have:
                continue
            items.append((key, NewFace(np.frombuffer(emb, dtype=np.float32), json.loads(box) if box else None,
                                       score, sha, thumb)))
        if items:
            self.add_many(items, metadata={k: m for k, m in idents.values() if m})
        return len({k for k, _ in items}), len(items)

    def stats(self) -> dict[str, Any]:
        identities, faces = self.count()
        db = self.folder / "gallery.db"
        return {"identities": identities, "faces": faces, "index_kind": self.index.kind,
                "indexed": self.index.live, "dim": self.dim, "model_version": self.model_version,
                "db_bytes": db.stat().st_size if db.exists() else 0, "change_counter": self.store.seq()}


def _is_int64(x: object) -> bool:
    return isinstance(x, int | np.integer) and -(2**63) <= int(x) < 2**63 and not math.isnan(float(x))
