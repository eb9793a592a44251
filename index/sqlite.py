"""The embedded tier's store: one SQLite file (WAL, synchronous=FULL, secure_delete).

``secure_delete`` makes SQLite overwrite deleted rows with zeros; :meth:`SqliteStore.erase_deleted` then moves
the WAL into the database file and truncates it, so a deleted face's bytes are left in no file.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import numpy as np

from index import schema
from index.records import NewFace
from index.store import Conn, Store


def read_export(path: Path) -> tuple[dict[str, str], dict[str, dict[str, Any]], list[tuple[str, NewFace]]]:
    """An exported gallery file (``index.transfer.export``, any format version): (meta, identity -> metadata, faces
    with their identity). Raises sqlite3.DatabaseError when the file is not one."""
    src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        meta = {str(k): str(v) for k, v in src.execute("SELECT key, value FROM meta")}
        keys, metadata = {}, {}
        for ident, key, meta_json in src.execute("SELECT id, key, metadata FROM identities"):
            keys[int(ident)] = str(key)
            metadata[str(key)] = json.loads(meta_json)
        cols = {r[1] for r in src.execute("PRAGMA table_info(faces)")}
        source_cols = "source, source_geometry" if "source" in cols else "NULL, NULL"
        faces = [(keys[int(r[0])], NewFace(np.frombuffer(r[1], dtype=np.float32), json.loads(r[2]) if r[2] else None,
                                           r[3], r[4], r[5], r[6], json.loads(r[7]) if r[7] else None))
                 for r in src.execute(f"SELECT identity_id, embedding, box, score, sha256, thumbnail, {source_cols} "
                                      "FROM faces WHERE identity_id IS NOT NULL")]
    finally:
        src.close()
    return meta, metadata, faces


class _Connection(sqlite3.Connection):
    """A connection that can be weakly referenced, so a finished thread's connection is closed with it."""


class SqliteStore(Store):
    """Thread-local connections over one database file; one process writes (the serving one)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        # weak: worker threads come and go (anyio retires idle ones); their connections must go with them
        self._all: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._lock = threading.Lock()
        conn = self.conn
        conn.executescript(schema.tables("sqlite"))
        self._add_columns(conn)
        self._rebuild_faces(conn)
        conn.executescript(schema.INDEXES)

    @staticmethod
    def _add_columns(conn: sqlite3.Connection) -> None:
        """Galleries made before a column existed get it (NULL for the faces already stored)."""
        for table, column, decl in schema.added_columns("sqlite"):
            if column not in {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")

    @staticmethod
    def _rebuild_faces(conn: sqlite3.Connection) -> None:
        """Rebuild the faces table when its declaration is an old one: before face ids were AUTOINCREMENT (SQLite
        would hand the largest deleted id to the next face, so a client's old face id would name someone else's
        face), or before a face could belong to a photo without an identity (``identity_id`` NOT NULL). SQLite's
        own recipe: foreign keys off, a new table filled from the old, the old dropped, the new renamed, the
        AUTOINCREMENT counter carried over; other tables' references then name the new table."""
        row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'faces'").fetchone()
        if row is None:
            return
        decl = " ".join(row[0].upper().split())
        if "AUTOINCREMENT" in decl and "IDENTITY_ID INTEGER NOT NULL" not in decl:
            return
        create = schema.table("sqlite", "faces").replace("faces(", "faces_rebuilt(", 1)
        cols = ", ".join(r[1] for r in conn.execute("PRAGMA table_info(faces)"))
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute("BEGIN IMMEDIATE")
        try:
            counter = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'faces'").fetchone() \
                if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone() else None
            conn.execute(create)
            conn.execute(f"INSERT INTO faces_rebuilt({cols}) SELECT {cols} FROM faces")
            conn.execute("DROP TABLE faces")
            conn.execute("ALTER TABLE faces_rebuilt RENAME TO faces")
            if counter is not None:
                conn.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'faces'", (int(counter[0]),))
            conn.execute("PRAGMA foreign_key_check")
        except BaseException:
            conn.execute("ROLLBACK")
            conn.execute("PRAGMA foreign_keys=ON")
            raise
        conn.execute("COMMIT")
        conn.execute("PRAGMA foreign_keys=ON")

    @property
    def conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30,
                                factory=_Connection)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=FULL")
            c.execute("PRAGMA foreign_keys=ON")
            c.execute("PRAGMA secure_delete=ON")  # deleted rows are overwritten with zeros, not left in free space
            self._local.conn = c
            with self._lock:
                self._all.add(c)
        return c

    @contextmanager
    def transaction(self) -> Iterator[Conn]:
        """BEGIN IMMEDIATE ... COMMIT (rolled back on any exception)."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            yield cast(Conn, c)
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")

    @contextmanager
    def read(self, *, consistent: bool = False) -> Iterator[Conn]:
        c = self.conn
        if not consistent or c.in_transaction:
            yield cast(Conn, c)
            return
        c.execute("BEGIN")  # one read snapshot, ended at once: a long read would hold off the WAL checkpoint
        try:
            yield cast(Conn, c)
        finally:
            c.execute("COMMIT")

    def seq(self, c: Conn | None = None) -> int:
        row = (c or cast(Conn, self.conn)).execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
        return int(row[0]) if row else 0

    def erase_deleted(self) -> None:
        """Copy the WAL into the database file and truncate it to zero bytes (waits for readers)."""
        deadline = time.monotonic() + 60.0
        while True:  # a long read (a background index rebuild) can hold it off; it ends
            busy, _, _ = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                return
            if time.monotonic() > deadline:
                raise sqlite3.OperationalError("WAL checkpoint blocked by a reader for 60 s")
            time.sleep(0.05)

    def compact(self) -> dict[str, Any]:
        """``secure_delete`` already zeroed every deleted row and each delete truncated the WAL: VACUUM only
        gives the freed pages back to the file system, then the WAL it wrote is truncated."""
        self.conn.execute("VACUUM")
        self.erase_deleted()
        return {"tables": "rewritten (VACUUM)", "wal": "truncated", "left": []}

    def size_bytes(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def close(self) -> None:
        with self._lock:
            for c in list(self._all):
                with contextlib.suppress(sqlite3.Error):
                    c.close()
            self._all = weakref.WeakSet()
        self._local = threading.local()

