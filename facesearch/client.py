"""A Python client for a FaceSearch server: :class:`FaceSearch` (blocking) and :class:`AsyncFaceSearch` (asyncio),
one method per route, results typed with the models the server answers with (:mod:`facesearch.schemas`), errors
raised as :class:`ApiError` (a subclass per kind) carrying the answer's ``status``, ``code`` and ``detail``. An
answer 503 or 429 is tried again after its ``Retry-After`` (``retries`` times). It needs httpx and pydantic and
imports nothing of the server (no ONNX Runtime, FAISS or store).

    from facesearch.client import FaceSearch

    with FaceSearch("http://127.0.0.1:8000", api_key="KEY") as fs:
        fs.enroll("alice", "alice1.jpg", "alice2.jpg")          # images: paths or bytes
        for face in fs.search("party.jpg").faces:
            print(face.decision, face.identity, face.distance)
        print(fs.verify("a.jpg", identity="alice").same_person)
        fs.delete_identity("alice")
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import httpx
from pydantic import BaseModel

from facesearch import schemas

M = TypeVar("M")
Image = bytes | str | Path
RETRIED = (429, 503)


class ApiError(Exception):
    """An error answer: ``status``, the stable ``code``, the one-sentence ``detail`` and the answer's other fields
    (``extra``: which photo, which boxes, the validation errors)."""

    def __init__(self, status: int, code: str, detail: Any, extra: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.detail, self.extra = status, code, detail, extra or {}


class BadRequest(ApiError):
    """400, 413, 415, 422: what was sent (not a photo, too large, no face, a field out of range)."""


class Unauthorized(ApiError):
    """401: a missing or wrong API key."""


class Forbidden(ApiError):
    """403: the key may not do this."""


class NotFound(ApiError):
    """404: no such identity, face, photo, album or cluster."""


class Conflict(ApiError):
    """409: it exists already, or the gallery awaits re-embedding."""


class Unavailable(ApiError):
    """429 or 503 after the retries: busy, a photo that timed out, the store unreachable."""


class Unreachable(Exception):
    """No answer at all (refused, timed out): one line saying where and why."""


_KINDS: dict[int, type[ApiError]] = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
                                     413: BadRequest, 415: BadRequest, 422: BadRequest, 429: Unavailable,
                                     503: Unavailable}


def error_of(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    body = body if isinstance(body, dict) else {}
    return error_for(response.status_code, str(body.get("code") or f"http_{response.status_code}"),
                     body.get("detail") or f"HTTP {response.status_code} from a server that is not FaceSearch",
                     {k: v for k, v in body.items() if k not in ("code", "detail")})


def error_for(status: int, code: str, detail: Any, extra: dict[str, Any] | None = None) -> ApiError:
    """The error of this kind (:class:`NotFound` for a 404, ...)."""
    return _KINDS.get(status, ApiError)(status, code, detail, extra)


@dataclass(frozen=True)
class Call(Generic[M]):
    """One request, and what its answer reads as: a model, or ``bytes`` (a zip, a JPEG)."""

    method: str
    path: str
    reads: type[M]
    params: dict[str, Any] = field(default_factory=dict)
    form: dict[str, Any] = field(default_factory=dict)
    images: list[tuple[str, Image]] = field(default_factory=list)
    json: dict[str, Any] | None = None
    # the :class:`Routes` method that made it and its arguments: what an in-process client answers from
    route: str = ""
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def arguments(self) -> dict[str, Any]:
        """httpx's keyword arguments: query, form fields (left out when None), files, a JSON body."""
        out: dict[str, Any] = {"params": {k: v for k, v in self.params.items() if v is not None}}
        form = {k: _field(v) for k, v in self.form.items() if v is not None}
        if self.images:
            out["files"] = [(name, (f"image{n}", _read(image), "application/octet-stream"))
                            for n, (name, image) in enumerate(self.images)]
            out["data"] = form
        elif form:
            out["data"] = form
        if self.json is not None:
            out["json"] = self.json
        return out

    def answer(self, response: httpx.Response) -> M:
        if response.status_code >= 400:
            raise error_of(response)
        if self.reads is bytes:
            return response.content  # type: ignore[return-value]
        assert issubclass(self.reads, BaseModel)
        return self.reads.model_validate(response.json())


