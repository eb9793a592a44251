"""SQLite store (WAL, synchronous=FULL): the source of truth for identities, faces and embeddings.

Every face added or removed is also written to the ``changes`` log in the same transaction; its
sequence number is the change counter that index snapshots record.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS identities(
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS faces(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    identity_id INTEGER NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    embedding BLOB NOT NULL,
    model_version TEXT NOT NULL,
    box TEXT,
    score REAL,
    sha256 TEXT,
    thumbnail BLOB,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS faces_identity ON faces(identity_id);
CREATE INDEX IF NOT EXISTS faces_sha256 ON faces(sha256);
CREATE TABLE IF NOT EXISTS changes(
    seq INTEGER PRIMARY KEY AUTOINCREMENT, face_id INTEGER NOT NULL, op INTEGER NOT NULL
);
"""

ADD, DELETE = 1, -1


class _Connection(sqlite3.Connection):
    """A connection that can be weakly referenced, so a finished thread's connection is closed with it."""


class Store:
    """Thread-local connections over one database file; the caller serialises writes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        # weak: worker threads come and go (anyio retires idle ones); their connections must go with them
        self._all: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._lock = threading.Lock()
        conn = self.conn
        conn.executescript(SCHEMA)
        self._migrate_face_ids(conn)

    @staticmethod
    def _migrate_face_ids(conn: sqlite3.Connection) -> None:
        """Galleries made before face ids were AUTOINCREMENT: without it SQLite hands the largest deleted id
        to the next face, so a client's old face id would name someone else's face, and an index that still
        holds the id as a tombstone would hide the new face. Rebuild the table once with AUTOINCREMENT."""
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'faces'").fetchone()[0]
        if "AUTOINCREMENT" in sql.upper():
            return
        create = SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS faces(") : SCHEMA.index("CREATE INDEX")]
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("ALTER TABLE faces RENAME TO faces_before_autoincrement")
            conn.execute(create)
            conn.execute("INSERT INTO faces SELECT * FROM faces_before_autoincrement")
            conn.execute("DROP TABLE faces_before_autoincrement")
            conn.execute("CREATE INDEX IF NOT EXISTS faces_identity ON faces(identity_id)")
            conn.execute("CREATE INDEX IF NOT EXISTS faces_sha256 ON faces(sha256)")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @property
    def conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30,
                                factory=_Connection)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=FULL")
            c.execute("PRAGMA foreign_keys=ON")
            self._local.conn = c
            with self._lock:
                self._all.add(c)
        return c

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT (rolled back on any exception)."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            yield c
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, c: sqlite3.Connection, key: str, value: object) -> None:
        c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                  (key, value if isinstance(value, str) else json.dumps(value)))

    def seq(self) -> int:
        row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        with self._lock:
            for c in list(self._all):
                with contextlib.suppress(sqlite3.Error):
                    c.close()
            self._all = weakref.WeakSet()
        self._local = threading.local()
