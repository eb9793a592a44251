"""1:1 verification: two photos, or a photo against an enrolled identity."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from app.deps import GalleryDep, Multipart, Pipeline, SettingsDep, State, read_upload, run_cpu
from app.errors import ApiError
from facesearch import answers, decisions, schemas

router = APIRouter(tags=["verify"])
USAGE = "send image1 + image2, or image + identity"


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
        e1, f1 = answers.verify_face(a1, "image1")
        e2, f2 = answers.verify_face(a2, "image2")
        verdict = decisions.verify_pair(e1, e2, thr)
        faces = [f1, f2]
    else:
        assert image is not None and identity is not None
        if not (await run_cpu(state, gallery.get_identity, identity)).faces:  # before the photo is analysed
            raise ApiError(404, "not_found", f"identity {identity!r} has no faces")
        a = await run_cpu(state, pipeline.analyze, await read_upload(image, settings), max_faces=1)
        e, f = answers.verify_face(a, "image")
        verdict = await run_cpu(state, decisions.verify_against, gallery, identity, e, thr)
        faces = [f]
    return answers.verify(verdict, thr, faces, identity, pipeline.model_version,
                          round((time.perf_counter() - t0) * 1000, 2))
