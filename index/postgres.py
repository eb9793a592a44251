"""The replica tier's store: PostgreSQL through psycopg 3 and a connection pool, shared by any number of replicas.

Writers take one transaction-scoped advisory lock, so changes get their sequence numbers in commit order, and
``NOTIFY facesearch_changes`` with the last one: other replicas wake on it (:meth:`wait_for_changes`) and read
the log after their cursor; they poll when a notification is missed. An unreachable server (down, restarting,
the pool exhausted for ``timeout`` seconds) raises :class:`StoreUnavailable`, which the service answers with 503.

Erasure: PostgreSQL keeps a deleted row's bytes in its heap and TOAST pages until VACUUM reclaims them and the
space is reused, and in WAL segments until they are recycled; :meth:`erase_deleted` runs VACUUM on the tables
that hold biometric data after each delete, which makes the space reusable but does not zero it.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import psycopg
from psycopg_pool import ConnectionPool

from index import schema as schema_sql
from index.errors import StoreUnavailable
from index.spaces import Placed
from index.store import Conn, Store, placed_rows

log = logging.getLogger(__name__)
CHANNEL = "facesearch_changes"
WRITE_LOCK = 0x46616365  # pg_advisory_xact_lock key serialising writers ("Face")
SCHEMA_LOCK = WRITE_LOCK + 1

# what psycopg raises when the server is gone or cannot be reached (PoolTimeout is an OperationalError)
_UNREACHABLE = (psycopg.OperationalError, psycopg.InterfaceError)


@functools.lru_cache(maxsize=512)
def _pg(sql: str) -> str:
    """The shared SQL's ``?`` marks as psycopg's ``%s`` (none of the queries holds a literal ``?`` or ``%``)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _PgConn:
    """A psycopg connection that runs the shared SQL."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.raw.execute(_pg(sql), params)

    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        if params:
            with self.raw.cursor() as cur:
                cur.executemany(_pg(sql), params)


class PostgresStore(Store):
    """``url``: a libpq connection string (``postgresql://user@host:port/db``). ``schema``: the PostgreSQL schema
    that holds this gallery's tables (a collection's: :mod:`index.collections`), created if missing; ``None``: the
    connection's own search path (the default collection)."""

    shared = True
    keep_changes = 100_000

    def __init__(self, url: str, *, pool_size: int = 8, timeout: float = 2.0, schema: str | None = None) -> None:
        self.url, self.timeout, self.schema = url, timeout, schema
        # a collection's tables are found through the search path; its writers and notifications are its own
        self._options = {"options": f"-c search_path={schema}"} if schema else {}
        self.channel = f"{CHANNEL}_{schema}" if schema else CHANNEL
        self.write_lock = (WRITE_LOCK, zlib.crc32(schema.encode()) & 0x7FFFFFFF if schema else 0)
        self.pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url, min_size=1, max_size=max(2, pool_size), timeout=timeout, open=False,
            # text comes back as str on any server encoding (a SQL_ASCII database would otherwise answer bytes)
            kwargs={"autocommit": True, "connect_timeout": max(1, int(timeout)), "client_encoding": "UTF8",
                    **self._options},
            check=ConnectionPool.check_connection, name="facesearch")
        self.pool.open(wait=False)
        self._listener: psycopg.Connection[Any] | None = None
        self._listen_lock = threading.Lock()
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))  # replicas starting together
            if schema:
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            conn.execute(schema_sql.tables("postgresql"))
            # galleries made before photos: a face may now belong to a photo without an identity
            conn.execute("ALTER TABLE faces ALTER COLUMN identity_id DROP NOT NULL")
            for table, column, decl in schema_sql.added_columns("postgresql"):
                conn.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {decl}")
            conn.execute(schema_sql.INDEXES)

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self.pool.connection() as conn:
                yield conn
        except _UNREACHABLE as e:
            raise StoreUnavailable(f"PostgreSQL is unavailable: {str(e).splitlines()[0] if str(e) else e!r}") from e

    @contextmanager
    def transaction(self) -> Iterator[Conn]:
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", self.write_lock)
            yield cast(Conn, _PgConn(conn))

    @contextmanager
    def read(self, *, consistent: bool = False) -> Iterator[Conn]:
        with self._connection() as conn:
            if not consistent:
                yield cast(Conn, _PgConn(conn))
                return
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield cast(Conn, _PgConn(conn))

    def seq(self, c: Conn | None = None) -> int:
        if c is None:
            with self.read(consistent=True) as r:
                return self.seq(r)
        last = c.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]
        return max(int(last), self.pruned_through(c))

    def insert_returning(self, c: Conn, sql: str, rows: Sequence[Sequence[Any]]) -> list[int]:
        # one pipelined round trip for all rows, not one per row: bulk enrollment is bound by round trips
        if not rows:
            return []
        with cast(_PgConn, c).raw.cursor() as cur:
            cur.executemany(_pg(sql), rows, returning=True)
            out = []
            while True:
                out.append(int(cur.fetchone()[0]))  # type: ignore[index]
                if not cur.nextset():
                    return out

    def insert_changes(self, c: Conn, changes: Sequence[tuple[int, int]]) -> list[int]:
        seqs = super().insert_changes(c, changes)
        if seqs:
            c.execute("SELECT pg_notify(?, ?)", (self.channel, str(seqs[-1])))  # delivered when the transaction commits
        return seqs

    def all_embeddings(self, c: Conn, batch: int = 50_000) -> Iterator[Placed]:
        # a server-side cursor: a million embeddings are not fetched into memory at once
        raw = cast(_PgConn, c).raw
        with raw.cursor(name="facesearch_all_embeddings") as cur:
            cur.execute(self.ALL_EMBEDDINGS)
            while rows := cur.fetchmany(batch):
                yield placed_rows(rows)

    def wait_for_changes(self, timeout: float) -> None:
        """Block until a NOTIFY arrives or ``timeout`` passes; on a broken connection, reconnect next time."""
        with self._listen_lock:
            try:
                if self._listener is None or self._listener.closed:
                    self._listener = psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, int(timeout)))
                    self._listener.execute(f"LISTEN {self.channel}")
                for _ in self._listener.notifies(timeout=timeout, stop_after=1):
                    pass
            except _UNREACHABLE as e:
                log.debug("change notifications unavailable (%s): polling", e)
                if self._listener is not None:
                    self._listener.close()
                self._listener = None
                time.sleep(timeout)

    def erase_deleted(self) -> None:
        """VACUUM the tables that held the deleted rows (outside any transaction): their tuples are removed
        from the heap, TOAST and indexes now rather than whenever autovacuum comes."""
        with self._connection() as conn:
            conn.execute("VACUUM faces, reembedding")

    def compact(self) -> dict[str, Any]:
        """A plain VACUUM (after every delete) frees deleted rows' space but leaves their bytes in the table
        and TOAST files until reused, and the WAL holds them until its segments are overwritten. Here: VACUUM
        FULL writes the tables holding faces and identities into new files (the old ones are unlinked), then a
        WAL switch and a checkpoint retire every segment written before. That retires their bytes from the
        server's files only where nothing keeps WAL: ``wal_recycle = off`` (else retired segments are renamed for
        reuse, bytes intact), no archiving, no replication slots, ``wal_keep_size = 0``; what does is reported
        under ``"left"``. The WAL steps need a superuser (or the pg_checkpoint role and EXECUTE on
        pg_switch_wal). VACUUM FULL locks each table while it is rewritten: writes and searches wait."""
        report: dict[str, Any] = {"left": []}
        with self._connection() as conn:
            conn.execute("VACUUM (FULL) faces, reembedding, identities, photos")
            report["tables"] = "rewritten (VACUUM FULL faces, reembedding, identities, photos)"
            try:
                conn.execute("SELECT pg_switch_wal()")
                conn.execute("CHECKPOINT")
                report["wal"] = "switched and checkpointed: earlier segments retired"
            except psycopg.errors.InsufficientPrivilege as e:
                report["wal"] = "not retired"
                report["left"].append(f"WAL: {str(e).splitlines()[0]} (needs a superuser or pg_checkpoint)")
            setting = {name: str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
                       for name in ("wal_recycle", "archive_mode", "wal_keep_size")}
            slots = int(conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone()[0])  # type: ignore[index]
        if setting["wal_recycle"] == "on":
            report["left"].append("WAL: wal_recycle = on renames retired segments for reuse, their bytes intact")
        if setting["archive_mode"] != "off":
            report["left"].append(f"WAL archive: archive_mode = {setting['archive_mode']} keeps copies")
        if setting["wal_keep_size"] not in ("0", "0MB", "0kB"):
            report["left"].append(f"WAL: wal_keep_size = {setting['wal_keep_size']} keeps segments")
        if slots:
            report["left"].append(f"WAL: {slots} replication slot(s) keep segments; standbys hold copies")
        return report

    def size_bytes(self) -> int:
        with self.read() as c:
            return int(c.execute("SELECT pg_database_size(current_database())").fetchone()[0])

    def destroy(self) -> None:
        """A collection's store: its schema is dropped with every table (their files unlinked by the server)."""
        if not self.schema:
            raise ValueError("the default collection's tables are never dropped")
        with self._connection() as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
        self.close()

    def close(self) -> None:
        with self._listen_lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
        self.pool.close()
