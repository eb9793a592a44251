"""The gallery: identities + faces + vectors, a durable SQLite store with a derived FAISS index.

numpy, faiss and sqlite3 only: no torch, no HTTP.
"""

from index.errors import (
    Conflict,
    GalleryError,
    GalleryMismatch,
    InvalidKey,
    InvalidVector,
    NotFound,
)
from index.gallery import FaceRecord, Gallery, NewFace, SearchResult

__all__ = [
    "Conflict", "FaceRecord", "Gallery", "GalleryError", "GalleryMismatch", "InvalidKey", "InvalidVector",
    "NewFace", "NotFound", "SearchResult",
]
