"""1:N search: every face in the photo against the gallery, with an honest 'unknown'."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from app.deps import GalleryDep, Multipart, Pipeline, SettingsDep, State, read_upload, run_cpu
from facesearch import answers, decisions, schemas

router = APIRouter(tags=["search"])


@router.post("/search", dependencies=[Multipart])
async def search(
    state: State,
    pipeline: Pipeline,
    gallery: GalleryDep,
    settings: SettingsDep,
    image: Annotated[UploadFile, File(description="the photo")],
    k: Annotated[int, Form(ge=1, le=100, description="candidate identities per face")] = 5,
    threshold: Annotated[float | None, Form(ge=0, le=2, allow_inf_nan=False,
                                            description="distance threshold; default from the target FPIR")] = None,
    max_faces: Annotated[int | None, Form(ge=1, le=100, description="faces to search, largest first")] = None,
) -> schemas.SearchResponse:
    t0 = time.perf_counter()
    data = await read_upload(image, settings)
    analysis = await run_cpu(state, pipeline.analyze, data, max_faces=max_faces or settings.max_faces)
    state.metrics.faces_detected.inc(analysis.faces_found)
    thr, found = await run_cpu(state, decisions.search_gallery, gallery, pipeline.calibration, analysis.faces,
                               settings.search_fpir, threshold, k)
    return answers.search(analysis, thr, found, pipeline.model_version, round((time.perf_counter() - t0) * 1000, 2))
