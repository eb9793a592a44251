"""Typed request and response bodies: what the server answers and what the client library (facesearch.client) reads."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """Every error: a message (or, for request validation, the list of problems) and a stable code."""

    model_config = {"extra": "allow"}
    detail: str | list[dict[str, Any]]
    code: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description} for status, description in [
        (400, "invalid_image"), (401, "unauthorized"), (404, "not_found"), (409, "conflict, gallery_mismatch"),
        (413, "too_large"), (415, "unsupported_media_type"),
        (422, "validation_error, invalid_identity, no_face, multiple_faces"),
        (503, "not_ready, store_unavailable, timeout")]
}


class Quality(BaseModel):
    face_size: float = Field(description="shorter side of the face box, pixels")
    blur: float = Field(description="variance of the Laplacian of the aligned crop; higher is sharper")
    yaw: float = Field(description="head turn estimated from the landmarks, degrees (0 = frontal)")


class DetectedFace(BaseModel):
    box: list[float] = Field(description="[x1, y1, x2, y2] in the original photo's pixels")
    landmarks: list[list[float]] = Field(description="5 points: eyes, nose, mouth corners")
    detection_score: float
    quality: Quality
    low_quality: list[str] = Field(description="why a decision on this face is less reliable (small, blurry, turned "
                                               "away); empty when fine. It is searched and stored all the same")


class EnrolledFace(DetectedFace):
    face_id: int
    sha256: str
    warnings: list[str]


class EnrollResponse(BaseModel):
    identity: str
    faces: list[EnrolledFace]
    model: str


class Identity(BaseModel):
    identity: str
    metadata: dict[str, Any]
    faces: int
    created_at: float


class IdentityList(BaseModel):
    items: list[Identity]
    total: int


class StoredFace(BaseModel):
    face_id: int
    identity: str | None = Field(description="None: a face found in a photo that nobody has named yet")
    photo_id: str | None = Field(None, description="the photo it was found in (POST /v1/photos)")
    cluster_id: int | None = Field(None, description="its group of unnamed faces (GET /v1/clusters)")
    box: list[float] | None
    detection_score: float | None
    sha256: str | None
    model_version: str
    created_at: float
    thumbnail_url: str | None


class FaceList(BaseModel):
    items: list[StoredFace]
    total: int


class IdentityDetail(Identity):
    face_list: FaceList


class MergeIdentity(BaseModel):
    model_config = {"extra": "forbid"}
    identity: str = Field(description="the identity whose faces join this one (it is deleted)")


class IdentityPatch(BaseModel):
    model_config = {"extra": "forbid"}
    identity: str | None = Field(None, description="new identity key (rename)")
    metadata: dict[str, Any] | None = Field(None, description="replaces the metadata")


class Deleted(BaseModel):
    deleted: bool = True
    collection: str | None = None
    identity: str | None = None
    face_id: int | None = None
    photo_id: str | None = None
    album: str | None = None
    cluster_id: int | None = None
    photos_deleted: int | None = None
    faces_deleted: int


class PhotoFace(DetectedFace):
    face_id: int
    identity: str | None = Field(description="the enrolled identity this face is (search threshold), if any")
    distance: float | None = Field(description="to that identity's nearest face")
    cluster_id: int | None = Field(None, description="the group of unnamed faces it joined")


class IndexedPhoto(BaseModel):
    photo_id: str
    album: str
    faces: list[PhotoFace]
    faces_found: int = Field(description="faces detected; at most FACESEARCH_MAX_FACES are indexed, largest first")
    image: Size
    model: str


class Photo(BaseModel):
    photo_id: str
    album: str
    metadata: dict[str, Any]
    image: Size | None
    faces: int
    created_at: float


class PhotoList(BaseModel):
    items: list[Photo]
    total: int


class PhotoDetail(Photo):
    face_list: list[StoredFace]


class PhotoMatch(BaseModel):
    photo_id: str
    album: str
    face_id: int = Field(description="the photo's face that matched")
    box: list[float] | None
    similarity: float
    distance: float = Field(description="of that face to the query")
    expanded: bool = Field(description="found through two of the faces the query matched (within the threshold "
                                       "of both), not the query alone; such photos are listed after the others")


class PhotoSearchResponse(BaseModel):
    photos: list[PhotoMatch] = Field(description="the photos holding the person, best first")
    query: str = Field(description="'selfie' (the photo's largest face) or 'identity' (all its faces)")
    threshold: Threshold
    model: str
    took_ms: float


class Cluster(BaseModel):
    cluster_id: int
    faces: int
    face_ids: list[int] = Field(description="its faces by id: the first few in a list, a page in GET /v1/clusters/{id}")
    thumbnail_url: str = Field(description="the chip of its first face")
    photos: list[str] = Field(description="photos holding its faces (the first ones)")


class ClusterList(BaseModel):
    items: list[Cluster]
    total: int


class NameBody(BaseModel):
    model_config = {"extra": "forbid"}
    identity: str = Field(description="the identity the faces become (created if new)")


class MergeBody(BaseModel):
    model_config = {"extra": "forbid"}
    cluster_id: int = Field(ge=1, le=2**63 - 1, description="the cluster whose faces join this one")


class ClusterBody(BaseModel):
    model_config = {"extra": "forbid"}
    cluster_id: int = Field(ge=1, le=2**63 - 1, description="the cluster the face moves to")


class Named(BaseModel):
    identity: str
    face_ids: list[int]


class ClusterJob(BaseModel):
    state: Literal["idle", "running", "done", "failed"]
    stage: str | None = Field(None, description="running: starting, reading, grouping, writing; then done")
    faces: int | None = Field(None, description="unnamed faces being grouped")
    clusters: int | None = Field(None, description="when done: how many groups")
    album: str | None = None
    threshold: float | None = Field(None, description="the distance within which faces are linked")
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None


class Candidate(BaseModel):
    identity: str
    face_id: int
    similarity: float
    distance: float


class Threshold(BaseModel):
    distance: float = Field(description="a match needs distance <= this (Euclidean between unit vectors)")
    similarity: float = Field(description="the same threshold on the cosine scale")
    source: Literal["fpir", "verification", "request"]
    target_fpir: float | None = None
    expected_fpir: float | None = Field(None, description="chance a stranger matches someone, for this gallery")
    far: float | None = Field(None, description="false-accept rate of one comparison at this threshold")
    gallery_faces: int | None = None


class SearchFace(DetectedFace):
    decision: Literal["match", "unknown"]
    identity: str | None
    similarity: float | None
    distance: float | None
    candidates: list[Candidate]


class Size(BaseModel):
    width: int
    height: int


class SearchResponse(BaseModel):
    faces: list[SearchFace]
    faces_found: int
    image: Size
    threshold: Threshold
    model: str
    took_ms: float


class VerifyFace(BaseModel):
    source: str
    box: list[float] | None
    detection_score: float | None
    faces_in_image: int
    low_quality: list[str] = Field(default_factory=list, description="why the decision on this face is less "
                                                                     "reliable; empty when fine")
    note: str | None = None


class VerifyResponse(BaseModel):
    same_person: bool
    distance: float
    similarity: float
    threshold: Threshold
    faces: list[VerifyFace]
    identity: str | None = None
    matched_face_id: int | None = None
    model: str
    took_ms: float


class EmbeddedFace(DetectedFace):
    embedding: list[float]


class EmbedResponse(BaseModel):
    faces: list[EmbeddedFace]
    faces_found: int
    image: Size
    dim: int
    model: str
    took_ms: float


class Health(BaseModel):
    status: str
    model: str | None = None
    gallery_faces: int | None = None
    reembed: dict[str, Any] | None = Field(None, description="progress of a re-embedding under way: done, total")


class Caller(BaseModel):
    key_id: str = Field(description="the API key's id (never the key), or 'open' when no key is set")
    role: str = Field(description="search, enroll or admin")
    collections: list[str] = Field(description="the collections it may use; empty: every one")


class Info(BaseModel):
    service: str
    version: str
    auth: bool
    model: dict[str, Any] | None
    gallery: dict[str, Any] | None = Field(description="the default collection's")
    caller: Caller | None = None


class CollectionBody(BaseModel):
    model_config = {"extra": "forbid"}
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
                      description="1-63 lowercase letters, digits, '-' or '_'; its routes: /v1/collections/{name}/...")


class Collection(BaseModel):
    name: str
    created_at: float | None = Field(description="None for 'default', the deployment's own")
    identities: int
    faces: int
    photos: int
    unnamed_faces: int
    model_version: str | None


class CollectionList(BaseModel):
    items: list[Collection]


class AuditLine(BaseModel):
    seq: int
    at: float
    event: str = Field(description="enroll, delete_face, delete_identity, rename, update_metadata, reembed_started, "
                                   "reembed, export")
    actor: str | None = Field(description="the API key's id (never the key), open, cli or startup")
    identity: str | None
    face_ids: list[int]
    detail: dict[str, Any]


class AuditLog(BaseModel):
    items: list[AuditLine]
    next_since: int
