"""People from unlabelled faces: clusters of photos' unnamed faces, named into identities, merged, corrected."""

from __future__ import annotations

import logging
import threading
import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse

from app import subject_access
from app.deps import Actor, ApiPath, CollectionName, GalleryDep, Pipeline, State, run_cpu
from app.errors import SLASH_IN_IDENTITY, ApiError
from facesearch import photos, schemas
from index import transfer
from index.records import ClusterRecord

log = logging.getLogger(__name__)
router = APIRouter(tags=["clusters"])
ClusterId = Annotated[int, Path(ge=1, le=2**63 - 1)]


def cluster_out(r: ClusterRecord, api: str) -> schemas.Cluster:
    first = r.face_ids[0] if r.face_ids else r.id  # a cluster's id is its first face's
    return schemas.Cluster(cluster_id=r.id, faces=r.faces, face_ids=r.face_ids, photos=r.photos,
                           thumbnail_url=f"{api}/faces/{first}/thumbnail")


@router.get("/clusters")
async def list_clusters(
    state: State, gallery: GalleryDep, api: ApiPath,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
    min_faces: Annotated[int, Query(ge=1, le=1_000_000, description="only clusters this large")] = 1,
) -> schemas.ClusterList:
    """Groups of unnamed faces thought to be one person, largest first."""
    items, total = await run_cpu(state, lambda: gallery.photos.list_clusters(limit=limit, offset=offset,
                                                                            min_faces=min_faces))
    return schemas.ClusterList(items=[cluster_out(r, api) for r in items], total=total)


