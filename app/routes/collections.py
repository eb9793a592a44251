"""Collections: galleries of their own in one service (:mod:`index.collections`). Every route that reads or writes
faces is also under ``/v1/collections/{collection}/...``; the routes under ``/v1/...`` are the ``default``
collection's."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.auth import OPEN, Principal
from app.deps import Actor, State, run_cpu
from app.errors import ApiError
from facesearch import schemas
from index.collections import CollectionRecord, Collections

router = APIRouter(tags=["collections"])


def _collections(state: State) -> Collections:
    if state.collections is None:
        raise ApiError(503, "not_ready", "the service is starting")
    return state.collections


def _caller(request: Request) -> Principal:
    principal: Principal = getattr(request.state, "principal", OPEN)
    return principal


def collection_out(collections: Collections, record: CollectionRecord) -> schemas.Collection:
    stats = collections.get(record.name).stats()
    return schemas.Collection(name=record.name, created_at=record.created_at, identities=stats["identities"],
                              faces=stats["faces"], photos=stats["photos"], unnamed_faces=stats["unnamed_faces"],
                              model_version=stats["stored_model_version"])


@router.post("/collections", status_code=201)
async def create_collection(body: schemas.CollectionBody, request: Request, state: State,
                            actor: Actor) -> schemas.Collection:
    """A new, empty collection (409 if the name is taken). Keys limited to collections may not make one."""
    if _caller(request).collections:
        raise ApiError(403, "forbidden", "a key limited to collections may not create collections")
    collections = _collections(state)
    record = await run_cpu(state, collections.create, body.name, actor=actor)
    return await run_cpu(state, collection_out, collections, record)


@router.get("/collections")
async def list_collections(request: Request, state: State) -> schemas.CollectionList:
    """The collections this key may use, ``default`` first, with their sizes."""
    collections, caller = _collections(state), _caller(request)

    def read() -> schemas.CollectionList:
        return schemas.CollectionList(items=[collection_out(collections, r) for r in collections.records()
                                             if caller.may_use(r.name)])

    return await run_cpu(state, read)


@router.get("/collections/{collection}")
async def get_collection(collection: str, state: State) -> schemas.Collection:
    """A collection's size and the model its faces were embedded with."""
    collections = _collections(state)
    return await run_cpu(state, lambda: collection_out(collections, collections.record(collection)))


@router.delete("/collections/{collection}")
async def delete_collection(collection: str, state: State, actor: Actor) -> schemas.Deleted:
    """Deletes the collection and everything in it: identities, photos, clusters, audit. When this answers, no file
    of the service holds any of its faces (409 for ``default``)."""
    faces = await run_cpu(state, _collections(state).delete, collection, actor=actor)
    return schemas.Deleted(collection=collection, faces_deleted=faces)
