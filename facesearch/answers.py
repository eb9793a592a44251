"""The answers the service gives, built once for the API's routes and the command line's in-process client
(:mod:`facesearch.local`): the same decisions (:mod:`facesearch.decisions`) read back as the same models
(:mod:`facesearch.schemas`), so a command answers alike in process and against a server."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from facesearch import schemas
from facesearch.decisions import FaceDecision, Threshold, Verdict, low_quality
from facesearch.enrollment import Enrolled
from facesearch.errors import NoFace
from facesearch.photos import IndexedFace
from index.records import FaceRecord, IdentityRecord, PhotoRecord
from model.analysis import Analysis, AnalyzedFace


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


def search(analysis: Analysis, threshold: Threshold, found: list[FaceDecision], model: str | None,
           took_ms: float) -> schemas.SearchResponse:
    faces = [schemas.SearchFace(
        **detected(d.face),
        decision="match" if d.match else "unknown",
        identity=d.match.identity if d.match else None,
        similarity=d.best.similarity if d.best else None,
        distance=d.best.distance if d.best else None,
        candidates=[schemas.Candidate(identity=h.identity, face_id=h.face_id, similarity=h.similarity,
                                      distance=h.distance) for h in d.candidates],
    ) for d in found]
    return schemas.SearchResponse(faces=faces, faces_found=analysis.faces_found,
                                  image=schemas.Size(width=analysis.width, height=analysis.height),
                                  threshold=threshold_out(threshold), model=model, took_ms=took_ms)


def verify_face(a: Analysis, source: str) -> tuple[np.ndarray, schemas.VerifyFace]:
    """The largest face of one side of a verification, or :class:`NoFace` naming the side."""
    if not a.faces:
        raise NoFace(source=source)
    f = a.faces[0]
    assert f.embedding is not None
    shown = detected(f)
    return f.embedding, schemas.VerifyFace(source=source, box=shown["box"], low_quality=shown["low_quality"],
                                           detection_score=f.face.score, faces_in_image=a.faces_found,
                                           note=largest_face_note(a.faces_found))


def verify(verdict: Verdict, threshold: Threshold, faces: list[schemas.VerifyFace], identity: str | None,
           model: str | None, took_ms: float) -> schemas.VerifyResponse:
    return schemas.VerifyResponse(
        same_person=verdict.same_person, distance=verdict.distance, similarity=verdict.similarity,
        threshold=threshold_out(threshold), faces=faces, identity=identity, matched_face_id=verdict.matched_face_id,
        model=model, took_ms=took_ms)


def enrolled(identity: str, done: Sequence[Enrolled], model: str | None) -> schemas.EnrollResponse:
    return schemas.EnrollResponse(identity=identity, model=model, faces=[
        schemas.EnrolledFace(face_id=e.face_id, sha256=e.sha256, warnings=e.warnings, **detected(e.face))
        for e in done])


def identity_out(r: IdentityRecord) -> schemas.Identity:
    return schemas.Identity(identity=r.key, metadata=r.metadata, faces=r.faces, created_at=r.created_at)


def face_out(f: FaceRecord, api: str) -> schemas.StoredFace:
    """``api``: where the collection's routes are (its thumbnail's link)."""
    return schemas.StoredFace(face_id=f.id, identity=f.identity, photo_id=f.photo, cluster_id=f.cluster,
                              box=f.box, detection_score=f.score,
                              sha256=f.sha256, model_version=f.model_version, created_at=f.created_at,
                              thumbnail_url=f"{api}/faces/{f.id}/thumbnail" if f.has_thumbnail else None)


def identity_detail(r: IdentityRecord, faces: list[FaceRecord], total: int, api: str) -> schemas.IdentityDetail:
    return schemas.IdentityDetail(**identity_out(r).model_dump(),
                                  face_list=schemas.FaceList(items=[face_out(f, api) for f in faces], total=total))


def photo_out(r: PhotoRecord) -> schemas.Photo:
    return schemas.Photo(photo_id=r.key, album=r.album, metadata=r.metadata, faces=r.faces, created_at=r.created_at,
                         image=schemas.Size(width=r.width, height=r.height) if r.width and r.height else None)


def photo_detail(r: PhotoRecord, faces: list[FaceRecord], api: str) -> schemas.PhotoDetail:
    return schemas.PhotoDetail(**photo_out(r).model_dump(), face_list=[face_out(f, api) for f in faces])


def indexed_photo(key: str, album: str, analysis: Analysis, done: list[IndexedFace], clusters: dict[int, int | None],
                  model: str | None) -> schemas.IndexedPhoto:
    """``clusters``: each indexed face's cluster, read after the write (a face may have joined another's)."""
    return schemas.IndexedPhoto(
        photo_id=key, album=album, faces_found=analysis.faces_found, model=model,
        image=schemas.Size(width=analysis.width, height=analysis.height),
        faces=[schemas.PhotoFace(**detected(f.face), face_id=f.face_id,
                                 identity=f.match.identity if f.match else None,
                                 distance=f.match.distance if f.match else None,
                                 cluster_id=clusters.get(f.face_id)) for f in done])
