"""Liveness and readiness (always open), Prometheus metrics (behind the API keys unless FACESEARCH_METRICS_PUBLIC)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.deps import State, require_metrics_key
from app.errors import RETRY_AFTER_S
from facesearch import schemas
from index.errors import StoreUnavailable

router = APIRouter(tags=["health"])


@router.get("/health/live")
def live() -> schemas.Health:
    return schemas.Health(status="alive")


@router.get("/health/ready", responses={503: {"model": schemas.Health}})
def ready(state: State, response: Response) -> schemas.Health:
    if not state.ready:
        response.status_code = 503
        if state.reembed is not None:
            return schemas.Health(status="reembedding", model=state.reembed["target_model"], reembed=state.reembed)
        return schemas.Health(status="loading")
    assert state.pipeline is not None and state.gallery is not None
    try:
        state.gallery.ping()
    except StoreUnavailable:
        response.status_code = 503
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return schemas.Health(status="store_unavailable", model=state.pipeline.model_version)
    return schemas.Health(status="ready", model=state.pipeline.model_version,
                          gallery_faces=state.gallery.searchable_faces)


@router.get("/metrics", include_in_schema=False, dependencies=[Depends(require_metrics_key)])
def metrics(state: State) -> Response:
    if state.gallery is not None:
        identities, faces = state.gallery.count()
        state.metrics.gallery_faces.set(faces)
        state.metrics.gallery_identities.set(identities)
    if state.pipeline is not None:
        state.metrics.photo_worker_restarts.set(state.pipeline.workers.restarts)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
