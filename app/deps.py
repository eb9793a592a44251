"""Dependencies shared by the routers, as Annotated aliases."""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextvars import ContextVar
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import Depends, Path, Request, UploadFile

from app.auth import DEFAULT_COLLECTION, OPEN, needed_role
from app.errors import (
    BUSY,
    CLIENT_GONE,
    NOT_MULTIPART,
    NOT_READY,
    RATE_LIMITED,
    RETRY_AFTER_S,
    TOO_LARGE,
    UNAUTHORIZED,
    ApiError,
)
from app.state import AppState
from facesearch.settings import Settings
from index.gallery import Gallery
from model.pipeline import FacePipeline

T = TypeVar("T")


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.fs
    return state


State = Annotated[AppState, Depends(get_state)]


def get_settings(state: State) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


SERVICE_WIDE = ("/collections", "/info")  # the routes under /v1 that are no collection's


def authorize(request: Request, state: State) -> None:
    """Every /v1 route: the caller's key (401 without a known one), its collections and role (403, with the reason),
    its rate (429 with Retry-After); the caller is kept for the audit."""
    principal = state.keys.authenticate(request.headers)
    if principal is None:
        raise ApiError(401, "unauthorized", UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
    route = request.scope.get("route")
    path = getattr(route, "path", request.url.path)
    collection = request.path_params.get("collection")
    if collection is None and path.removeprefix("/v1") not in SERVICE_WIDE:
        collection = DEFAULT_COLLECTION
    if collection is not None and not principal.may_use(collection):
        raise ApiError(403, "forbidden", f"this key may use the collections {', '.join(principal.collections)} only"
                       + (f"; the routes under /v1 are the {DEFAULT_COLLECTION!r} collection's"
                          if "collection" not in request.path_params else ""))
    needed = needed_role(request.method, path)
    if not principal.may(needed):
        raise ApiError(403, "forbidden", f"a {principal.role} key may not do this: it needs an {needed} key"
                       if needed[0] in "aeiou" else f"a {principal.role} key may not do this: it needs a {needed} key")
    if state.rate_limit is not None and (wait := state.rate_limit.wait(principal.id)):
        raise ApiError(429, "rate_limited", RATE_LIMITED, headers={"Retry-After": str(wait)})
    request.state.principal = principal


def require_metrics_key(request: Request, state: State) -> None:
    """/metrics: any known key opens it, unless FACESEARCH_METRICS_PUBLIC (a scraper inside the network)."""
    if not state.settings.metrics_public and state.keys.authenticate(request.headers) is None:
        raise ApiError(401, "unauthorized", UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})


def get_actor(request: Request) -> str:
    """Who makes this request, for the audit: the API key's id (never the key), or ``open``."""
    principal = getattr(request.state, "principal", OPEN)
    return str(principal.id)


Actor = Annotated[str, Depends(get_actor)]


def get_pipeline(state: State) -> FacePipeline:
    if state.pipeline is None:
        raise ApiError(503, "not_ready", NOT_READY)
    return state.pipeline


def get_collection(request: Request) -> str:
    """The collection a route works in: ``/v1/collections/{collection}/...``, or ``default`` under ``/v1/...``."""
    return str(request.path_params.get("collection", DEFAULT_COLLECTION))


CollectionName = Annotated[str, Depends(get_collection)]


def get_gallery(collection: CollectionName, state: State) -> Gallery:
    """The collection's gallery (404 when there is no such collection); a sync dependency, so FastAPI runs it
    in a thread: the first use of a collection opens it."""
    if state.collections is None:
        raise ApiError(503, "not_ready", NOT_READY)
    return state.collections.get(collection)


def in_collection(collection: Annotated[str, Path(description="the collection's name (GET /v1/collections)")],
                  gallery: Annotated[Gallery, Depends(get_gallery)]) -> None:
    """Every route under /v1/collections/{collection}/...: 404 when there is no such collection (the gallery it
    looks up is the request's one lookup: FastAPI hands the same value to the route's ``GalleryDep``)."""


def get_api_path(request: Request) -> str:
    """Where this collection's routes are, for the links in answers (``/v1`` or ``/v1/collections/{c}``)."""
    collection = request.path_params.get("collection")
    return "/v1" if collection is None else f"/v1/collections/{collection}"


Pipeline = Annotated[FacePipeline, Depends(get_pipeline)]
GalleryDep = Annotated[Gallery, Depends(get_gallery)]
ApiPath = Annotated[str, Depends(get_api_path)]


_request: ContextVar[Request | None] = ContextVar("facesearch_request", default=None)


async def remember_request(request: Request) -> None:
    """The request being answered, for :func:`run_cpu` (an async dependency runs in the endpoint's context)."""
    _request.set(request)


async def run_cpu(state: AppState, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run CPU work in the bounded worker pool (``FACESEARCH_WORKERS`` at a time), never on the event loop.

    Back-pressure: when ``FACESEARCH_MAX_WAITING`` requests already wait for a worker, 503 ``busy`` with
    Retry-After at once; work whose client disconnected while it waited is dropped before it starts."""
    limiter = state.limiter
    assert limiter is not None
    if limiter.statistics().tasks_waiting >= state.settings.max_waiting:
        state.metrics.dropped.labels("busy").inc()
        raise ApiError(503, "busy", BUSY, headers={"Retry-After": str(RETRY_AFTER_S)})
    async with limiter:
        request = _request.get()
        if request is not None and await request.is_disconnected():
            state.metrics.dropped.labels("client_gone").inc()
            raise ApiError(499, "client_gone", CLIENT_GONE)  # nobody reads it
        # the token held above bounds the work; the thread comes from anyio's own pool
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


async def read_upload(upload: UploadFile, settings: Settings) -> bytes:
    """Read an uploaded file, refusing more than the configured limit."""
    limit = settings.max_upload_bytes
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, "too_large", f"{TOO_LARGE} ({settings.max_upload_mb:g} MB)")
    return data


async def require_known_fields(request: Request) -> None:
    """A form field the route does not take is refused (422 naming it), so that a misspelt or misplaced option is
    never silently ignored."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = {f.alias for f in dependant.body_params}
    unknown = sorted({name for name in await request.form() if name not in known})
    if unknown:
        raise ApiError(422, "validation_error",
                       f"unknown form field {', '.join(map(repr, unknown))}; this route takes "
                       f"{', '.join(sorted(known))}", {"errors": [{"loc": ["body", n], "msg": "unknown field",
                                                                   "type": "unknown_field"} for n in unknown]})


async def require_multipart(request: Request) -> None:
    """Uploads must be multipart/form-data; anything else is 415, not a confusing 422. Unknown fields are refused
    (:func:`require_known_fields`)."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise ApiError(415, "unsupported_media_type", NOT_MULTIPART)
    await require_known_fields(request)


Multipart = Depends(require_multipart)
# a form that may come without a file (urlencoded too): its fields checked all the same
KnownFields = Depends(require_known_fields)
