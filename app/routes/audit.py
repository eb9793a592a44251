"""The audit trail: who enrolled, deleted, renamed, re-embedded or exported what, and when (no face data)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.deps import GalleryDep, State, run_cpu
from facesearch import schemas

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("")
async def audit(
    state: State, gallery: GalleryDep,
    since: Annotated[int, Query(ge=0, le=2**62, description="return lines after this sequence number")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> schemas.AuditLog:
    items = await run_cpu(state, lambda: gallery.audit_log(since=since, limit=limit))
    return schemas.AuditLog(items=[schemas.AuditLine.model_validate(i, from_attributes=True) for i in items],
                            next_since=items[-1].seq if items else since)
