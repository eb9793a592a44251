"""The app factory: create_app(settings) with a lifespan that loads the model and gallery once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import APIRouter, Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from app import __version__, errors
from app.auth import KeyRing, RateLimit
from app.deps import authorize, in_collection, remember_request
from app.guard import RequestGuard
from app.metrics import RequestMetrics
from app.routes import (
    audit,
    clusters,
    collections,
    embed,
    faces,
    health,
    identities,
    info,
    photos,
    search,
    verify,
    web,
)
from app.state import AppState
from facesearch.compose import gallery_config, open_pipeline
from facesearch.schemas import ERROR_RESPONSES
from facesearch.settings import Settings
from index.collections import Collections
from index.config import open_gallery
from index.gallery import Gallery
from index.vectors import faiss_build
from model.pipeline import FacePipeline, embed_stored

log = logging.getLogger(__name__)
SNAPSHOT_EVERY_S = 60.0


class StartupError(RuntimeError):
    """The service cannot start; the message says why in one line."""


def _check_data_dir(settings: Settings) -> None:
    d = settings.data_dir
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StartupError(f"data folder {d} cannot be created: {e.strerror}") from e
    if not os.access(d, os.R_OK | os.W_OK | os.X_OK):
        raise StartupError(f"data folder {d} is not readable and writable by this user")


def load(state: AppState) -> None:
    """Load the encoder and open the gallery (blocking; run in a worker thread)."""
    s = state.settings
    _check_data_dir(s)
    try:
        pipeline = open_pipeline(s, on_batch=state.metrics.batch_size.observe)
    except Exception as e:
        raise StartupError(f"cannot load the encoder: {e}") from e
    config = gallery_config(s, dim=pipeline.dim, model_version=pipeline.model_version,
                            allow_mismatch=s.reembed == "auto")
    where = "in PostgreSQL (FACESEARCH_DATABASE_URL)" if s.database_url else f"in {s.data_dir}"
    try:
        gallery = open_gallery(config)
    except Exception as e:
        pipeline.close()
        raise StartupError(f"cannot open the gallery {where}: {e}") from e
    collections: Collections | None = None
    try:
        collections = Collections(gallery, config)
        for name, each in collections.open_all():
            if each.needs_reembed:
                log.info("collection %s:", name)
                reembed_at_startup(state, each, pipeline)
    except BaseException as e:
        if collections is not None:
            collections.close()
        gallery.close()
        pipeline.close()
        if isinstance(e, Exception) and not isinstance(e, StartupError):
            raise StartupError(f"cannot open the collections {where}: {e}") from e
        raise
    pipeline.warm_up()
    log.info("%s", faiss_build())
    state.keys.attach(gallery.store)
    state.pipeline, state.gallery, state.collections = pipeline, gallery, collections


def reembed_at_startup(state: AppState, gallery: Gallery, pipeline: FacePipeline) -> None:
    """FACESEARCH_REEMBED=auto: the gallery's faces are embedded again with this model before the service is
    ready; progress goes to the log and to /health/ready's body. Resumes a run that was killed."""
    previous, _ = gallery.stored_model()
    log.info("re-embedding the gallery: model %s -> %s", previous, pipeline.model_version)
    last = [0.0]

    def progress(done: int, total: int) -> None:
        state.reembed = {"target_model": pipeline.model_version, "done": done, "total": total}
        if time.monotonic() - last[0] > 5 or done == total:
            last[0] = time.monotonic()
            log.info("re-embedding: %d / %d faces", done, total)

    state.reembed = {"target_model": pipeline.model_version, "done": 0, "total": gallery.count()[1]}
    report = gallery.reembed(lambda crops: embed_stored(pipeline.embedder, crops), progress=progress,
                             actor="startup")
    if not report.switched:
        raise StartupError(
            f"{len(report.unrecoverable)} faces have no stored crop model {pipeline.model_version} can use: "
            f"`facesearch gallery reembed --data-dir {gallery.folder}` lists them (enroll them again, or drop them "
            "with --drop-unrecoverable)")
    log.info("re-embedded %d faces in %.1f s: generation %d, model %s", report.reembedded, report.seconds,
             report.generation, report.model_version)
    state.reembed = None


async def _upkeep_loop(collections: Collections, settings: Settings) -> None:
    """Every minute, in every open collection: the retention of photos' unnamed faces and of the audit when they are
    set (first as soon as the service is ready, in batches that let requests through), and the index snapshot."""
    while True:
        try:
            await anyio.to_thread.run_sync(collections.refresh)  # collections deleted by another replica close
        except Exception:  # read again at the next round
            log.exception("reading the collections failed")
        for _, gallery in collections.galleries():
            await expire_unnamed(gallery, settings)
            if settings.audit_retention_days is not None:
                before = time.time() - settings.audit_retention_days * 86400
                try:
                    await anyio.to_thread.run_sync(gallery.store.prune_audit, before)
                except Exception:  # retried at the next round
                    log.exception("retention of the audit failed")
        await asyncio.sleep(SNAPSHOT_EVERY_S)
        for _, gallery in collections.galleries():
            try:
                await anyio.to_thread.run_sync(gallery.snapshot)
            except Exception:  # a failed snapshot only costs a longer replay at the next start
                log.exception("index snapshot failed")


