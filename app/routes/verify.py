"""1:1 verification: two photos, or a photo against an enrolled identity."""

from __future__ import annotations

import time
from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Form, UploadFile

from app import service
from app.deps import GalleryDep, Multipart, Pipeline, SettingsDep, State, read_upload, run_cpu
from app.errors import NO_FACE, ApiError
from facesearch import decisions, schemas
from model.analysis import Analysis

router = APIRouter(tags=["verify"])
USAGE = "send image1 + image2, or image + identity"


def _face(a: Analysis, source: str) -> tuple[np.ndarray, schemas.VerifyFace]:
    if not a.faces:
        raise ApiError(422, "no_face", NO_FACE, {"source": source})
    f = a.faces[0]
    assert f.embedding is not None
    shown = service.detected(f)
    return f.embedding, schemas.VerifyFace(source=source, box=shown["box"], low_quality=shown["low_quality"],
                                           detection_score=f.face.score, faces_in_image=a.faces_found,
                                           note=service.largest_face_note(a.faces_found))


@router.post("/verify", dependencies=[Multipart])
async def verify(
    state: State,
    pipeline: Pipeline,
    gallery: GalleryDep,
    settings: SettingsDep,
    image1: Annotated[UploadFile | None, File()] = None,
    image2: Annotated[UploadFile | None, File()] = None,
    image: Annotated[UploadFile | None, File()] = None,
    identity: Annotated[str | None, Form(min_length=1, max_length=128)] = None,
    threshold: Annotated[float | None, Form(ge=0, le=2, allow_inf_nan=False)] = None,
) -> schemas.VerifyResponse:
    t0 = time.perf_counter()
    pair = image1 is not None and image2 is not None and image is None and identity is None
    against = image is not None and identity is not None and image1 is None and image2 is None
    if not (pair or against):
        raise ApiError(422, "validation_error", USAGE)
    thr = decisions.verify_threshold(pipeline.calibration, threshold)
    if pair:
        assert image1 is not None and image2 is not None
        a1 = await run_cpu(state, pipeline.analyze, await read_upload(image1, settings), max_faces=1)
        a2 = await run_cpu(state, pipeline.analyze, await read_upload(image2, settings), max_faces=1)
        e1, f1 = _face(a1, "image1")
        e2, f2 = _face(a2, "image2")
        verdict = decisions.verify_pair(e1, e2, thr)
        faces = [f1, f2]
    else:
        assert image is not None and identity is not None
        if not (await run_cpu(state, gallery.get_identity, identity)).faces:  # before the photo is analysed
            raise ApiError(404, "not_found", f"identity {identity!r} has no faces")
        a = await run_cpu(state, pipeline.analyze, await read_upload(image, settings), max_faces=1)
        e, f = _face(a, "image")
        verdict = await run_cpu(state, decisions.verify_against, gallery, identity, e, thr)
        faces = [f]
    return schemas.VerifyResponse(
        same_person=verdict.same_person, distance=verdict.distance, similarity=verdict.similarity,
        threshold=service.threshold_out(thr), faces=faces, identity=identity, matched_face_id=verdict.matched_face_id,
        model=pipeline.model_version,
        took_ms=round((time.perf_counter() - t0) * 1000, 2))