@router.get("/clusters/{cluster_id:int}")
async def get_cluster(
    cluster_id: ClusterId, state: State, gallery: GalleryDep, api: ApiPath,
    limit: Annotated[int, Query(ge=1, le=10_000, description="faces per page")] = 1000,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> schemas.Cluster:
    """A cluster: its size (``faces``) and a page of its face ids, by id."""
    record = await run_cpu(state, lambda: gallery.photos.cluster(cluster_id, limit=limit, offset=offset))
    return cluster_out(record, api)


@router.post("/clusters/{cluster_id:int}/name")
async def name_cluster(cluster_id: ClusterId, body: schemas.NameBody, state: State, gallery: GalleryDep,
                       actor: Actor) -> schemas.Named:
    """The cluster's faces become the identity's (created if new; audited); the cluster is gone."""
    if "/" in body.identity:
        raise ApiError(422, "invalid_identity", SLASH_IN_IDENTITY)
    ids = await run_cpu(state, gallery.photos.name_cluster, cluster_id, body.identity, actor=actor)
    return schemas.Named(identity=body.identity.strip(), face_ids=ids)


@router.post("/clusters/{cluster_id:int}/merge")
async def merge_clusters(cluster_id: ClusterId, body: schemas.MergeBody, state: State, gallery: GalleryDep,
                         actor: Actor, api: ApiPath) -> schemas.Cluster:
    """The other cluster's faces join this one."""
    if body.cluster_id == cluster_id:
        raise ApiError(422, "validation_error", "a cluster cannot be merged into itself")
    await run_cpu(state, gallery.photos.merge_clusters, cluster_id, body.cluster_id, actor=actor)
    return cluster_out(await run_cpu(state, lambda: gallery.photos.cluster(cluster_id, limit=1000)), api)


@router.get("/clusters/{cluster_id:int}/export", response_class=StreamingResponse,
            responses={200: {"content": {"application/zip": {}},
                             "description": "cluster.json, and per face its record, source crop and chip"}})
async def export_cluster(cluster_id: ClusterId, state: State, gallery: GalleryDep, actor: Actor) -> StreamingResponse:
    """Subject access for a person nobody has named: everything stored about the cluster's faces, as a zip."""
    record = await run_cpu(state, gallery.photos.cluster, cluster_id)
    await run_cpu(state, lambda: gallery.record_audit("export", actor=actor, face_ids=record.face_ids,
                                                      cluster=cluster_id))
    return subject_access.zip_response(transfer.export_faces(gallery, record.face_ids), "cluster.json", {
        "cluster_id": cluster_id, "photos": record.photos, "gallery_model": gallery.model_version},
        f"cluster-{cluster_id}-export.zip")


@router.delete("/clusters/{cluster_id:int}")
async def delete_cluster(cluster_id: ClusterId, state: State, gallery: GalleryDep, actor: Actor) -> schemas.Deleted:
    """Erases the cluster's faces (their photos stay, without them), as face deletion does."""
    n = await run_cpu(state, gallery.photos.delete_cluster, cluster_id, actor=actor)
    return schemas.Deleted(cluster_id=cluster_id, faces_deleted=n)


@router.post("/clusters/rebuild", status_code=202)
async def rebuild_clusters(
    state: State, pipeline: Pipeline, gallery: GalleryDep, actor: Actor, collection: CollectionName,
    album: Annotated[str | None, Query(max_length=128, description="only this album's unnamed faces")] = None,
) -> schemas.ClusterJob:
    """Starts grouping the unnamed faces again from scratch (Chinese whispers on their k-NN graph) in the
    background; follow it with GET /v1/clusters/rebuild. 409 while one runs."""
    running = state.cluster_threads.get(collection)
    if running is not None and running.is_alive():
        raise ApiError(409, "conflict", "a regrouping is already running; follow it with GET .../clusters/rebuild")
    t = photos.cluster_threshold(pipeline.calibration)
    album = None if album is None else album.strip()
    job: dict[str, Any] = {"state": "running", "stage": "starting", "faces": 0, "clusters": None, "album": album,
                           "threshold": t, "started_at": time.time(), "finished_at": None, "error": None}
    state.cluster_jobs[collection] = job

    def run() -> None:
        def progress(stage: str, faces: int) -> None:
            job.update(stage=stage, faces=faces)

        try:
            out = gallery.photos.recluster(t, album=album, actor=actor, progress=progress)
            job.update(state="done", stage="done", faces=out["faces"], clusters=out["clusters"])
        except Exception as e:  # reported to whoever follows the job
            log.exception("regrouping the unnamed faces failed")
            job.update(state="failed", error=str(e))
        job["finished_at"] = time.time()

    thread = state.cluster_threads[collection] = threading.Thread(target=run, name="recluster", daemon=True)
    thread.start()
    return schemas.ClusterJob(**job)


@router.get("/clusters/rebuild")
async def rebuild_status(state: State, collection: CollectionName) -> schemas.ClusterJob:
    """The collection's last regrouping in this process: idle, running (with its stage), done (with counts) or
    failed."""
    return schemas.ClusterJob(**state.cluster_jobs.get(collection, {"state": "idle"}))


@router.post("/faces/{face_id}/cluster", tags=["faces"])
async def move_face(face_id: Annotated[int, Path(ge=1, le=2**63 - 1)], body: schemas.ClusterBody, state: State,
                    gallery: GalleryDep, actor: Actor, api: ApiPath) -> schemas.Cluster:
    """Moves an unnamed face into another cluster."""
    await run_cpu(state, gallery.photos.move_face, face_id, body.cluster_id, actor=actor)
    return cluster_out(await run_cpu(state, gallery.photos.cluster, body.cluster_id), api)


@router.post("/faces/{face_id}/name", tags=["faces"])
async def name_face(face_id: Annotated[int, Path(ge=1, le=2**63 - 1)], body: schemas.NameBody, state: State,
                    gallery: GalleryDep, actor: Actor) -> schemas.Named:
    """One unnamed face becomes the identity's (409 if it already belongs to one)."""
    if "/" in body.identity:
        raise ApiError(422, "invalid_identity", SLASH_IN_IDENTITY)
    await run_cpu(state, gallery.photos.name_face, face_id, body.identity, actor=actor)
    return schemas.Named(identity=body.identity.strip(), face_ids=[face_id])
