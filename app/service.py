"""What the handlers do, kept out of the routers: thresholds, warnings, one identity per face."""

from __future__ import annotations

import hashlib
from typing import Any

from app import schemas
from index.gallery import Gallery, IdentityHit, NewFace
from model.pipeline import AnalyzedFace, FacePipeline

NEAR_DUPLICATE_DISTANCE = 0.25
MIN_FACE_SIZE = 40
MIN_BLUR = 30.0
MAX_YAW = 35.0


def distance_to_similarity(d: float) -> float:
    return 1.0 - d * d / 2.0


def detected(f: AnalyzedFace) -> dict[str, Any]:
    return {
        "box": [round(float(x), 2) for x in f.face.box],
        "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in f.face.landmarks],
        "detection_score": round(f.face.score, 5),
        "quality": schemas.Quality(face_size=round(f.quality.face_size, 1), blur=round(f.quality.blur, 1),
                                   yaw=round(f.quality.yaw, 1)),
    }


def search_threshold(pipeline: FacePipeline, gallery: Gallery, fpir: float,
                     requested: float | None) -> schemas.Threshold:
    cal = pipeline.calibration
    faces = gallery.index.live
    if requested is not None:
        return schemas.Threshold(distance=requested, similarity=distance_to_similarity(requested), source="request",
                                 far=_nan_none(cal.far_at(requested)), gallery_faces=faces)
    t, expected = cal.search_threshold(fpir, faces)
    return schemas.Threshold(distance=t, similarity=distance_to_similarity(t), source="fpir", target_fpir=fpir,
                             expected_fpir=_nan_none(expected), far=_nan_none(cal.far_at(t)), gallery_faces=faces)


def verify_threshold(pipeline: FacePipeline, requested: float | None) -> schemas.Threshold:
    cal = pipeline.calibration
    t = requested if requested is not None else cal.verify_threshold
    return schemas.Threshold(distance=t, similarity=distance_to_similarity(t),
                             source="request" if requested is not None else "verification",
                             far=_nan_none(cal.far_at(t)))


def _nan_none(x: float) -> float | None:
    return None if x != x else x


def enrollment_warnings(gallery: Gallery, identity: str, f: AnalyzedFace, sha256: str) -> list[str]:
    warnings = []
    q = f.quality
    if q.face_size < MIN_FACE_SIZE:
        warnings.append(f"small face ({q.face_size:.0f} px): recognition is less reliable below {MIN_FACE_SIZE} px")
    if q.blur < MIN_BLUR:
        warnings.append(f"blurry face (sharpness {q.blur:.0f})")
    if abs(q.yaw) > MAX_YAW:
        warnings.append(f"face turned away ({q.yaw:.0f} degrees): a frontal photo enrolls better")
    for dup in gallery.faces_with_sha256(sha256):
        warnings.append(f"the same image is already enrolled as face {dup.id} of identity {dup.identity!r}")
    assert f.embedding is not None
    res = gallery.search(f.embedding[None, :], k=5)[0]
    own = next((h for h in res.identities if h.identity == identity), None)
    if res.faces and res.faces[0].distance < NEAR_DUPLICATE_DISTANCE:
        near = res.faces[0]
        warnings.append(f"near-duplicate of face {near.face_id} of identity {near.identity!r} "
                        f"(distance {near.distance:.3f})")
    other = next((h for h in res.identities if h.identity != identity), None)
    if other is not None and (own is None and _has_faces(gallery, identity) or own is not None
                              and other.distance < own.distance):
        warnings.append(f"this face is closer to identity {other.identity!r} (distance {other.distance:.3f}) "
                        f"than to the identity's own faces")
    return warnings


def _has_faces(gallery: Gallery, identity: str) -> bool:
    try:
        return gallery.get_identity(identity).faces > 0
    except KeyError:
        return False


def new_face(f: AnalyzedFace, sha256: str) -> NewFace:
    assert f.embedding is not None
    return NewFace(embedding=f.embedding, box=[float(x) for x in f.face.box], score=f.face.score, sha256=sha256,
                   thumbnail=f.thumbnail_jpeg(), source=f.source_image(), source_geometry=f.source_geometry)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assign_identities(hits: list[list[IdentityHit]], threshold: float) -> list[IdentityHit | None]:
    """One identity per face in a photo: matches are granted best-first; a face whose best identity
    went to a closer face falls back to its next candidate under the threshold, or unknown."""
    pairs = sorted(((h.distance, fi, h) for fi, row in enumerate(hits) for h in row if h.distance <= threshold),
                   key=lambda t: (t[0], t[1]))
    taken: set[str] = set()
    out: list[IdentityHit | None] = [None] * len(hits)
    for _, fi, h in pairs:
        if out[fi] is None and h.identity not in taken:
            out[fi] = h
            taken.add(h.identity)
    return out


def largest_face_note(n: int) -> str | None:
    if n <= 1:
        return None
    return f"{n} faces found; the largest was used"

