"""What the handlers share, kept out of the routers: the response shapes of detected faces and thresholds.
The decisions themselves (thresholds, one identity per face, verification) are :mod:`facesearch.decisions`'."""

from __future__ import annotations

from typing import Any

from facesearch import schemas
from facesearch.decisions import Threshold, low_quality
from model.analysis import AnalyzedFace


def detected(f: AnalyzedFace) -> dict[str, Any]:
    return {
        "box": [round(float(x), 2) for x in f.face.box],
        "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in f.face.landmarks],
        "detection_score": round(f.face.score, 5),
        "quality": schemas.Quality(face_size=round(f.quality.face_size, 1), blur=round(f.quality.blur, 1),
                                   yaw=round(f.quality.yaw, 1)),
        "low_quality": low_quality(f.quality),
    }


def threshold_out(t: Threshold) -> schemas.Threshold:
    return schemas.Threshold(distance=t.distance, similarity=t.similarity, source=t.source, target_fpir=t.target_fpir,
                             expected_fpir=t.expected_fpir, far=t.far, gallery_faces=t.gallery_faces)


def largest_face_note(n: int) -> str | None:
    if n <= 1:
        return None
    return f"{n} faces found; the largest was used"