def _read(image: Image) -> bytes:
    return image if isinstance(image, bytes) else Path(image).read_bytes()


def _field(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def _p(key: str | int) -> str:
    return urllib.parse.quote(str(key), safe="")


def _wait(response: httpx.Response, attempt: int, max_wait: float) -> float:
    """Seconds before trying again: the answer's Retry-After, else 0.5 s doubling; never more than ``max_wait``."""
    try:
        after = float(response.headers.get("retry-after", ""))
    except ValueError:
        after = 0.5 * 2**attempt
    return min(max(after, 0.0), max_wait)


class Routes:
    """Every route as a :class:`Call`; :class:`FaceSearch` and :class:`AsyncFaceSearch` send them."""

    # --- identities --------------------------------------------------------------------------------------
    @staticmethod
    def enroll(identity: str, *images: Image, metadata: dict[str, Any] | None = None, face: str | None = None
               ) -> Call[schemas.EnrollResponse]:
        """Enroll photos of one person (all or none); ``face="largest"`` accepts group photos."""
        return Call("POST", f"/v1/identities/{_p(identity)}/faces", schemas.EnrollResponse,
                    form={"metadata": metadata, "face": face}, images=[("image", i) for i in images])

    @staticmethod
    def identities(*, limit: int = 50, offset: int = 0, prefix: str = "") -> Call[schemas.IdentityList]:
        return Call("GET", "/v1/identities", schemas.IdentityList,
                    params={"limit": limit, "offset": offset, "prefix": prefix or None})

    @staticmethod
    def identity(identity: str, *, limit: int = 100, offset: int = 0) -> Call[schemas.IdentityDetail]:
        return Call("GET", f"/v1/identities/{_p(identity)}", schemas.IdentityDetail,
                    params={"limit": limit, "offset": offset})

    @staticmethod
    def update_identity(identity: str, *, new_identity: str | None = None, metadata: dict[str, Any] | None = None
                        ) -> Call[schemas.Identity]:
        body = {k: v for k, v in (("identity", new_identity), ("metadata", metadata)) if v is not None}
        return Call("PATCH", f"/v1/identities/{_p(identity)}", schemas.Identity, json=body)

    @staticmethod
    def merge_identities(into: str, other: str) -> Call[schemas.Identity]:
        return Call("POST", f"/v1/identities/{_p(into)}/merge", schemas.Identity, json={"identity": other})

    @staticmethod
    def delete_identity(identity: str) -> Call[schemas.Deleted]:
        return Call("DELETE", f"/v1/identities/{_p(identity)}", schemas.Deleted)

    @staticmethod
    def export_identity(identity: str) -> Call[bytes]:
        """Everything stored about the identity: a zip."""
        return Call("GET", f"/v1/identities/{_p(identity)}/export", bytes)

    # --- faces -------------------------------------------------------------------------------------------
    @staticmethod
    def thumbnail(face_id: int) -> Call[bytes]:
        return Call("GET", f"/v1/faces/{_p(face_id)}/thumbnail", bytes)

    @staticmethod
    def delete_face(face_id: int) -> Call[schemas.Deleted]:
        return Call("DELETE", f"/v1/faces/{_p(face_id)}", schemas.Deleted)

    # --- search, verify, embed ---------------------------------------------------------------------------
    @staticmethod
    def search(image: Image, *, k: int | None = None, threshold: float | None = None, max_faces: int | None = None
               ) -> Call[schemas.SearchResponse]:
        """Every face of the photo with its top identities, ``match`` or ``unknown``."""
        return Call("POST", "/v1/search", schemas.SearchResponse,
                    form={"k": k, "threshold": threshold, "max_faces": max_faces}, images=[("image", image)])

    @staticmethod
    def verify(image: Image, other: Image | None = None, *, identity: str | None = None,
               threshold: float | None = None) -> Call[schemas.VerifyResponse]:
        """Two photos the same person? Or a photo and an enrolled identity (``identity=``)."""
        if (other is None) == (identity is None):
            raise ValueError("verify takes a second photo or an identity")
        images = [("image", image)] if other is None else [("image1", image), ("image2", other)]
        return Call("POST", "/v1/verify", schemas.VerifyResponse, form={"identity": identity, "threshold": threshold},
                    images=images)

    @staticmethod
    def embed(image: Image, *, max_faces: int | None = None) -> Call[schemas.EmbedResponse]:
        return Call("POST", "/v1/embed", schemas.EmbedResponse, form={"max_faces": max_faces},
                    images=[("image", image)])

    # --- photos ------------------------------------------------------------------------------------------
    @staticmethod
    def index_photo(image: Image, *, photo_id: str | None = None, album: str | None = None,
                    metadata: dict[str, Any] | None = None) -> Call[schemas.IndexedPhoto]:
        """Every face of the photo stored unnamed, clustered, and told which enrolled identity it is."""
        return Call("POST", "/v1/photos", schemas.IndexedPhoto,
                    form={"photo_id": photo_id, "album": album, "metadata": metadata}, images=[("image", image)])

    @staticmethod
    def photos(*, album: str | None = None, limit: int = 50, offset: int = 0) -> Call[schemas.PhotoList]:
        return Call("GET", "/v1/photos", schemas.PhotoList, params={"album": album, "limit": limit, "offset": offset})

    @staticmethod
    def photo(photo_id: str) -> Call[schemas.PhotoDetail]:
        return Call("GET", f"/v1/photos/{_p(photo_id)}", schemas.PhotoDetail)

    @staticmethod
    def delete_photo(photo_id: str) -> Call[schemas.Deleted]:
        return Call("DELETE", f"/v1/photos/{_p(photo_id)}", schemas.Deleted)

    @staticmethod
    def delete_album(album: str) -> Call[schemas.Deleted]:
        return Call("DELETE", f"/v1/albums/{_p(album)}", schemas.Deleted)

    @staticmethod
    def find_photos(image: Image | None = None, *, identity: str | None = None, album: str | None = None,
                    limit: int | None = None, threshold: float | None = None, expand: bool | None = None
                    ) -> Call[schemas.PhotoSearchResponse]:
        """The photos a person is in: from a selfie, or from an enrolled identity's faces."""
        if (image is None) == (identity is None):
            raise ValueError("find_photos takes a photo (a selfie) or an identity")
        return Call("POST", "/v1/photos/search", schemas.PhotoSearchResponse,
                    form={"identity": identity, "album": album, "limit": limit, "threshold": threshold,
                          "expand": expand}, images=[] if image is None else [("image", image)])

    # --- clusters ----------------------------------------------------------------------------------------
    @staticmethod
    def clusters(*, limit: int = 50, offset: int = 0, min_faces: int = 1) -> Call[schemas.ClusterList]:
        return Call("GET", "/v1/clusters", schemas.ClusterList,
                    params={"limit": limit, "offset": offset, "min_faces": min_faces})

    @staticmethod
    def cluster(cluster_id: int, *, limit: int = 1000, offset: int = 0) -> Call[schemas.Cluster]:
        return Call("GET", f"/v1/clusters/{_p(cluster_id)}", schemas.Cluster, params={"limit": limit, "offset": offset})

    @staticmethod
    def name_cluster(cluster_id: int, identity: str) -> Call[schemas.Named]:
        return Call("POST", f"/v1/clusters/{_p(cluster_id)}/name", schemas.Named, json={"identity": identity})

    @staticmethod
    def merge_clusters(into: int, other: int) -> Call[schemas.Cluster]:
        return Call("POST", f"/v1/clusters/{_p(into)}/merge", schemas.Cluster, json={"cluster_id": other})

    @staticmethod
    def name_face(face_id: int, identity: str) -> Call[schemas.Named]:
        return Call("POST", f"/v1/faces/{_p(face_id)}/name", schemas.Named, json={"identity": identity})

    @staticmethod
    def move_face(face_id: int, cluster_id: int) -> Call[schemas.Cluster]:
        return Call("POST", f"/v1/faces/{_p(face_id)}/cluster", schemas.Cluster, json={"cluster_id": cluster_id})

    @staticmethod
    def delete_cluster(cluster_id: int) -> Call[schemas.Deleted]:
        return Call("DELETE", f"/v1/clusters/{_p(cluster_id)}", schemas.Deleted)

    @staticmethod
    def export_cluster(cluster_id: int) -> Call[bytes]:
        return Call("GET", f"/v1/clusters/{_p(cluster_id)}/export", bytes)

    @staticmethod
    def rebuild_clusters(*, album: str | None = None) -> Call[schemas.ClusterJob]:
        return Call("POST", "/v1/clusters/rebuild", schemas.ClusterJob, params={"album": album})

    @staticmethod
    def rebuild_status() -> Call[schemas.ClusterJob]:
        return Call("GET", "/v1/clusters/rebuild", schemas.ClusterJob)

    # --- collections --------------------------------------------------------------------------------------
    @staticmethod
    def create_collection(name: str) -> Call[schemas.Collection]:
        """A new, empty collection: a client made with ``collection=name`` then works in it."""
        return Call("POST", "/v1/collections", schemas.Collection, json={"name": name})

    @staticmethod
    def collections() -> Call[schemas.CollectionList]:
        return Call("GET", "/v1/collections", schemas.CollectionList)

    @staticmethod
    def describe_collection(name: str) -> Call[schemas.Collection]:
        return Call("GET", f"/v1/collections/{_p(name)}", schemas.Collection)

    @staticmethod
    def delete_collection(name: str) -> Call[schemas.Deleted]:
        """Deletes the collection and everything in it."""
        return Call("DELETE", f"/v1/collections/{_p(name)}", schemas.Deleted)

    # --- the service -------------------------------------------------------------------------------------
    @staticmethod
    def audit(*, since: int = 0, limit: int = 100) -> Call[schemas.AuditLog]:
        return Call("GET", "/v1/audit", schemas.AuditLog, params={"since": since, "limit": limit})

    @staticmethod
    def info() -> Call[schemas.Info]:
        return Call("GET", "/v1/info", schemas.Info)

    @staticmethod
    def live() -> Call[schemas.Health]:
        """Liveness: the server answers (Unreachable when nothing does)."""
        return Call("GET", "/health/live", schemas.Health)

    @staticmethod
    def ready() -> Call[schemas.Health]:
        """Readiness: raises Unavailable (after the retries) while the service loads or its store is away."""
        return Call("GET", "/health/ready", schemas.Health)


ROUTES = [name for name, value in vars(Routes).items() if isinstance(value, staticmethod)]


def _recorded(route: str) -> staticmethod[..., Any]:
    make = getattr(Routes, route)

    @functools.wraps(make)
    def recorded(*args: Any, **kwargs: Any) -> Call[Any]:
        return dataclasses.replace(make(*args, **kwargs), route=route, args=args, kwargs=kwargs)
    return staticmethod(recorded)


for _route in ROUTES:
    setattr(Routes, _route, _recorded(_route))


class Client(Protocol):
    """What the command line talks to: :class:`FaceSearch` (a server) or ``facesearch.local.LocalFaceSearch`` (the
    gallery the service would open, in this process). Both answer a :class:`Call` with the same model, and refuse it
    with the same :class:`ApiError` kind and ``code``."""

    def send(self, call: Call[M]) -> M: ...

    def close(self) -> None: ...

    def __enter__(self) -> Client: ...

    def __exit__(self, *exc: object) -> None: ...
# what stays where it is whatever the collection: the service, and the collections themselves
_SERVICE_WIDE = ("/v1/info", "/v1/collections")


def in_collection(path: str, collection: str | None) -> str:
    """A route's path in ``collection``: ``/v1/x`` -> ``/v1/collections/{collection}/x`` (``default``, or None: the
    routes under /v1 as they are)."""
    if not collection or collection == "default" or not path.startswith("/v1/") or path.startswith(_SERVICE_WIDE):
        return path
    return f"/v1/collections/{_p(collection)}/" + path.removeprefix("/v1/")


class FaceSearch:
    """A blocking client of one server, working in ``collection`` (None: ``default``, the routes under /v1).
    ``retries``: how many times an answer 503 or 429 is tried again, after its ``Retry-After`` (at most ``max_wait``
    seconds). Every route of :class:`Routes` is a method of the same name and arguments, returning the answer's model
    (``bytes`` for a zip or a JPEG)."""

    def __init__(self, url: str, api_key: str | None = None, *, collection: str | None = None, timeout: float = 120.0,
                 retries: int = 3, max_wait: float = 30.0) -> None:
        self.url, self.collection, self.retries, self.max_wait = url.rstrip("/"), collection, retries, max_wait
        self.http = httpx.Client(base_url=self.url, timeout=timeout,
                                 headers={"X-API-Key": api_key} if api_key else {})

    def __enter__(self) -> FaceSearch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def send(self, call: Call[M]) -> M:
        for attempt in range(self.retries + 1):
            try:
                response = self.http.request(call.method, in_collection(call.path, self.collection),
                                             **call.arguments())
            except httpx.TransportError as e:
                raise Unreachable(f"cannot reach the FaceSearch server at {self.url}: {e}") from e
            if response.status_code in RETRIED and attempt < self.retries:
                time.sleep(_wait(response, attempt, self.max_wait))
                continue
            return call.answer(response)
        raise AssertionError("the loop returns or raises")


class AsyncFaceSearch:
    """The same client for asyncio (``await fs.search(...)``), on httpx's AsyncClient."""

    def __init__(self, url: str, api_key: str | None = None, *, collection: str | None = None, timeout: float = 120.0,
                 retries: int = 3, max_wait: float = 30.0) -> None:
        self.url, self.collection, self.retries, self.max_wait = url.rstrip("/"), collection, retries, max_wait
        self.http = httpx.AsyncClient(base_url=self.url, timeout=timeout,
                                      headers={"X-API-Key": api_key} if api_key else {})

    async def __aenter__(self) -> AsyncFaceSearch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    async def send(self, call: Call[M]) -> M:
        for attempt in range(self.retries + 1):
            try:
                response = await self.http.request(call.method, in_collection(call.path, self.collection),
                                                   **call.arguments())
            except httpx.TransportError as e:
                raise Unreachable(f"cannot reach the FaceSearch server at {self.url}: {e}") from e
            if response.status_code in RETRIED and attempt < self.retries:
                await asyncio.sleep(_wait(response, attempt, self.max_wait))
                continue
            return call.answer(response)
        raise AssertionError("the loop returns or raises")


def _bind(route: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    make = getattr(Routes, route)

    def blocking(self: FaceSearch, *args: Any, **kwargs: Any) -> Any:
        return self.send(make(*args, **kwargs))

    async def awaiting(self: AsyncFaceSearch, *args: Any, **kwargs: Any) -> Any:
        return await self.send(make(*args, **kwargs))

    for f in (blocking, awaiting):
        f.__name__, f.__qualname__, f.__doc__ = route, route, make.__doc__
        setattr(f, "__wrapped__", make)  # noqa: B010 (inspect.signature and help() show the route's arguments)
    return blocking, awaiting


for _route in ROUTES:
    _blocking, _awaiting = _bind(_route)
    setattr(FaceSearch, _route, _blocking)
    setattr(AsyncFaceSearch, _route, _awaiting)
