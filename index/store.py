"""The gallery's store: identities, faces, embeddings, crops, the change log, generations, audit (the truth).

:class:`Store` holds every query, written once in the SQL that SQLite and PostgreSQL share (``?`` marks a
parameter); an engine module (:mod:`index.sqlite`, :mod:`index.postgres`) supplies connections, its schema and
the few statements that differ. Every face added or removed is also written to the ``changes`` log in the same
transaction; its sequence number is the cursor that index snapshots record and replicas follow. Write
transactions are serialised across processes (SQLite's write lock, a PostgreSQL advisory lock), so the change
log's sequence numbers are in commit order: a reader that has seen change n has seen every change before it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from index.records import (
    AuditEntry,
    Change,
    FaceOwner,
    FaceRecord,
    Generation,
    IdentityRecord,
    NewFace,
    face_record,
    identity_record,
)
from index.spaces import Placed, Space

ADD, DELETE = 1, -1


class Cursor(Protocol):
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def fetchmany(self, size: int) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Conn(Protocol):
    """What the queries need of a connection: sqlite3's, or a PostgreSQL one that reads ``?`` marks."""

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Cursor: ...
    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> Any: ...


@dataclass(frozen=True)
class FaceRow:
    """A face to insert: the embedding (float32 bytes) and what was kept of the photo."""

    embedding: bytes
    box: str | None
    score: float | None
    sha256: str | None
    thumbnail: bytes | None
    source: bytes | None
    source_geometry: str | None
    photo_id: int | None = None

    @classmethod
    def of(cls, face: NewFace, vector: np.ndarray, photo_id: int | None = None) -> FaceRow:
        """``face`` with its checked, normalised embedding ``vector``."""
        return cls(vector.tobytes(), None if face.box is None else json.dumps([float(x) for x in face.box]),
                   face.score, face.sha256, face.thumbnail, face.source,
                   None if face.source_geometry is None else json.dumps(face.source_geometry), photo_id)


def placed_rows(rows: Sequence[Any]) -> Placed:
    """(id, embedding bytes, named, in a photo) rows -> the faces and their spaces."""
    ids = np.array([int(r[0]) for r in rows], dtype=np.int64)
    vectors = np.frombuffer(b"".join(bytes(r[1]) for r in rows), dtype=np.float32).reshape(len(rows), -1)
    return Placed.of(ids, vectors, named=[bool(r[2]) for r in rows], in_photo=[bool(r[3]) for r in rows])


