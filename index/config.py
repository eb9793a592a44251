"""Which engines hold a gallery: the one place they are chosen (the service, every CLI command and the benches
come through :func:`open_gallery`).

Store: SQLite under the gallery's folder, or PostgreSQL at ``database_url`` (shared by replicas). Vectors: FAISS in
this process (``kind`` exact or hnsw), or a Milvus collection at ``vector_url`` (a server, or a Milvus Lite file)
with ``milvus_index`` FLAT or HNSW.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from index.keeper import Keeper
from index.local_keeper import LocalKeeper
from index.locks import Locks
from index.spaces import Space
from index.store import Store
from index.vectors import Kind

if TYPE_CHECKING:
    from index.gallery import Gallery


@dataclass(frozen=True)
class GalleryConfig:
    folder: Path
    dim: int
    model_version: str
    kind: Kind = "exact"
    allow_mismatch: bool = False
    database_url: str | None = None
    pool_size: int = 8
    vector_url: str | None = None
    milvus_index: Literal["FLAT", "HNSW"] = "FLAT"
    collection: str | None = None  # a collection's storage tag (index.collections); None: the default collection


def open_gallery(cfg: GalleryConfig) -> Gallery:
    from index.gallery import Gallery

    return Gallery(**asdict(cfg))


def open_store(folder: Path, database_url: str | None, pool_size: int, collection: str | None = None) -> Store:
    """PostgreSQL at ``database_url`` (shared by replicas; a collection's tables in a schema of their own), else
    SQLite in ``folder/gallery.db``."""
    if database_url:
        from index.postgres import PostgresStore  # psycopg is needed only for this tier

        return PostgresStore(database_url, pool_size=pool_size, schema=f"fs_{collection}" if collection else None)
    from index.sqlite import SqliteStore

    return SqliteStore(Path(folder) / "gallery.db")


def new_keeper(store: Store, locks: Locks, folder: Path, *, dim: int, model_version: str, kind: Kind,
               vector_url: str | None, milvus_index: str, collection: str | None = None) -> Keeper:
    """The keeper of the model's Milvus collections at ``vector_url`` (one per space, created if missing; a
    collection's names start with its tag), else of FAISS indexes of ``kind`` in this process, snapshotted under
    ``folder``."""
    if vector_url:
        from index.milvus import MilvusIndex  # pymilvus is needed only for this tier
        from index.shared_keeper import SharedKeeper

        people = MilvusIndex(vector_url, dim, model_version, "people", index_type=milvus_index, prefix=collection)
        indexes: dict[Space, MilvusIndex] = {"people": people}
        try:
            indexes["photos"] = MilvusIndex(vector_url, dim, model_version, "photos", index_type=milvus_index,
                                            client=people.client, prefix=collection)
            return SharedKeeper(store, locks, indexes, dim=dim, model_version=model_version)
        except BaseException:
            for index in reversed(indexes.values()):
                index.close()
            raise
    return LocalKeeper(store, locks, folder, dim=dim, kind=kind, model_version=model_version)


def gallery_exists(folder: Path, database_url: str | None) -> bool:
    """Whether a gallery is there to open (PostgreSQL: assumed; its tables are created on first open)."""
    return bool(database_url) or (Path(folder) / "gallery.db").exists()
