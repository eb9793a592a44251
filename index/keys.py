"""API keys kept in the store, so that every replica sees a key created or revoked at once: only a key's SHA-256 is
stored (a key is 32 random bytes: a fast hash cannot be reversed), with its role, the collections it is limited to
(none: all), and when it was made, last used and revoked. The service reads them through :class:`KeyRing`'s
short cache; ``facesearch keys`` writes them."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

from index.errors import NotFound
from index.store import Conn, Store

Role = Literal["search", "enroll", "admin"]
ROLES: tuple[Role, ...] = ("search", "enroll", "admin")  # each may do what the ones before it may
PREFIX = "fsk_"


@dataclass(frozen=True)
class KeyRecord:
    id: str
    role: Role
    collections: tuple[str, ...]  # empty: every collection
    created_at: float
    last_used: float | None
    revoked_at: float | None

    def may(self, needed: Role) -> bool:
        return ROLES.index(self.role) >= ROLES.index(needed)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id(key: str) -> str:
    """How the audit and ``keys list`` name a key: a short hash, never the key (the same for keys from the
    environment)."""
    return "key-" + digest(key)[:10]


_COLS = "id, role, collections, created_at, last_used, revoked_at"


def _record(row: tuple[Any, ...]) -> KeyRecord:
    return KeyRecord(str(row[0]), row[1], tuple(json.loads(str(row[2]))), float(row[3]),
                     None if row[4] is None else float(row[4]), None if row[5] is None else float(row[5]))


def create(store: Store, role: Role, collections: list[str] | None = None) -> tuple[str, KeyRecord]:
    """A new key: (the key, shown once and never stored; its record)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    key = PREFIX + secrets.token_urlsafe(32)
    with store.transaction() as c:
        c.execute("INSERT INTO api_keys(id, hash, role, collections, created_at) VALUES (?, ?, ?, ?, ?)",
                  (key_id(key), digest(key), role, json.dumps(sorted(set(collections or []))), time.time()))
        store.audit(c, "key_created", actor="cli", key=key_id(key), role=role, collections=collections or [])
        row = c.execute(f"SELECT {_COLS} FROM api_keys WHERE id = ?", (key_id(key),)).fetchone()
    return key, _record(tuple(row))


def listed(store: Store) -> list[KeyRecord]:
    with store.read() as c:
        return [_record(tuple(r)) for r in c.execute(f"SELECT {_COLS} FROM api_keys ORDER BY created_at, id")]


def revoke(store: Store, kid: str) -> KeyRecord:
    with store.transaction() as c:
        if c.execute("SELECT 1 FROM api_keys WHERE id = ? AND revoked_at IS NULL", (kid,)).fetchone() is None:
            raise NotFound(f"no active key {kid!r}")
        c.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (time.time(), kid))
        store.audit(c, "key_revoked", actor="cli", key=kid)
        row = c.execute(f"SELECT {_COLS} FROM api_keys WHERE id = ?", (kid,)).fetchone()
    return _record(tuple(row))


def find(c: Conn, key: str) -> KeyRecord | None:
    """The active key whose hash this key has, if any."""
    row = c.execute(f"SELECT {_COLS} FROM api_keys WHERE hash = ? AND revoked_at IS NULL", (digest(key),)).fetchone()
    return None if row is None else _record(tuple(row))


def any_made(c: Conn) -> bool:
    """Whether a key was ever made here (revoking the last one must not open the API)."""
    return c.execute("SELECT 1 FROM api_keys LIMIT 1").fetchone() is not None


def touch(store: Store, kid: str, when: float) -> None:
    with store.transaction() as c:
        c.execute("UPDATE api_keys SET last_used = ? WHERE id = ?", (when, kid))
