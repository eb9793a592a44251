"""Embeddings of every face in a photo."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from app.deps import Multipart, Pipeline, SettingsDep, State, read_upload, run_cpu
from facesearch import answers, schemas

router = APIRouter(tags=["embed"])


@router.post("/embed", dependencies=[Multipart])
async def embed(
    state: State, pipeline: Pipeline, settings: SettingsDep,
    image: Annotated[UploadFile, File()],
    max_faces: Annotated[int | None, Form(ge=1, le=100)] = None,
) -> schemas.EmbedResponse:
    t0 = time.perf_counter()
    data = await read_upload(image, settings)
    a = await run_cpu(state, pipeline.analyze, data, max_faces=max_faces or settings.max_faces)
    state.metrics.faces_detected.inc(a.faces_found)
    faces = [schemas.EmbeddedFace(**answers.detected(f), embedding=[float(x) for x in f.embedding])
             for f in a.faces if f.embedding is not None]
    return schemas.EmbedResponse(faces=faces, faces_found=a.faces_found, image=schemas.Size(width=a.width,
                                 height=a.height), dim=pipeline.dim, model=pipeline.model_version,
                                 took_ms=round((time.perf_counter() - t0) * 1000, 2))
