"""Photos: index every face of a photo, list and delete photos and albums, find the photos a person is in."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Path, Query, UploadFile
from pydantic import AfterValidator
from starlette.convertors import Convertor, register_url_convertor

from app.deps import (
    Actor,
    ApiPath,
    GalleryDep,
    KnownFields,
    Multipart,
    Pipeline,
    SettingsDep,
    State,
    read_upload,
    run_cpu,
)
from app.errors import ApiError
from app.routes.identities import parse_metadata
from facesearch import answers, photos, schemas
from facesearch.errors import NoFace
from index.errors import InvalidKey
from index.records import NewPhoto, validate_key


class PhotoKey(Convertor[str]):
    """A photo key in a path: anything but ``search``, which names POST /v1/photos/search (so that path is not
    also a photo's, for GET and DELETE)."""

    regex = r"(?!search$)[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("photo", PhotoKey())
RESERVED = {"search"}
# GET and DELETE of /v1/photos/search: the path is the photo search's (POST only), so Starlette answers 405
RESERVED_KEY: dict[int | str, dict[str, Any]] = {
    405: {"model": schemas.ErrorBody, "description": "method_not_allowed: `search` is no photo's key"}}
router = APIRouter(tags=["photos"])
PhotoPath = Annotated[str, AfterValidator(str.strip), Path(description="the photo's key: 1-128 printable characters")]
AlbumField = Annotated[str, Form(max_length=128, description="an album to file the photo under (empty: none)")]


def photo_key(raw: str | None) -> str:
    """The caller's photo_id (trimmed), or a new random one."""
    if raw is None or raw == "":
        return uuid.uuid4().hex
    try:
        key = validate_key(raw, "photo_id")
    except InvalidKey as e:
        raise ApiError(422, "invalid_photo_id", str(e)) from e
    if "/" in key:
        raise ApiError(422, "invalid_photo_id", "photo_id must not contain '/'")
    if key in RESERVED:
        raise ApiError(422, "invalid_photo_id", f"photo_id {key!r} is reserved (it names /v1/photos/{key})")
    return key


def album_name(raw: str) -> str:
    album = raw.strip()
    if album and not album.isprintable():
        raise ApiError(422, "validation_error", "album must be printable characters")
    return album


@router.post("/photos", status_code=201, dependencies=[Multipart])
async def index_photo(
    state: State, pipeline: Pipeline, gallery: GalleryDep, settings: SettingsDep, actor: Actor,
    image: Annotated[UploadFile, File(description="the photo")],
    photo_id: Annotated[str | None, Form(max_length=512, description="your key for the photo; default: a new one")]
    = None,
    album: AlbumField = "",
    metadata: Annotated[str | None, Form(description="JSON object stored with the photo")] = None,
) -> schemas.IndexedPhoto:
    """Stores the photo's faces (up to FACESEARCH_MAX_FACES, largest first) as faces of no identity, each with its
    source crop, chip and embedding like an enrolled face; each joins a cluster of unnamed faces and is told which
    enrolled identity it is, if any. A photo without a face is stored with none. 409 if the photo_id exists."""
    key = photo_key(photo_id)
    album = album_name(album)
    meta = parse_metadata(metadata) or {}
    data = await read_upload(image, settings)
    analysis = await run_cpu(state, pipeline.analyze, data, max_faces=settings.max_faces, sources=True)
    state.metrics.faces_detected.inc(analysis.faces_found)

    def write() -> list[photos.IndexedFace]:
        return photos.index_photo(gallery, pipeline.calibration, analysis, data, NewPhoto(key, album, meta),
                                  fpir=settings.search_fpir, actor=actor)

    done = await run_cpu(state, write)
    clusters = {f.id: f.cluster for f in (await run_cpu(state, gallery.photos.get, key))[1]}
    return answers.indexed_photo(key, album, analysis, done, clusters, pipeline.model_version)


@router.get("/photos")
async def list_photos(
    state: State, gallery: GalleryDep,
    album: Annotated[str | None, Query(max_length=128, description="only this album's photos")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> schemas.PhotoList:
    items, total = await run_cpu(state, lambda: gallery.photos.list_photos(
        album=None if album is None else album.strip(), limit=limit, offset=offset))
    return schemas.PhotoList(items=[answers.photo_out(r) for r in items], total=total)


@router.get("/photos/{photo_id:photo}", responses=RESERVED_KEY)
async def get_photo(photo_id: PhotoPath, state: State, gallery: GalleryDep, api: ApiPath) -> schemas.PhotoDetail:
    record, faces = await run_cpu(state, gallery.photos.get, photo_id)
    return answers.photo_detail(record, faces, api)


@router.delete("/photos/{photo_id:photo}", responses=RESERVED_KEY)
async def delete_photo(photo_id: PhotoPath, state: State, gallery: GalleryDep, actor: Actor) -> schemas.Deleted:
    """Deletes the photo and every face found in it, named or not. When this answers, no file of the gallery holds
    their embeddings or crops; the audit keeps the event."""
    n = await run_cpu(state, gallery.photos.delete, photo_id, actor=actor)
    return schemas.Deleted(photo_id=photo_id, faces_deleted=n)


@router.delete("/albums/{album}")
async def delete_album(album: Annotated[str, AfterValidator(str.strip), Path(max_length=128)], state: State,
                       gallery: GalleryDep, actor: Actor) -> schemas.Deleted:
    """Deletes every photo of the album with their faces (erased as a photo's)."""
    n_photos, n_faces = await run_cpu(state, gallery.photos.delete_album, album, actor=actor)
    return schemas.Deleted(album=album, photos_deleted=n_photos, faces_deleted=n_faces)


@router.post("/photos/search", dependencies=[KnownFields])
async def search_photos(
    state: State, pipeline: Pipeline, gallery: GalleryDep, settings: SettingsDep,
    image: Annotated[UploadFile | None, File(description="a selfie: its largest face is searched")] = None,
    identity: Annotated[str | None, Form(max_length=512, description="or: an enrolled identity (all its faces)")]
    = None,
    album: Annotated[str | None, Form(max_length=128, description="only this album's photos")] = None,
    limit: Annotated[int, Form(ge=1, le=1000)] = 100,
    threshold: Annotated[float | None, Form(ge=0, le=2, allow_inf_nan=False,
                                            description="distance threshold; default from the target FPIR")] = None,
    expand: Annotated[bool, Form(description="also the photos two of the matched faces vouch for: about 1.4x the "
                                             "photos found, precision 0.98-0.999 instead of 0.99-1.0 (README)")]
    = False,
) -> schemas.PhotoSearchResponse:
    """Find my photos: the photos holding the person of the selfie (or of an identity), best first, each with the
    face that matched; decided with the threshold that keeps a stranger's chance of matching any photo face at
    FACESEARCH_SEARCH_FPIR."""
    t0 = time.perf_counter()
    if (image is None) == (identity is None or identity.strip() == ""):
        raise ApiError(422, "validation_error", "send either image (a selfie) or identity, not both")
    if image is not None:
        data = await read_upload(image, settings)
        analysis = await run_cpu(state, pipeline.analyze, data, max_faces=1)
        if not analysis.faces or analysis.faces[0].embedding is None:
            raise NoFace()
        queries, query = analysis.faces[0].embedding[None, :], "selfie"
    else:
        assert identity is not None
        queries, query = (await run_cpu(state, gallery.embeddings, identity.strip()))[1], "identity"
        if not len(queries):
            raise ApiError(422, "no_face", f"identity {identity.strip()!r} has no faces")
    hits, thr = await run_cpu(state, lambda: photos.find_photos(
        gallery, pipeline.calibration, queries, fpir=settings.search_fpir, requested=threshold,
        album=None if album is None else album.strip(), limit=limit, expand=expand))
    return schemas.PhotoSearchResponse(
        photos=[schemas.PhotoMatch(photo_id=h.photo, album=h.album, face_id=h.face_id, box=h.box,
                                   similarity=h.similarity, distance=h.distance, expanded=h.expanded) for h in hits],
        query=query, threshold=answers.threshold_out(thr), model=pipeline.model_version,
        took_ms=round((time.perf_counter() - t0) * 1000, 2))
