"""Vectors in Milvus, for galleries beyond one machine's memory: a collection per search space (:mod:`index.spaces`),
model version and dimension.

``uri`` names a Milvus server (``http://milvus:19530``) or a local file, which pymilvus serves with Milvus Lite,
the same engine in process. The collection is shared by every replica and derived from the store: which changes
it holds is recorded in the store (:class:`index.gallery.Gallery` applies the change log to it under the store's
write lock), and ``facesearch gallery reindex`` rebuilds it from the store. Same interface as
:class:`index.vectors.VectorIndex` where a shared index has one: no snapshots, no tombstones.

Erasure: Milvus marks deleted entities and drops them from its segments at compaction; :meth:`remove` asks for a
compaction after each delete (a Milvus server runs it in the background; Milvus Lite has none).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from index.errors import StoreUnavailable
from index.spaces import Space
from index.vectors import GRAPHS

log = logging.getLogger(__name__)
T = TypeVar("T")


def _unavailable(method: Callable[..., T]) -> Callable[..., T]:
    """Milvus's errors (server down, timeouts) as StoreUnavailable, which the service answers with 503."""
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        from pymilvus.exceptions import MilvusException

        try:
            return method(*args, **kwargs)
        except MilvusException as e:
            raise StoreUnavailable(f"Milvus is unavailable: {e}") from e

    return wrapper
INSERT_BATCH = 2_000
# Milvus searches rows still in growing segments on a slow path (Milvus Lite: 1.2 s per query with 70,000 rows
# growing, 68 ms once flushed, measured; a flush took 2 s): seal them after this many rows written by this process
LIVE_MAX_AGE_S = 1.0  # another replica's write is counted in a search's threshold within this
FLUSH_EVERY = 2_000


def collection_name(model_version: str, dim: int, space: Space | None, prefix: str | None = None) -> str:
    """Letters, digits and underscores only (Milvus's rule), one per space, model version and dimension (``None``:
    the one collection of every face that galleries had before the spaces), and ``prefix`` (a FaceSearch
    collection's storage tag, :mod:`index.collections`; none for the default collection)."""
    name = f"{space or 'faces'}_{dim}_" + hashlib.sha256(model_version.encode()).hexdigest()[:16]
    return f"{prefix}_{name}" if prefix else name


