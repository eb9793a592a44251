"""Typed records of the gallery (faces, identities, hits, re-embedding) and the validation of keys and vectors."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from index.errors import InvalidKey, InvalidVector

MAX_KEY_LEN = 128


def validate_key(key: object, what: str = "identity") -> str:
    """Identity (and photo) keys: 1-128 printable characters (any language), without surrounding whitespace
    (trimmed). Returns the trimmed key."""
    if not isinstance(key, str):
        raise InvalidKey(f"{what} must be 1-128 printable characters")
    key = key.strip()
    if not key:
        raise InvalidKey(f"{what} must not be blank")
    if len(key) > MAX_KEY_LEN or not key.isprintable():
        raise InvalidKey(f"{what} must be 1-128 printable characters")
    return key


def similarity_to_distance(sim: np.ndarray | float) -> np.ndarray:
    """Cosine similarity of unit vectors -> Euclidean distance (0..2)."""
    return np.sqrt(np.clip(2.0 - 2.0 * np.asarray(sim, dtype=np.float64), 0.0, 4.0))


@dataclass(frozen=True)
class NewFace:
    """A face to add. embedding: float32 (D,), L2-normalised."""

    embedding: np.ndarray
    box: Sequence[float] | None = None
    score: float | None = None
    sha256: str | None = None
    thumbnail: bytes | None = None  # the encoder's aligned chip (JPEG)
    source: bytes | None = None  # model-independent crop with context (JPEG), for re-embedding
    source_geometry: dict[str, Any] | None = None  # box and landmarks in the source crop's pixels


@dataclass(frozen=True)
class StoredCrop:
    """What a face's embedding can be made again from (see :meth:`Gallery.reembed`)."""

    face_id: int
    identity: str | None  # None: a photo's face of no identity
    source: bytes | None
    source_geometry: dict[str, Any] | None
    chip: bytes | None  # the aligned chip cut for the model that enrolled the face


class Change(NamedTuple):
    """One entry of the change log: a face added (or named: it joins the ``people`` space) or deleted, with the
    face as it is now (:mod:`index.spaces`)."""

    seq: int
    face_id: int
    op: int  # index.store.ADD or DELETE
    embedding: bytes | None  # None once the face is gone
    named: bool = False  # the face belongs to an identity now
    in_photo: bool = False  # the face was found in a photo


class FaceOwner(NamedTuple):
    face_id: int
    identity: str | None  # None: a photo's face of no identity


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: float
    event: str
    actor: str | None
    identity: str | None
    face_ids: list[int]
    detail: dict[str, Any]


@dataclass(frozen=True)
class Generation:
    """The embeddings' generation a re-embedding switched to."""

    generation: int
    model_version: str
    dim: int
    faces: int
    switched_at: float


@dataclass(frozen=True)
class StoredFace:
    """Everything stored of one face (subject access and export)."""

    face_id: int
    model_version: str
    box: list[float] | None
    detection_score: float | None
    sha256: str | None
    created_at: float
    source_geometry: dict[str, Any] | None
    embedding: list[float]
    chip: bytes | None
    source: bytes | None


@dataclass
class ReembedReport:
    model_version: str
    faces: int
    reembedded: int
    unrecoverable: list[FaceOwner]  # no stored crop this model can use
    switched: bool
    generation: int
    seconds: float


@dataclass(frozen=True)
class FaceRecord:
    id: int
    identity: str | None  # None: a photo's face nobody has named yet
    model_version: str
    box: list[float] | None
    score: float | None
    sha256: str | None
    created_at: float
    has_thumbnail: bool
    has_source: bool = False
    photo: str | None = None  # the photo it was found in (POST /v1/photos)
    cluster: int | None = None  # its group of unnamed faces


@dataclass(frozen=True)
class NewPhoto:
    """A photo to index: the caller's key, an album (``""``: none), metadata and its size in pixels."""

    key: str
    album: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class PhotoRecord:
    key: str
    album: str
    metadata: dict[str, Any]
    width: int | None
    height: int | None
    created_at: float
    faces: int


@dataclass(frozen=True)
class PhotoHit:
    """A photo holding the searched person: its best-matching face."""

    photo: str
    album: str
    face_id: int
    box: list[float] | None
    similarity: float  # to the nearest query
    distance: float
    expanded: bool = False  # found through two of the faces the query found, not the query alone


@dataclass(frozen=True)
class ClusterRecord:
    """A group of unnamed faces thought to be one person; ``id`` is its first face's id."""

    id: int
    faces: int
    face_ids: list[int]  # the first ones, by id
    photos: list[str]  # the photos holding them (the first ones)


@dataclass(frozen=True)
class IdentityRecord:
    key: str
    metadata: dict[str, Any]
    faces: int
    created_at: float


@dataclass(frozen=True)
class FaceHit:
    face_id: int
    identity: str
    similarity: float
    distance: float


@dataclass(frozen=True)
class IdentityHit:
    identity: str
    face_id: int  # the best-matching face
    similarity: float
    distance: float
    matched_faces: list[int]
    match: bool | None = None  # against the search's threshold, when one was given


@dataclass
class SearchResult:
    faces: list[FaceHit] = field(default_factory=list)
    identities: list[IdentityHit] = field(default_factory=list)


def face_record(r: Sequence[Any]) -> FaceRecord:
    """A face row (id, identity, model version, box JSON, score, sha256, created at, has chip, has source, photo,
    cluster)."""
    return FaceRecord(id=int(r[0]), identity=r[1], model_version=r[2], box=json.loads(r[3]) if r[3] else None,
                      score=r[4], sha256=r[5], created_at=r[6], has_thumbnail=bool(r[7]), has_source=bool(r[8]),
                      photo=r[9], cluster=None if r[10] is None else int(r[10]))


def photo_record(r: Sequence[Any]) -> PhotoRecord:
    """A photo row (key, album, metadata JSON, width, height, created at, faces)."""
    return PhotoRecord(key=str(r[0]), album=str(r[1]), metadata=json.loads(r[2]), width=r[3], height=r[4],
                       created_at=float(r[5]), faces=int(r[6]))


def identity_record(r: Sequence[Any]) -> IdentityRecord:
    """An identity row (key, metadata JSON, created at, faces)."""
    return IdentityRecord(key=r[0], metadata=json.loads(r[1]), created_at=r[2], faces=int(r[3]))


def unit_vectors(faces: Sequence[NewFace], dim: int) -> np.ndarray:
    """The faces' embeddings as float32 (N, dim), L2-normalised; InvalidVector for anything else."""
    if not faces:
        raise InvalidVector("no faces given")
    try:
        vecs = np.stack([np.asarray(f.embedding, dtype=np.float32).reshape(-1) for f in faces])
    except ValueError as e:
        raise InvalidVector(f"embeddings must all be {dim}-d") from e
    if vecs.shape[1] != dim:
        raise InvalidVector(f"embedding dimension {vecs.shape[1]}, gallery expects {dim}")
    if not np.isfinite(vecs).all():
        raise InvalidVector("embedding contains NaN or inf")
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    if (norms < 1e-6).any():
        raise InvalidVector("embedding has zero length")
    return vecs / norms


def is_int64(x: object) -> bool:
    return isinstance(x, int | np.integer) and -(2**63) <= int(x) < 2**63 and not math.isnan(float(x))


def unit_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    """Search queries as float32 (n, dim), L2-normalised; InvalidVector for anything else."""
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != dim:
        raise InvalidVector(f"queries must have shape (n, {dim})")
    if not np.isfinite(q).all():
        raise InvalidVector("query contains NaN or inf")
    return q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
