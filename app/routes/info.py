"""Service and model card."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app import __version__
from app.auth import OPEN, Principal
from app.deps import State
from facesearch import schemas

router = APIRouter(tags=["info"])

CARD_FIELDS = ("model_version", "architecture", "input", "embedding_size", "distance", "thresholds", "evaluation",
               "training", "licenses")


@router.get("/info")
def info(state: State, request: Request) -> schemas.Info:
    """The service, its model card, the default collection's gallery, and the caller's key (role, collections)."""
    model = None
    if state.pipeline is not None:
        card = state.pipeline.card
        model = {k: card[k] for k in CARD_FIELDS if k in card}
        model["search_fpir"] = state.settings.search_fpir
    caller: Principal = getattr(request.state, "principal", OPEN)
    gallery = None
    if state.gallery is not None and caller.may_use("default"):
        stats = state.gallery.stats()
        gallery = {k: stats[k] for k in ("identities", "faces", "photos", "unnamed_faces", "index_kind", "indexed",
                                         "spaces", "applied_change", "store", "generation", "reembed")}
        gallery["model_version"] = stats["stored_model_version"]
    return schemas.Info(service="facesearch", version=__version__, auth=bool(state.settings.api_keys),
                        model=model, gallery=gallery, caller=schemas.Caller(
                            key_id=caller.id, role=caller.role, collections=list(caller.collections)))
