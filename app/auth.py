"""Who calls and what they may do: API keys with roles, limited to collections, rate-limited per key.

Keys: ``FACESEARCH_API_KEYS`` (admin keys for every collection, from the environment) and the keys in the store
(``facesearch keys create --role ...``, :mod:`index.keys`), read through a cache of ``CACHE_S`` so that a key revoked
on one replica is refused by all within a second. With neither (no key ever made in the store: revoking the last
one keeps the API closed), the API is open: every caller is ``open``, an admin.
Roles: ``search`` (search, verify, embed, find photos, read identities, photos and clusters), ``enroll`` (and enroll,
index photos, name, merge and move), ``admin`` (and delete, export, audit). :data:`NEEDS` names the least role of
each route (its path template under /v1); a route it does not name needs ``admin``.
"""

from __future__ import annotations

import math
import re
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from index import keys
from index.keys import Role
from index.store import Store

CACHE_S = 0.5  # a stored key's lookup is reused this long (a revocation reaches every replica within a second)
TOUCH_S = 60.0  # a key's last use is written at most this often
DEFAULT_COLLECTION = "default"  # every route under /v1 is this collection's

NEEDS: dict[tuple[str, str], Role] = {
    **{("POST", p): "search" for p in ("/search", "/verify", "/embed", "/photos/search")},
    **{("GET", p): "search" for p in (
        "/identities", "/identities/{identity}", "/faces/{face_id}/thumbnail", "/photos",
        "/photos/{photo_id:photo}", "/clusters", "/clusters/{cluster_id:int}", "/clusters/rebuild",
        "/info", "/collections", "/collections/{collection}")},
    **{("POST", p): "enroll" for p in (
        "/identities/{identity}/faces", "/photos", "/identities/{identity}/merge", "/clusters/rebuild",
        "/clusters/{cluster_id:int}/name", "/clusters/{cluster_id:int}/merge", "/faces/{face_id}/cluster",
        "/faces/{face_id}/name")},
    ("PATCH", "/identities/{identity}"): "enroll",
}


@dataclass(frozen=True)
class Principal:
    id: str  # the key's id (never the key), or "open"
    role: Role
    collections: tuple[str, ...] = ()  # empty: every collection

    def may(self, needed: Role) -> bool:
        return keys.ROLES.index(self.role) >= keys.ROLES.index(needed)

    def may_use(self, collection: str) -> bool:
        return not self.collections or collection in self.collections


OPEN = Principal("open", "admin")


def given_key(headers: Mapping[str, str]) -> str:
    """The key a request's headers carry: ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``."""
    key = headers.get("x-api-key")
    if key is not None:
        return key
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


def needed_role(method: str, route_path: str) -> Role:
    """The least role of a route, by its path template under /v1 (FastAPI gives it with or without the prefix); a
    route in a collection (``/collections/{collection}/...``) needs what the same route under /v1 needs."""
    return NEEDS.get((method, _IN_COLLECTION.sub("", route_path.removeprefix("/v1"))), "admin")


_IN_COLLECTION = re.compile(r"^/collections/\{collection\}(?=/)")


class NeedsStore(Exception):
    """The answer needs a read of the store (the cache is stale): ask again off the event loop."""


class KeyRing:
    """The keys the service accepts; :meth:`authenticate` is safe to call from any thread."""

    def __init__(self, env_keys: list[str]) -> None:
        self.env_keys = list(env_keys)
        self.store: Store | None = None
        self._lock = threading.Lock()
        self._found: dict[str, tuple[float, keys.KeyRecord | None]] = {}  # sha256 -> (when read, the key)
        self._any: tuple[float, bool] = (0.0, False)
        self._touched: dict[str, float] = {}

    def attach(self, store: Store) -> None:
        """The store's keys count from now on (the gallery is open)."""
        self.store = store

    @property
    def open(self) -> bool:
        """No key configured and none ever made in the store: every request is let in."""
        return self.is_open()

    def is_open(self, *, block: bool = True) -> bool:
        return not self.env_keys and not self._stored_keys_exist(block)

    def _stored_keys_exist(self, block: bool) -> bool:
        if self.store is None:
            return False
        now = time.monotonic()
        with self._lock:
            when, found = self._any
        if now - when > CACHE_S:
            if not block:
                raise NeedsStore
            with self.store.read() as c:
                found = keys.any_made(c)
            with self._lock:
                self._any = (now, found)
        return found

    def authenticate(self, headers: Mapping[str, str], *, block: bool = True) -> Principal | None:
        """Who the headers' key is; None when it is missing or unknown (and keys are required). ``block=False``:
        raise :class:`NeedsStore` rather than read the store (on the event loop, most answers come from memory)."""
        if self.is_open(block=block):
            return OPEN
        given = given_key(headers)
        if not given:
            return None
        env = False
        for key in self.env_keys:  # compare against every key: timing does not tell which one nearly matched
            env |= secrets.compare_digest(given.encode(), key.encode())
        if env:
            return Principal(keys.key_id(given), "admin")
        record = self._stored(given, block)
        if record is None:
            return None
        return Principal(record.id, record.role, record.collections)

    def _stored(self, given: str, block: bool) -> keys.KeyRecord | None:
        if self.store is None:
            return None
        digest, now = keys.digest(given), time.monotonic()
        with self._lock:
            cached = self._found.get(digest)
        if cached is not None and now - cached[0] <= CACHE_S:
            return cached[1]
        if not block:
            raise NeedsStore
        with self.store.read() as c:
            record = keys.find(c, given)
        with self._lock:
            if len(self._found) > 10_000:  # unknown keys sent at random must not grow it without bound
                self._found.clear()
            self._found[digest] = (now, record)
            touch = record is not None and time.time() - self._touched.get(record.id, 0.0) > TOUCH_S
            if touch and record is not None:
                self._touched[record.id] = time.time()
        if touch and record is not None:
            keys.touch(self.store, record.id, time.time())
        return record


class RateLimit:
    """A token bucket per key: ``rate`` requests a second on average, bursts of up to ``rate`` (at least one)."""

    def __init__(self, rate: float) -> None:
        self.rate, self.burst = rate, max(1.0, rate)
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, when)

    def wait(self, who: str) -> int:
        """0 when the request may go now (a token is taken), else whole seconds until one is there."""
        now = time.monotonic()
        with self._lock:
            tokens, when = self._buckets.get(who, (self.burst, now))
            tokens = min(self.burst, tokens + (now - when) * self.rate)
            if tokens >= 1.0:
                self._buckets[who] = (tokens - 1.0, now)
                return 0
            self._buckets[who] = (tokens, now)
            return max(1, math.ceil((1.0 - tokens) / self.rate))
