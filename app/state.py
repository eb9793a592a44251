"""What the lifespan loads once and every request shares."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import anyio

from app.auth import KeyRing, RateLimit
from app.metrics import Metrics
from facesearch.settings import Settings
from index.gallery import Gallery
from model.pipeline import FacePipeline


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    pipeline: FacePipeline | None = None
    gallery: Gallery | None = None
    keys: KeyRing = field(default_factory=lambda: KeyRing([]))
    rate_limit: RateLimit | None = None
    limiter: anyio.CapacityLimiter | None = None
    reembed: dict[str, Any] | None = None  # progress of a start-up re-embedding (FACESEARCH_REEMBED=auto)
    cluster_job: dict[str, Any] = field(default_factory=lambda: {"state": "idle"})  # POST /v1/clusters/rebuild
    cluster_thread: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        return self.pipeline is not None and self.gallery is not None
