"""Prometheus metrics, one registry per app (so several apps can live in one process, e.g. tests)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("facesearch_requests_total", "HTTP requests", ["route", "method", "status"],
                                registry=self.registry)
        self.latency = Histogram("facesearch_request_seconds", "HTTP request latency", ["route", "method"],
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                                 registry=self.registry)
        self.faces_detected = Counter("facesearch_faces_detected_total", "faces detected in uploads",
                                      registry=self.registry)
        self.batch_size = Histogram("facesearch_embed_batch_size", "faces per encoder batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry)
        self.gallery_faces = Gauge("facesearch_gallery_faces", "faces in the gallery", registry=self.registry)
        self.gallery_identities = Gauge("facesearch_gallery_identities", "identities in the gallery",
                                        registry=self.registry)

    async def middleware(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.requests.labels(path, request.method, str(status)).inc()
            self.latency.labels(path, request.method).observe(time.perf_counter() - start)