class Store(ABC):
    """One gallery's rows. ``shared``: other processes write to it too (replicas follow its change log)."""

    shared = False
    # PostgreSQL keeps this many changes when a snapshot is taken (other replicas' snapshots replay from them);
    # SQLite has one writer process and prunes up to its snapshot
    keep_changes = 0

    # --- engine --------------------------------------------------------------------------------------
    @abstractmethod
    def transaction(self) -> AbstractContextManager[Conn]:
        """A write transaction, serialised with every other writer; committed on exit, rolled back on error."""

    @abstractmethod
    def read(self, *, consistent: bool = False) -> AbstractContextManager[Conn]:
        """A connection for reads; ``consistent``: every statement sees the same snapshot."""

    @abstractmethod
    def seq(self, c: Conn | None = None) -> int:
        """The last change's sequence number (0 when none)."""

    def insert_returning(self, c: Conn, sql: str, rows: Sequence[Sequence[Any]]) -> list[int]:
        """Run an ``INSERT ... RETURNING <id>`` for each row; returns the ids in order."""
        return [int(c.execute(sql, row).fetchone()[0]) for row in rows]

    def insert_changes(self, c: Conn, changes: Sequence[tuple[int, int]]) -> list[int]:
        """Append (face id, op) to the change log; returns their sequence numbers."""
        return self.insert_returning(c, "INSERT INTO changes(face_id, op) VALUES (?, ?) RETURNING seq", changes)

    @abstractmethod
    def erase_deleted(self) -> None:
        """After deletes committed: make the engine drop its copies of the deleted rows (see the engine)."""

    @abstractmethod
    def compact(self) -> dict[str, Any]:
        """Rewrite the tables that held deleted faces and identities so that no file of the engine keeps their
        bytes in free space, and retire the engine's log; blocks the gallery meanwhile. Returns what was done
        and, under ``"left"``, what still keeps copies (empty when nothing does)."""

    @abstractmethod
    def size_bytes(self) -> int: ...

    @abstractmethod
    def close(self) -> None: ...

    def destroy(self) -> None:
        """Close, and drop what the store keeps outside the gallery's folder (a deleted collection's: PostgreSQL's
        schema); the folder itself is the caller's to wipe."""
        self.close()

    def ping(self) -> None:
        """Raise StoreUnavailable when the store cannot be reached."""
        with self.read() as c:
            c.execute("SELECT 1").fetchone()

    def wait_for_changes(self, timeout: float) -> None:
        """Return when another process may have written (at the latest after ``timeout`` seconds)."""
        time.sleep(timeout)

    # --- meta ----------------------------------------------------------------------------------------
    def get_meta(self, key: str, c: Conn | None = None) -> str | None:
        if c is None:
            with self.read() as r:
                return self.get_meta(key, r)
        row = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, c: Conn, key: str, value: object) -> None:
        c.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                  (key, value if isinstance(value, str) else json.dumps(value)))

    def delete_meta(self, c: Conn, key: str) -> None:
        c.execute("DELETE FROM meta WHERE key = ?", (key,))

    def audit(self, c: Conn, event: str, *, actor: str | None = None, identity: str | None = None,
              face_ids: list[int] | None = None, **detail: object) -> None:
        """One audit line in the caller's transaction: who did what to which identity and faces."""
        c.execute("INSERT INTO audit(at, event, actor, identity, face_ids, detail) VALUES (?, ?, ?, ?, ?, ?)",
                  (time.time(), event, actor, identity, json.dumps(face_ids or []), json.dumps(detail)))

    def forget_in_audit(self, c: Conn, identity: str) -> str:
        """An identity is being deleted: its name, and the names it had before renames, leave the audit; each entry
        stays (who did what, when) with a keyed hash of the name in its place (HMAC-SHA256 under a key kept in the
        store's meta: whoever holds the store can tell whether a given name was erased, nobody can read it back).
        Returns the tag."""
        key = self.get_meta("audit_key", c)
        if key is None:
            key = secrets.token_hex(32)
            self.set_meta(c, "audit_key", key)
        tag = "erased-" + hmac.new(bytes.fromhex(key), identity.encode(), hashlib.sha256).hexdigest()[:20]
        names = {identity}
        while True:  # rename lines name the previous key: follow the chain back
            more = {str(json.loads(d).get("previous")) for (d,) in c.execute(
                f"SELECT detail FROM audit WHERE event = 'rename' AND identity IN ({','.join('?' * len(names))})",
                sorted(names))} - names - {"None"}
            if not more:
                break
            names |= more
        for name in names:
            c.execute("UPDATE audit SET identity = ? WHERE identity = ?", (tag, name))
        for seq, detail in c.execute("SELECT seq, detail FROM audit WHERE event IN ('rename', 'merge_identities')"
                                     ).fetchall():
            d = json.loads(detail)
            changed = {k: tag if v in names else v for k, v in d.items()}
            if changed != d:
                c.execute("UPDATE audit SET detail = ? WHERE seq = ?", (json.dumps(changed), seq))
        return tag

    def prune_audit(self, before: float) -> int:
        """Drop the audit entries older than ``before`` (a Unix time); returns how many went."""
        with self.transaction() as c:
            n = int(c.execute("SELECT COUNT(*) FROM audit WHERE at < ?", (before,)).fetchone()[0])
            if n:
                c.execute("DELETE FROM audit WHERE at < ?", (before,))
        return n

    # --- change log ----------------------------------------------------------------------------------
    def pruned_through(self, c: Conn | None = None) -> int:
        return int(self.get_meta("changes_pruned_through", c) or 0)

    def changes_after(self, seq: int, c: Conn | None = None) -> list[Change]:
        """Every change after ``seq``, in order."""
        if c is None:
            with self.read() as r:
                return self.changes_after(seq, r)
        return [Change(int(s), int(f), int(op), None if e is None else bytes(e), bool(named), bool(in_photo))
                for s, f, op, e, named, in_photo in c.execute(
                    "SELECT c.seq, c.face_id, c.op, f.embedding, f.identity_id IS NOT NULL, f.photo_id IS NOT NULL "
                    "FROM changes c LEFT JOIN faces f ON f.id = c.face_id WHERE c.seq > ? ORDER BY c.seq", (seq,))]

    def prune_changes(self, through: int) -> None:
        """Drop the change log up to ``through``, remembering where it now starts."""
        if through <= 0:
            return
        with self.transaction() as c:
            if through <= self.pruned_through(c):
                return
            c.execute("DELETE FROM changes WHERE seq <= ?", (through,))
            self.set_meta(c, "changes_pruned_through", str(through))

    ALL_EMBEDDINGS = "SELECT id, embedding, identity_id IS NOT NULL, photo_id IS NOT NULL FROM faces ORDER BY id"

    def all_embeddings(self, c: Conn, batch: int = 50_000) -> Iterator[Placed]:
        """Every face with the spaces it belongs to, in batches by face id; ``c`` from a consistent read."""
        cur = c.execute(self.ALL_EMBEDDINGS)
        while rows := cur.fetchmany(batch):
            yield placed_rows(rows)

    # --- writes --------------------------------------------------------------------------------------
    def add_faces(self, c: Conn, items: Sequence[tuple[str | None, FaceRow]], model_version: str,
                  metadata: dict[str, dict[str, Any]] | None, actor: str | None) -> tuple[list[int], list[int]]:
        """Insert faces (identities created as needed; None: a photo's face of no identity) in the caller's
        transaction; enrolments are audited per identity. Returns (face ids, change seqs)."""
        now = time.time()
        keys = list(dict.fromkeys(k for k, _ in items if k is not None))
        meta = metadata or {}
        # every statement runs once for the whole batch (pipelined on PostgreSQL), not once per identity
        c.executemany("INSERT INTO identities(key, metadata, created_at) VALUES (?, ?, ?) ON CONFLICT (key) DO NOTHING",
                      [(k, json.dumps(meta.get(k) or {}), now) for k in keys])
        c.executemany("UPDATE identities SET metadata = ? WHERE key = ?",
                      [(json.dumps(meta[k]), k) for k in keys if meta.get(k) is not None])
        ident: dict[str, int] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            ident.update((str(k), int(v)) for k, v in c.execute(
                f"SELECT key, id FROM identities WHERE key IN ({','.join('?' * len(chunk))})", chunk))
        ids = self.insert_returning(
            c, "INSERT INTO faces(identity_id, embedding, model_version, box, score, sha256, thumbnail, created_at,"
               " source, source_geometry, photo_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            [(None if key is None else ident[key], f.embedding, model_version, f.box, f.score, f.sha256, f.thumbnail,
              now, f.source, f.source_geometry, f.photo_id) for key, f in items])
        seqs = self.insert_changes(c, [(i, ADD) for i in ids])
        per_key: dict[str, list[int]] = {k: [] for k in keys}
        for (k, _), i in zip(items, ids, strict=True):
            if k is not None:
                per_key[k].append(i)
        c.executemany("INSERT INTO audit(at, event, actor, identity, face_ids, detail) VALUES (?, ?, ?, ?, ?, ?)",
                      [(now, "enroll", actor, k, json.dumps(f), "{}") for k, f in per_key.items()])
        return ids, seqs

    def delete_faces(self, c: Conn, face_ids: Sequence[int], *, event: str, actor: str | None,
                     **detail: object) -> tuple[list[bytes], list[int]]:
        """Delete faces in the caller's transaction, logged and audited per identity (one line for the faces of
        no identity); returns (their embeddings, change seqs). Identities and photos are kept."""
        if not face_ids:
            return [], []
        rows = []
        for i in range(0, len(face_ids), 500):
            chunk = list(face_ids[i : i + 500])
            rows += c.execute(f"SELECT f.id, i.key, f.embedding FROM faces f LEFT JOIN identities i "
                              f"ON i.id = f.identity_id WHERE f.id IN ({','.join('?' * len(chunk))})", chunk).fetchall()
        c.executemany("DELETE FROM faces WHERE id = ?", [(int(r[0]),) for r in rows])
        seqs = self.insert_changes(c, [(int(r[0]), DELETE) for r in rows])
        by_key: dict[str | None, list[int]] = {}
        for r in rows:
            by_key.setdefault(None if r[1] is None else str(r[1]), []).append(int(r[0]))
        extra = {k: v for k, v in detail.items() if v is not None}
        for key, ids in by_key.items():
            self.audit(c, event, actor=actor, identity=key, face_ids=sorted(ids), **extra)
        return [bytes(r[2]) for r in rows], seqs

    def face_owner(self, c: Conn, face_id: int) -> FaceOwner | None:
        """The face and its identity (None: a photo's unnamed face), if it exists."""
        row = c.execute("SELECT i.key FROM faces f LEFT JOIN identities i ON i.id = f.identity_id WHERE f.id = ?",
                        (face_id,)).fetchone()
        return None if row is None else FaceOwner(face_id, None if row[0] is None else str(row[0]))

    def identity_id(self, c: Conn, identity: str) -> int | None:
        row = c.execute("SELECT id FROM identities WHERE key = ?", (identity,)).fetchone()
        return None if row is None else int(row[0])

    def ensure_identity(self, c: Conn, identity: str) -> int:
        """The identity's row id, the identity created (no metadata) if new."""
        c.execute("INSERT INTO identities(key, metadata, created_at) VALUES (?, '{}', ?) ON CONFLICT (key) DO NOTHING",
                  (identity, time.time()))
        ident = self.identity_id(c, identity)
        assert ident is not None
        return ident

    def identity_face_ids(self, c: Conn, identity_id: int) -> list[int]:
        return [int(r[0]) for r in c.execute("SELECT id FROM faces WHERE identity_id = ? ORDER BY id", (identity_id,))]

    def delete_identity_row(self, c: Conn, identity_id: int) -> None:
        c.execute("DELETE FROM identities WHERE id = ?", (identity_id,))

    def rename_identity(self, c: Conn, identity_id: int, new_key: str) -> None:
        c.execute("UPDATE identities SET key = ? WHERE id = ?", (new_key, identity_id))

    def set_identity_metadata(self, c: Conn, identity_id: int, metadata: dict[str, Any]) -> None:
        c.execute("UPDATE identities SET metadata = ? WHERE id = ?", (json.dumps(metadata), identity_id))

    # --- reads ---------------------------------------------------------------------------------------
    def count(self) -> tuple[int, int]:
        """(identities, faces)."""
        with self.read(consistent=True) as c:
            return (int(c.execute("SELECT COUNT(*) FROM identities").fetchone()[0]),
                    int(c.execute("SELECT COUNT(*) FROM faces").fetchone()[0]))

    def count_faces(self, c: Conn) -> int:
        return int(c.execute("SELECT COUNT(*) FROM faces").fetchone()[0])

    _IDENTITY_COLS = "i.key, i.metadata, i.created_at, (SELECT COUNT(*) FROM faces f WHERE f.identity_id = i.id)"

    def get_identity(self, identity: str) -> IdentityRecord | None:
        with self.read() as c:
            row = c.execute(f"SELECT {self._IDENTITY_COLS} FROM identities i WHERE i.key = ?", (identity,)).fetchone()
        return None if row is None else identity_record(row)

    def list_identities(self, limit: int, offset: int, prefix: str) -> tuple[list[IdentityRecord], int]:
        where, args = ("WHERE substr(i.key, 1, ?) = ?", [len(prefix), prefix]) if prefix else ("", [])
        with self.read(consistent=True) as c:
            total = int(c.execute(f"SELECT COUNT(*) FROM identities i {where}", args).fetchone()[0])
            rows = c.execute(f"SELECT {self._IDENTITY_COLS} FROM identities i {where} ORDER BY i.key LIMIT ? OFFSET ?",
                             [*args, limit, offset]).fetchall()
        return [identity_record(r) for r in rows], total

    FACE_COLS = ("f.id, i.key, f.model_version, f.box, f.score, f.sha256, f.created_at, "
                 "f.thumbnail IS NOT NULL, f.source IS NOT NULL, p.key, f.cluster_id")
    # a face and what it belongs to: an identity, a photo, both
    FACES = "faces f LEFT JOIN identities i ON i.id = f.identity_id LEFT JOIN photos p ON p.id = f.photo_id"

    def list_faces(self, identity: str, limit: int, offset: int) -> tuple[list[FaceRecord], int] | None:
        with self.read(consistent=True) as c:
            ident = self.identity_id(c, identity)
            if ident is None:
                return None
            total = int(c.execute("SELECT COUNT(*) FROM faces WHERE identity_id = ?", (ident,)).fetchone()[0])
            rows = c.execute(f"SELECT {self.FACE_COLS} FROM {self.FACES} WHERE f.identity_id = ? "
                             "ORDER BY f.id LIMIT ? OFFSET ?",
                             (ident, limit, offset)).fetchall()
        return [face_record(r) for r in rows], total

    def get_face(self, face_id: int) -> FaceRecord | None:
        with self.read() as c:
            row = c.execute(f"SELECT {self.FACE_COLS} FROM {self.FACES} WHERE f.id = ?", (face_id,)).fetchone()
        return None if row is None else face_record(row)

    def face_column(self, face_id: int, column: str) -> tuple[bool, bytes | None]:
        """(face exists, its ``column``: thumbnail or source)."""
        assert column in ("thumbnail", "source")
        with self.read() as c:
            row = c.execute(f"SELECT {column} FROM faces WHERE id = ?", (face_id,)).fetchone()
        return (row is not None, None if row is None or row[0] is None else bytes(row[0]))

    def faces_with_sha256(self, sha256: str) -> list[FaceRecord]:
        with self.read() as c:
            return [face_record(r) for r in c.execute(
                f"SELECT {self.FACE_COLS} FROM {self.FACES} WHERE f.sha256 = ?",
                (sha256,))]

    def identity_embeddings(self, identity: str) -> tuple[list[int], bytes] | None:
        """(face ids, their embeddings joined) of one identity, by face id; None if there is no such identity."""
        with self.read(consistent=True) as c:
            ident = self.identity_id(c, identity)
            if ident is None:
                return None
            rows = c.execute("SELECT id, embedding FROM faces WHERE identity_id = ? ORDER BY id", (ident,)).fetchall()
        return [int(r[0]) for r in rows], b"".join(bytes(r[1]) for r in rows)

    def owners(self, face_ids: list[int]) -> dict[int, str]:
        """face id -> identity key, for those of ``face_ids`` that exist and belong to an identity."""
        out: dict[int, str] = {}
        if not face_ids:
            return out
        with self.read() as c:
            for i in range(0, len(face_ids), 500):
                chunk = face_ids[i : i + 500]
                out.update((int(f), str(k)) for f, k in c.execute(
                    f"SELECT f.id, i.key FROM faces f JOIN identities i ON i.id = f.identity_id "
                    f"WHERE f.id IN ({','.join('?' * len(chunk))})", chunk))
        return out

    def face_ids(self, space: Space) -> list[int]:
        """The ids of the faces that belong to ``space`` (:mod:`index.spaces`)."""
        with self.read() as c:
            return [int(r[0]) for r in c.execute(f"SELECT id FROM faces WHERE {_space_column(space)} IS NOT NULL "
                                                 "ORDER BY id")]

    def count_in_space(self, space: Space) -> int:
        with self.read() as c:
            return int(c.execute(f"SELECT COUNT(*) FROM faces WHERE {_space_column(space)} IS NOT NULL").fetchone()[0])

    def identity_sha256s(self) -> set[tuple[str, str]]:
        with self.read() as c:
            return {(str(r[0]), str(r[1])) for r in c.execute(
                "SELECT i.key, f.sha256 FROM faces f JOIN identities i ON i.id = f.identity_id "
                "WHERE f.sha256 IS NOT NULL")}

    def audit_log(self, since: int, limit: int) -> list[AuditEntry]:
        with self.read() as c:
            rows = c.execute("SELECT seq, at, event, actor, identity, face_ids, detail FROM audit WHERE seq > ? "
                             "ORDER BY seq LIMIT ?", (since, limit)).fetchall()
        return [AuditEntry(int(r[0]), r[1], r[2], r[3], r[4], json.loads(r[5]), json.loads(r[6])) for r in rows]

    def generations(self) -> list[Generation]:
        with self.read() as c:
            return [Generation(int(r[0]), r[1], int(r[2]), int(r[3]), r[4]) for r in c.execute(
                "SELECT id, model_version, dim, faces, switched_at FROM generations ORDER BY id")]


def _space_column(space: Space) -> str:
    """The column that puts a face in ``space``: enrolled faces (and named photo faces) have an identity; every
    photo face has a photo."""
    return "identity_id" if space == "people" else "photo_id"
