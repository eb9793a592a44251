"""Helpers the test modules share (no test module imports another): multipart files for the TestClient, group photos
made of LFW photos, API keys from `facesearch keys create`, and `facesearch serve` run to its end."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from facesearch import cli

EXE = shutil.which("facesearch", path=str(Path(sys.executable).parent)) or "facesearch"


def files(*blobs: bytes, field: str = "image") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [(field, (f"photo{i}.jpg", b, "image/jpeg")) for i, b in enumerate(blobs)]


def two_face_photo(a: bytes, b: bytes) -> bytes:
    ia, ib = Image.open(io.BytesIO(a)).convert("RGB"), Image.open(io.BytesIO(b)).convert("RGB")
    canvas = Image.new("RGB", (ia.width + ib.width + 60, max(ia.height, ib.height) + 40), (120, 120, 120))
    canvas.paste(ia, (20, 20))
    canvas.paste(ib, (40 + ia.width, 20))
    buf = io.BytesIO()
    canvas.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def group(*photos: bytes) -> bytes:
    """Photos side by side on one canvas: one picture of several people."""
    out = photos[0]
    for p in photos[1:]:
        out = two_face_photo(out, p)
    return out


def new_key(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, str]:
    """(key, id) from `facesearch keys create`."""
    assert cli.main(["keys", *args]) == 0
    key, kid, *_ = capsys.readouterr().out.strip().split("\t")
    return key, kid


def serve(data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`facesearch serve` run until it exits (a start-up that must fail)."""
    from tests.conftest import free_port

    full = {**os.environ, "FACESEARCH_DATA_DIR": str(data_dir), "FACESEARCH_PORT": str(free_port()), **env}
    return subprocess.run([EXE, "serve"], env=full, capture_output=True, text=True, timeout=120)


def assert_refused(r: subprocess.CompletedProcess[str], needle: str) -> None:
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    lines = [ln for ln in out.splitlines() if "FaceSearch cannot start" in ln]
    assert lines and any(needle in ln for ln in lines), out
    assert "Traceback" not in out, out
