"""`facesearch serve`: uvicorn with one worker (the model is loaded once per process)."""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import logging
from pathlib import Path

import uvicorn

log = logging.getLogger(__name__)
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_malloc_arenas(n: int = 2) -> bool:
    """Cap glibc's malloc at ``n`` arenas before any thread starts.

    glibc gives each new thread its own arena (up to 8 per core); anyio's worker threads come and go, and
    freed memory scattered over many arenas is rarely returned to the system, so a long-running server's
    resident memory creeps up. Two arenas bound that spread (the 10-minute soak measures resident
    memory). A no-op outside glibc."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        return bool(ctypes.CDLL(name).mallopt(M_ARENA_MAX, n))
    except (OSError, AttributeError):
        return False


def main(argv: list[str] | None = None) -> int:
    from facesearch.settings import Settings

    p = argparse.ArgumentParser(prog="facesearch serve", description=__doc__)
    p.add_argument("--host", help="default: FACESEARCH_HOST or 127.0.0.1")
    p.add_argument("--port", type=int, help="default: FACESEARCH_PORT or 8000")
    p.add_argument("--data-dir", type=Path, help="default: FACESEARCH_DATA_DIR or ./data")
    a = p.parse_args(argv)
    overrides = {k: v for k, v in {"host": a.host, "port": a.port, "data_dir": a.data_dir}.items() if v is not None}
    settings = Settings(**overrides)
    limit_malloc_arenas()
    if not settings.api_keys and settings.host not in LOOPBACK:
        log.warning("no FACESEARCH_API_KEYS set: refusing to expose the open API on %s, binding 127.0.0.1",
                    settings.host)
        settings.host = "127.0.0.1"

    def factory():  # noqa: ANN202 (uvicorn calls it)
        from app.main import create_app

        return create_app(settings)

    uvicorn.run(factory, factory=True, host=settings.host, port=settings.port, workers=1,
                log_level="info", timeout_graceful_shutdown=10)
    return 0
