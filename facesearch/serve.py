"""`facesearch serve`: uvicorn with one worker (the model is loaded once per process)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import uvicorn

log = logging.getLogger(__name__)
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def main(argv: list[str] | None = None) -> int:
    from app.settings import Settings

    p = argparse.ArgumentParser(prog="facesearch serve", description=__doc__)
    p.add_argument("--host", help="default: FACESEARCH_HOST or 127.0.0.1")
    p.add_argument("--port", type=int, help="default: FACESEARCH_PORT or 8000")
    p.add_argument("--data-dir", type=Path, help="default: FACESEARCH_DATA_DIR or ./data")
    a = p.parse_args(argv)
    overrides = {k: v for k, v in {"host": a.host, "port": a.port, "data_dir": a.data_dir}.items() if v is not None}
    settings = Settings(**overrides)
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
