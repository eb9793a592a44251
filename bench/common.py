"""What every bench records beside its figures: the commit it ran, the machine, the math libraries' threads."""

from __future__ import annotations

import io
import os
import platform
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model.train.provenance import command, git_commit  # noqa: E402, F401 (what every bench records)

ROOT = Path(__file__).resolve().parents[1]
# the address benches give Starlette's TestClient: open mode (no API key) answers only requests addressed to this
# machine, and TestClient's own "testserver" is not one
LOCAL = "http://127.0.0.1"


def blas_info() -> list[dict[str, Any]]:
    """The BLAS/OpenMP libraries numpy and faiss loaded, their kernels and thread counts (threadpoolctl)."""
    from threadpoolctl import threadpool_info

    keep = ("user_api", "internal_api", "version", "architecture", "num_threads", "prefix")
    return [{k: lib.get(k) for k in keep} for lib in threadpool_info()]


def machine() -> dict[str, Any]:
    return {
        "git_commit": git_commit(),
        "cores": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }


def celeba_people() -> tuple[list[str], list[str]]:
    """The held-out CelebA people the checks measure on (bench/celeba_heldout.txt, kept out of training by identity,
    less the calibration strangers), and the calibration strangers (bench/celeba_calibration.txt, never reported):
    each less the people who are someone the encoder trained on under another name
    (bench/celeba_heldout_trained.txt, written by bench/overlap.py), as the calibration has them. In file order."""
    from model.train.train import read_people

    here = Path(__file__).resolve().parent
    calibration = read_people(here / "celeba_calibration.txt")
    trained = set(read_people(here / "celeba_heldout_trained.txt"))
    checks = [p for p in read_people(here / "celeba_heldout.txt") if p not in trained and p not in calibration]
    return checks, [p for p in calibration if p not in trained]


def group_photo(paths: list[Path]) -> bytes:
    """Photos side by side on a grey canvas (20 px apart), as one JPEG: a group photo of their people."""
    from PIL import Image

    imgs = [Image.open(p).convert("RGB") for p in paths]
    canvas = Image.new("RGB", (sum(i.width for i in imgs) + 20 * (len(imgs) + 1), max(i.height for i in imgs) + 40),
                       (120, 120, 120))
    x = 20
    for i in imgs:
        canvas.paste(i, (x, 20))
        x += i.width + 20
    buf = io.BytesIO()
    canvas.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def report(figures: dict[str, Any], json_path: Path | None, digits: int = 2) -> None:
    """Print the figures with the machine's facts, and write them as JSON where asked."""
    import json

    figures.update(machine())
    figures["command"] = command()
    width = max(map(len, figures)) + 2
    for k, v in figures.items():
        print(f"{k:{width}s} {v:.{digits}f}" if isinstance(v, float) else f"{k:{width}s} {v}")
    if json_path:
        json_path.write_text(json.dumps(figures, indent=2))
