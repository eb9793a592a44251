"""Prometheus metrics, one registry per app (so several apps can live in one process, e.g. tests)."""

from __future__ import annotations

import time
from typing import Any

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
        self.dropped = Counter("facesearch_requests_dropped_total", "requests refused before their work started: "
                               "busy (too many waiting), client_gone (disconnected while waiting)", ["reason"],
                               registry=self.registry)
        self.photo_worker_restarts = Gauge("facesearch_photo_worker_restarts",
                                           "photo workers started again since the service started, each after one "
                                           "had died", registry=self.registry)


class RequestMetrics:
    """ASGI middleware: every HTTP request counted by route, method and status, and timed. Plain ASGI, as
    Starlette's BaseHTTPMiddleware runs each request through a task and a stream of its own."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # unless a response starts

        async def send_noting_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(path, scope["method"], str(status)).inc()
            self.metrics.latency.labels(path, scope["method"]).observe(time.perf_counter() - start)
