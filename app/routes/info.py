"""Service and model card."""

from __future__ import annotations

from fastapi import APIRouter

from app import __version__, schemas
from app.deps import State

router = APIRouter(tags=["info"])

CARD_FIELDS = ("model_version", "architecture", "input", "embedding_size", "distance", "thresholds", "evaluation",
               "training", "licenses")


@router.get("/info")
def info(state: State) -> schemas.Info:
    model = None
    if state.pipeline is not None:
        card = state.pipeline.card
        model = {k: card[k] for k in CARD_FIELDS if k in card}
        model["search_fpir"] = state.settings.search_fpir
    gallery = None
    if state.gallery is not None:
        identities, faces = state.gallery.count()
        gallery = {"identities": identities, "faces": faces, "index_kind": state.gallery.index.kind,
                   "indexed": state.gallery.index.live, "applied_change": state.gallery.applied_change,
                   "store": "postgresql" if state.gallery.store.shared else "sqlite",
                   "model_version": state.gallery.stored_model()[0], "generation": state.gallery.generation,
                   "reembed": state.gallery.reembed_status()}
    return schemas.Info(service="facesearch", version=__version__, auth=bool(state.settings.api_keys),
                        model=model, gallery=gallery)
