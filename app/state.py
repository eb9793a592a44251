"""What the lifespan loads once and every request shares."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import anyio

from app.auth import KeyRing, RateLimit
from app.metrics import Metrics
from facesearch.settings import Settings
from index.collections import Collections
from index.gallery import Gallery
from model.pipeline import FacePipeline


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    pipeline: FacePipeline | None = None
    gallery: Gallery | None = None  # the default collection's
    collections: Collections | None = None  # every collection's, default included
    keys: KeyRing = field(default_factory=lambda: KeyRing([]))
    rate_limit: RateLimit | None = None
    limiter: anyio.CapacityLimiter | None = None
    reembed: dict[str, Any] | None = None  # progress of a start-up re-embedding (FACESEARCH_REEMBED=auto)
    cluster_jobs: dict[str, dict[str, Any]] = field(default_factory=dict)  # POST .../clusters/rebuild, by collection
    cluster_threads: dict[str, threading.Thread] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.pipeline is not None and self.gallery is not None and self.collections is not None
