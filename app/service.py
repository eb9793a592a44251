"""What the handlers do, kept out of the routers: thresholds, warnings, one identity per face."""

from __future__ import annotations

from typing import Any

from app import schemas
from index.gallery import Gallery
from index.records import IdentityHit
from model.pipeline import AnalyzedFace, FacePipeline


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

