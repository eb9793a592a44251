"""Single faces: thumbnail (the aligned crop) and delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from app.deps import Actor, GalleryDep, State, run_cpu
from facesearch import schemas

router = APIRouter(prefix="/faces", tags=["faces"])
FaceId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.get("/{face_id}/thumbnail", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "the aligned crop"}})
async def thumbnail(face_id: FaceId, state: State, gallery: GalleryDep) -> Response:
    data = await run_cpu(state, gallery.thumbnail, face_id)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.delete("/{face_id}")
async def delete_face(face_id: FaceId, state: State, gallery: GalleryDep, actor: Actor) -> schemas.Deleted:
    """Deletes the face. When this answers, no file of the gallery holds its embedding or crops."""
    identity = await run_cpu(state, gallery.delete_face, face_id, actor=actor)
    return schemas.Deleted(identity=identity, face_id=face_id, faces_deleted=1)
