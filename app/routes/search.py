"""1:N search: every face in the photo against the gallery, with an honest 'unknown'."""

from __future__ import annotations

import time
from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Form, UploadFile

from app import schemas, service
from app.deps import GalleryDep, Multipart, Pipeline, SettingsDep, State, read_upload, run_cpu

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
    thr = service.search_threshold(pipeline, gallery, settings.search_fpir, threshold)
    faces = analysis.faces
    results = []
    if faces:
        queries = np.stack([f.embedding for f in faces if f.embedding is not None])
        results = await run_cpu(state, lambda: gallery.search(queries, k=k, threshold=thr.distance))
    assigned = service.assign_identities([r.identities for r in results], thr.distance)
    out = []
    for f, r, hit in zip(faces, results, assigned, strict=True):
        best = hit or (r.identities[0] if r.identities else None)
        out.append(schemas.SearchFace(
            **service.detected(f),
            decision="match" if hit else "unknown",
            identity=hit.identity if hit else None,
            similarity=best.similarity if best else None,
            distance=best.distance if best else None,
            candidates=[schemas.Candidate(identity=h.identity, face_id=h.face_id, similarity=h.similarity,
                                          distance=h.distance) for h in r.identities],
        ))
    return schemas.SearchResponse(faces=out, faces_found=analysis.faces_found,
                                  image=schemas.Size(width=analysis.width, height=analysis.height), threshold=thr,
                                  model=pipeline.model_version, took_ms=round((time.perf_counter() - t0) * 1000, 2))
