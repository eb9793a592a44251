"""JSON errors, {"detail": ..., "code": ...}: the use cases', model/'s and index/'s exceptions through the one table of
facesearch/errors.py, and the HTTP layer's own (keys, limits, validation, routing)."""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from facesearch.errors import (  # noqa: F401 (the messages, re-exported for the routes and tests)
    HANDLED,
    MULTIPLE_FACES,
    NO_FACE,
    RETRY_AFTER_S,
    STORE_UNAVAILABLE,
    describe,
)

log = logging.getLogger(__name__)

# Messages are constants so tests can assert them.
UNAUTHORIZED = "missing or invalid API key (X-API-Key: KEY or Authorization: Bearer KEY)"
NOT_READY = "the service is still loading"
TOO_LARGE = "upload exceeds the size limit"
NOT_MULTIPART = "send the image as multipart/form-data (field 'image')"
INTERNAL = "internal error"
SLASH_IN_IDENTITY = "identity must not contain '/'"
BUSY = "the service has as many requests waiting as it takes (FACESEARCH_MAX_WAITING): retry after a moment"
RATE_LIMITED = "this key has made more requests than FACESEARCH_RATE_LIMIT allows: retry after a moment"
NOT_LOCAL = ("this service has no API key, so it answers only requests addressed to this machine and not posted from "
             "another site; set FACESEARCH_API_KEYS (or run facesearch keys create) to serve it on a network, or add "
             "the name to FACESEARCH_ALLOWED_HOSTS")
CLIENT_GONE = "the client disconnected before its request's turn"
ENCODED_SLASH = re.compile(r"^/v1/(collections/[^/]+/)?identities/[^/]*%2[fF]")


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str, extra: dict[str, object] | None = None, *,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.extra, self.headers = status, code, detail, extra or {}, headers


def validation_detail(errors: list[dict[str, object]]) -> str:
    """One line naming each refused field: ``k: Input should be greater than or equal to 1``."""
    parts = []
    for err in errors:
        loc = [str(x) for x in err["loc"] if x not in ("body", "query", "path", "header")]  # type: ignore[attr-defined]
        parts.append(f"{'.'.join(loc) or 'request'}: {err['msg']}")
    return "; ".join(parts) or "invalid request"


def error_response(status: int, code: str, detail: object, **extra: object) -> JSONResponse:
    return JSONResponse({"detail": detail, "code": code, **extra}, status_code=status)


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
               422: "validation_error", 429: "too_many_requests", 503: "not_ready"}

def allowed_methods(request: Request) -> list[str]:
    """The methods some route answers at this path, asked of the routes themselves (their convertors:
    ``/v1/photos/search`` is no ``/v1/photos/{photo_id:photo}``, ``rebuild`` no ``{cluster_id:int}``)."""
    return [method for method in ("DELETE", "GET", "PATCH", "POST", "PUT")
            if any(route.matches({**request.scope, "method": method})[0] == Match.FULL
                   for route in request.app.router.routes)]


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, e: ApiError) -> JSONResponse:
        response = error_response(e.status, e.code, e.detail, **e.extra)
        response.headers.update(e.headers or {})
        return response

    async def _described(_: Request, e: Exception) -> JSONResponse:  # facesearch/errors.py's table
        d = describe(e)
        if d is None:
            raise e
        if d.status >= 500:
            log.warning("%s", e)
        response = error_response(d.status, d.code, d.detail, **d.extra)
        if d.retry_after is not None:
            response.headers["Retry-After"] = str(d.retry_after)
        return response

    for exc in HANDLED:
        app.add_exception_handler(exc, _described)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, e: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(err.get("loc", ())), "msg": str(err.get("msg", "")), "type": err.get("type")}
                  for err in e.errors()]
        # detail is a string like every other error's; the field list travels beside it
        return error_response(422, "validation_error", validation_detail(errors), errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        if e.status_code == 404 and ENCODED_SLASH.search(request.scope.get("raw_path", b"").decode("latin-1")):
            # an identity key with an encoded '/' ("a%2Fb") is decoded into two path segments: say why
            return error_response(422, "invalid_identity", SLASH_IN_IDENTITY)
        headers = dict(e.headers or {})
        if e.status_code == 405:
            # Starlette names only the first route whose path matched; list every method of the path
            headers["Allow"] = ", ".join(allowed_methods(request))
        return JSONResponse({"detail": e.detail, "code": _HTTP_CODES.get(e.status_code, "error")}, e.status_code,
                            headers=headers or None)

    @app.exception_handler(Exception)
    async def _internal(_: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal", INTERNAL)
