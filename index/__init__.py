"""The gallery: identities + faces + vectors, a durable store with a derived vector index.

Stores (:mod:`index.store`): SQLite (:mod:`index.sqlite`, embedded) or PostgreSQL (:mod:`index.postgres`, shared
by replicas). Vector indexes (:mod:`index.vectors`): FAISS in process, or Milvus (:mod:`index.milvus`).
:class:`Gallery` composes one of each. numpy, faiss and the database drivers only: no torch, no HTTP.
"""

from index.errors import (
    Conflict,
    GalleryError,
    GalleryMismatch,
    InvalidKey,
    InvalidVector,
    NotFound,
)
from index.gallery import Gallery
from index.records import FaceRecord, NewFace, SearchResult

__all__ = [
    "Conflict", "FaceRecord", "Gallery", "GalleryError", "GalleryMismatch", "InvalidKey", "InvalidVector",
    "NewFace", "NotFound", "SearchResult",
]
