"""Identities: enroll photos, list, show, rename, delete."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Path, Query, UploadFile
from fastapi.responses import StreamingResponse
from pydantic import AfterValidator

from app import subject_access
from app.deps import Actor, ApiPath, GalleryDep, Multipart, Pipeline, SettingsDep, State, read_upload, run_cpu
from app.errors import SLASH_IN_IDENTITY, ApiError
from facesearch import answers, enrollment, schemas
from index import transfer
from index.records import validate_key

router = APIRouter(prefix="/identities", tags=["identities"])
# surrounding whitespace is not part of a key: " alice" is alice, on every route
IdentityPath = Annotated[str, AfterValidator(str.strip),
                         Path(description="the app's own key: 1-128 printable characters, no '/'")]


MAX_METADATA_BYTES = 16_384
MAX_METADATA_DEPTH = 32


def nesting(value: Any) -> int:
    """How deeply objects and arrays nest in a parsed JSON value (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict | list):
            deepest = max(deepest, depth)
            stack.extend((x, depth + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def parse_metadata(raw: str | None) -> dict[str, Any] | None:
    if raw is None or raw == "":
        return None
    if len(raw) > MAX_METADATA_BYTES:  # before parsing: the parser's cost and depth grow with the text
        raise ApiError(422, "validation_error", "metadata is limited to 16 KiB")
    try:
        meta = json.loads(raw)
    except RecursionError as e:  # nesting deeper than the parser's recursion allows
        raise ApiError(422, "validation_error", f"metadata nests deeper than {MAX_METADATA_DEPTH} levels") from e
    except ValueError as e:
        raise ApiError(422, "validation_error", "metadata must be a JSON object") from e
    if not isinstance(meta, dict):
        raise ApiError(422, "validation_error", "metadata must be a JSON object")
    if nesting(meta) > MAX_METADATA_DEPTH:
        raise ApiError(422, "validation_error", f"metadata nests deeper than {MAX_METADATA_DEPTH} levels")
    return meta


@router.post("/{identity}/faces", status_code=201, dependencies=[Multipart])
async def enroll(
    identity: IdentityPath,
    state: State,
    pipeline: Pipeline,
    gallery: GalleryDep,
    settings: SettingsDep,
    actor: Actor,
    image: Annotated[list[UploadFile], File(min_length=1, max_length=32,
                                            description="one or more photos; all enroll or none")],
    face: Annotated[Literal["single", "largest"], Form(
        description="'single' (default) enrolls a photo's face, or its largest where that is clearly the subject "
                    f"({enrollment.SUBJECT_RATIO:g} times the size of the next); 'largest' enrolls the largest face "
                    "whatever the photo holds")]
    = "single",
    metadata: Annotated[str | None, Form(description="JSON object stored with the identity")] = None,
) -> schemas.EnrollResponse:
    identity = validate_key(identity)
    meta = parse_metadata(metadata)
    if len(image) > 32:
        raise ApiError(422, "validation_error", "at most 32 photos per request")
    blobs = [await read_upload(f, settings) for f in image]
    analyses = [await run_cpu(state, pipeline.analyze, b, sources=True) for b in blobs]
    for a in analyses:
        state.metrics.faces_detected.inc(a.faces_found)
    chosen = enrollment.choose_faces(analyses, face)
    shas = [enrollment.sha256_of(b) for b in blobs]
    done = await run_cpu(state, lambda: enrollment.enroll(gallery, identity, chosen, shas, metadata=meta, actor=actor))
    return answers.enrolled(identity, done, pipeline.model_version)


@router.get("")
async def list_identities(
    state: State, gallery: GalleryDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
    prefix: Annotated[str, Query(max_length=128)] = "",
) -> schemas.IdentityList:
    items, total = await run_cpu(state, lambda: gallery.list_identities(limit=limit, offset=offset, prefix=prefix))
    return schemas.IdentityList(items=[answers.identity_out(r) for r in items], total=total)


@router.get("/{identity}")
async def get_identity(
    identity: IdentityPath, state: State, gallery: GalleryDep, api: ApiPath,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> schemas.IdentityDetail:
    def read() -> schemas.IdentityDetail:
        r = gallery.get_identity(identity)
        faces, total = gallery.list_faces(identity, limit=limit, offset=offset)
        return answers.identity_detail(r, faces, total, api)

    return await run_cpu(state, read)


@router.patch("/{identity}")
async def update_identity(identity: IdentityPath, body: schemas.IdentityPatch, state: State,
                          gallery: GalleryDep, actor: Actor) -> schemas.Identity:
    if body.identity is not None and "/" in body.identity:
        raise ApiError(422, "invalid_identity", SLASH_IN_IDENTITY)
    if body.metadata is not None and len(json.dumps(body.metadata)) > 16_384:
        raise ApiError(422, "validation_error", "metadata is limited to 16 KiB")
    r = await run_cpu(state, lambda: gallery.update_identity(identity, new_key=body.identity, metadata=body.metadata,
                                                                actor=actor))
    return answers.identity_out(r)


@router.post("/{identity}/merge")
async def merge_identity(identity: IdentityPath, body: schemas.MergeIdentity, state: State, gallery: GalleryDep,
                         actor: Actor) -> schemas.Identity:
    """Every face of the other identity becomes this one's; the other is deleted (two names for one person, or a
    cluster named twice)."""
    r = await run_cpu(state, lambda: gallery.merge_identities(identity, body.identity.strip(), actor=actor))
    return answers.identity_out(r)


@router.delete("/{identity}")
async def delete_identity(identity: IdentityPath, state: State, gallery: GalleryDep, actor: Actor) -> schemas.Deleted:
    """Deletes the identity and its faces. When this answers, no file of the gallery holds their embeddings or
    crops; the audit keeps the event (no face data)."""
    n = await run_cpu(state, gallery.delete_identity, identity, actor=actor)
    return schemas.Deleted(identity=identity, faces_deleted=n)


@router.get("/{identity}/export", response_class=StreamingResponse,
            responses={200: {"content": {"application/zip": {}},
                             "description": "identity.json, and per face its record (box, landmarks, embedding, "
                                            "model, time) with its source crop (WebP) and chip (JPEG)"}})
async def export_identity(identity: IdentityPath, state: State, gallery: GalleryDep, actor: Actor
                          ) -> StreamingResponse:
    """Subject access: everything stored about the identity, as a zip streamed while it is read."""
    record, faces = await run_cpu(state, transfer.identity_export, gallery, identity)
    await run_cpu(state, lambda: gallery.record_audit("export", actor=actor, identity=identity))
    return subject_access.zip_response(faces, "identity.json", {
        "identity": record.key, "metadata": record.metadata, "created_at": record.created_at,
        "gallery_model": gallery.model_version}, "identity-export.zip")