async def expire_unnamed(gallery: Gallery, settings: Settings) -> None:
    days = settings.unassigned_retention_days
    if days is None:
        return
    try:
        n = await anyio.to_thread.run_sync(gallery.photos.expire_unnamed, time.time() - days * 86400)
        if n:
            log.info("retention: erased %d unnamed faces indexed more than %g days ago", n, days)
    except Exception:  # retried at the next round
        log.exception("retention of unnamed faces failed")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: AppState = app.state.fs
    state.limiter = anyio.CapacityLimiter(state.settings.workers)
    try:
        await anyio.to_thread.run_sync(load, state)
    except StartupError as e:
        log.error("FaceSearch cannot start: %s", e)
        raise
    assert state.gallery is not None and state.pipeline is not None and state.collections is not None
    if state.keys.open:
        log.warning("no API key is set (FACESEARCH_API_KEYS, facesearch keys create): the API is open; "
                    "serve on 127.0.0.1 only")
    task = asyncio.create_task(_upkeep_loop(state.collections, state.settings))
    log.info("ready: model %s, %d faces in the gallery", state.pipeline.model_version,
             state.gallery.searchable_faces)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for thread in state.cluster_threads.values():  # a regrouping finishes its write before its gallery closes
            await anyio.to_thread.run_sync(thread.join)
        gallery, pipeline, collections = state.gallery, state.pipeline, state.collections
        state.gallery = state.pipeline = state.collections = None
        if collections is not None:
            await anyio.to_thread.run_sync(collections.close)
        if gallery is not None:
            await anyio.to_thread.run_sync(gallery.close)
        if pipeline is not None:
            pipeline.close()


class OneLineStartupFailure:
    """Reports a failed start-up as the StartupError's one line instead of a traceback (uvicorn logs
    whatever message the lifespan sends)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_short(message: Any) -> None:
            if message.get("type") == "lifespan.startup.failed":
                lines = [ln for ln in str(message.get("message", "")).splitlines() if ln.strip()]
                last = lines[-1] if lines else "start-up failed"
                message = {**message, "message": "FaceSearch cannot start: " + last.split(": ", 1)[-1]}
            await send(message)

        await self.app(scope, receive, send_short)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    # forms hold at most 32 files (an enrollment's photos), 32 fields and 64 KiB per field (the body as a whole:
    # app/guard.py)
    app = FastAPI(title="FaceSearch", version=__version__, lifespan=lifespan,
                  description="Face similarity search: enroll, search (with an honest 'unknown') and verify.",
                  form_limits={"max_files": 32, "max_fields": 32, "max_part_size": 64 * 1024},
                  # operation ids are the handlers' names (search, enroll, index_photo, ...): what a generated
                  # client calls its methods
                  generate_unique_id_function=lambda route: route.name)
    state = AppState(settings=settings, keys=KeyRing(settings.api_keys),
                     rate_limit=RateLimit(settings.rate_limit) if settings.rate_limit else None)
    app.state.fs = state
    errors.install(app)
    app.add_middleware(RequestMetrics, metrics=state.metrics)
    app.include_router(health.router)
    app.include_router(web.router)
    app.mount("/static", StaticFiles(directory=web.STATIC), name="static")
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authorize), Depends(remember_request)],
                   responses=ERROR_RESPONSES)
    v1.include_router(info.router)
    v1.include_router(collections.router)
    # every route that reads or writes faces: under /v1 (the default collection) and in each collection
    in_one = APIRouter(prefix="/collections/{collection}", dependencies=[Depends(in_collection)])
    for module in (identities, faces, search, verify, embed, photos, clusters, audit):
        v1.include_router(module.router)
        in_one.include_router(module.router)
    v1.include_router(in_one, generate_unique_id_function=lambda route: f"{route.name}_in_collection")
    app.include_router(v1)
    app.add_middleware(RequestGuard, keys=state.keys, metrics_public=settings.metrics_public,
                       max_body=settings.max_body_bytes, allowed_hosts=settings.allowed_hosts)
    app.add_middleware(OneLineStartupFailure)
    if settings.cors_origins:  # outermost: a browser's preflight carries no key
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["X-API-Key", "Authorization", "Content-Type"], max_age=600)
    return app