class MilvusIndex:
    kind = "milvus"  # one collection for every replica: its writes are ordered by the store's write lock
    tombstone_fraction = 0.0

    def __init__(self, uri: str, dim: int, model_version: str, space: Space, *, index_type: str = "FLAT",
                 client: Any = None, prefix: str | None = None) -> None:
        from pymilvus import MilvusClient  # the Milvus tier's dependency only

        self.uri, self.dim, self.index_type, self.space, self.prefix = uri, dim, index_type, space, prefix
        self.graph = GRAPHS[space or "people"]  # HNSW's parameters (a collection from before the spaces: people's)
        self.collection = collection_name(model_version, dim, space, prefix)
        self._owns_client = client is None  # the spaces' collections share one client: its first owner closes it
        self.client: Any = client if client is not None else MilvusClient(uri)
        self._unflushed = 0
        self._live: tuple[float, int] | None = None  # (when read, count)
        if not self.client.has_collection(self.collection):
            self._create()
        self.client.load_collection(self.collection)

    def _create(self) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        params = self.client.prepare_index_params()
        extra = {"M": self.graph.m, "efConstruction": self.graph.ef_construction} if self.index_type == "HNSW" else {}
        params.add_index(field_name="vector", index_type=self.index_type, metric_type="IP", params=extra)
        self.client.create_collection(self.collection, schema=schema, index_params=params,
                                      consistency_level="Strong")

    @property
    def name(self) -> str:
        return str(self.collection)

    @_unavailable
    def reset(self) -> None:
        """Drop the collection and start an empty one (a re-index)."""
        self.client.drop_collection(self.collection)
        self._create()
        self.client.load_collection(self.collection)
        self._unflushed = 0
        self._live = None

    @_unavailable
    def drop_collection_of(self, model_version: str, dim: int, space: Space | None) -> None:
        """Drop another collection: this space's of another model (the generation a re-embedding replaced), or the
        one collection of every face a gallery had before the spaces."""
        name = collection_name(model_version, dim, space, self.prefix)
        if name != self.collection and self.client.has_collection(name):
            self.client.drop_collection(name)

    @property
    @_unavailable
    def live(self) -> int:
        """How many vectors the collection holds. A strongly consistent count(*) is a round trip to Milvus, and every
        search asks (its threshold follows the gallery's size): the count is kept between this process's writes, and
        read again at most every LIVE_MAX_AGE_S for the writes of other replicas."""
        now = time.monotonic()
        if self._live is None or now - self._live[0] > LIVE_MAX_AGE_S:
            res = self.client.query(self.collection, filter="", output_fields=["count(*)"], consistency_level="Strong")
            self._live = (now, int(res[0]["count(*)"]))
        return self._live[1]

    @_unavailable
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """ids: int64 (n,); vectors: float32 (n, dim), L2-normalised. Upserts: applying a change twice is harmless."""
        v = np.asarray(vectors, dtype=np.float32)
        for i in range(0, len(ids), INSERT_BATCH):
            self.client.upsert(self.collection, [{"id": int(f), "vector": x.tolist()}
                                                 for f, x in zip(ids[i : i + INSERT_BATCH], v[i : i + INSERT_BATCH],
                                                                 strict=True)])
        self._unflushed += len(ids)
        self._live = None
        if self._unflushed >= FLUSH_EVERY:
            self.flush()

    @_unavailable
    def flush(self) -> None:
        """Seal what was written into indexed segments (fast searches; Milvus does it by itself at its sizes)."""
        self.client.flush(self.collection)
        self._unflushed = 0

    @_unavailable
    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            self.client.delete(self.collection, ids=[int(i) for i in ids])
            self._live = None
            try:
                self.client.compact(self.collection)
            except Exception as e:  # Milvus Lite has no compaction
                log.debug("no compaction: %s", e)

    @_unavailable
    def search(self, queries: np.ndarray, k: int, *, ef_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """queries: float32 (n, dim) -> (similarities float32 (n, k), ids int64 (n, k); -1 where none)."""
        q = np.asarray(queries, dtype=np.float32)
        params: dict[str, Any] = {"metric_type": "IP"}
        if self.index_type == "HNSW":
            params["params"] = {"ef": max(k, ef_search or self.graph.ef_search)}
        hits = self.client.search(self.collection, data=q.tolist(), limit=max(1, min(k, 16_384)), search_params=params,
                                  output_fields=["id"], consistency_level="Strong")
        width = max((len(h) for h in hits), default=0)
        sims = np.zeros((len(q), width), np.float32)
        ids = np.full((len(q), width), -1, np.int64)
        for r, row in enumerate(hits):
            for c, h in enumerate(row):
                sims[r, c], ids[r, c] = h["distance"], h["id"]
        return sims, ids

    @_unavailable
    def ids(self) -> np.ndarray:
        """All ids, int64, sorted."""
        it = self.client.query_iterator(self.collection, batch_size=10_000, filter="", output_fields=["id"])
        out: list[int] = []
        try:
            while batch := it.next():
                out.extend(int(r["id"]) for r in batch)
        finally:
            it.close()
        return np.sort(np.array(out, dtype=np.int64))

    @_unavailable
    def holds(self, ids: np.ndarray) -> np.ndarray:
        """bool (n,): which of ``ids`` the collection holds."""
        if not len(ids):
            return np.zeros(0, dtype=bool)
        rows = self.client.get(self.collection, ids=[int(i) for i in ids], output_fields=["id"])
        found = {int(r["id"]) for r in rows}
        return np.array([int(i) in found for i in ids], dtype=bool)

    @_unavailable
    def vectors(self, ids: np.ndarray) -> list[bytes]:
        """Stored vectors of ``ids`` (float32 bytes)."""
        if not len(ids):
            return []
        rows = self.client.get(self.collection, ids=[int(i) for i in ids], output_fields=["vector"])
        return [np.asarray(r["vector"], dtype=np.float32).tobytes() for r in rows]

    @_unavailable
    def drop(self) -> None:
        """Drop this collection (a deleted FaceSearch collection's), every vector with it."""
        self.client.drop_collection(self.collection)

    def close(self) -> None:
        if self._owns_client:
            self.client.close()
