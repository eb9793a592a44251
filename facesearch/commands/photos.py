"""`facesearch photos index DIR [--album A]`: index every photo under a folder as ``POST /v1/photos`` would.

In-process (opens the gallery under --data-dir with the shipped encoder; photos analysed in parallel by the photo
workers, --workers at a time) or against a running server (--url, --api-key; --workers requests at a time).
Resumable: a photo's key is its content's SHA-256 (the first 32 hex digits; its path is kept in the photo's
metadata), and photos already indexed are skipped, so running it again after an interruption indexes only the rest.
Prints a summary: photos indexed, faces, photos without a face, skipped, errors, and the rates.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tqdm import tqdm

from facesearch.client import ApiError, Conflict, NotFound, Routes, Unreachable
from facesearch.commands import client_options, connect
from facesearch.settings import Settings

log = logging.getLogger(__name__)
SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".pgm"}
# one photo's outcome: ("indexed", faces) | ("no_face", 0) | ("skipped", 0) | ("error", message)
Outcome = tuple[str, Any]


def library(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)


def photo_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="facesearch photos", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    index = sub.add_parser("index", help="index every photo under a folder")
    index.add_argument("dir", type=Path)
    index.add_argument("--album", default="", help="file the photos under this album")
    client_options(index)
    index.add_argument("--workers", type=int, help="photos at a time (default: the service's FACESEARCH_WORKERS "
                                                   "in-process, 8 against a server)")
    a = p.parse_args(argv)
    if not a.dir.is_dir():
        print(f"facesearch photos: {a.dir} is not a folder", file=sys.stderr)
        return 2
    if a.album != a.album.strip() or (a.album and not a.album.isprintable()) or len(a.album) > 128:
        print("facesearch photos: --album must be up to 128 printable characters", file=sys.stderr)
        return 2
    paths = library(a.dir)
    if not paths:
        print(f"facesearch photos: no photos under {a.dir}", file=sys.stderr)
        return 2
    try:
        counts = index_library(a, paths)
    except (Unreachable, ApiError) as e:  # no server there, or one that is not ready
        print(f"facesearch photos: {e}", file=sys.stderr)
        return 2
    print(json.dumps(counts))
    return 1 if counts["errors"] else 0


def run(paths: list[Path], root: Path, workers: int, one: Callable[[Path, bytes, str, dict[str, Any]], Outcome]
        ) -> dict[str, Any]:
    """Index ``paths`` ``workers`` at a time with ``one(path, data, key, metadata)``; the summary."""
    counts: dict[str, Any] = {"photos": 0, "faces": 0, "no_face": 0, "skipped": 0, "errors": 0}

    def task(path: Path) -> Outcome:
        try:
            data = path.read_bytes()
        except OSError as e:
            return "error", str(e)
        return one(path, data, photo_key(data), {"path": str(path.relative_to(root))})

    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool, tqdm(total=len(paths), desc="index photos") as bar:
        for path, (outcome, value) in zip(paths, pool.map(task, paths), strict=True):
            if outcome == "indexed":
                counts["photos"] += 1
                counts["faces"] += value
            elif outcome == "error":
                counts["errors"] += 1
                log.warning("%s: %s", path, value)
            else:
                counts[outcome] += 1
                counts["photos"] += outcome == "no_face"
            bar.update()
            bar.set_postfix(faces=counts["faces"], errors=counts["errors"])
    seconds = time.perf_counter() - t
    counts.update(seconds=round(seconds, 1), photos_per_s=round(counts["photos"] / seconds, 2),
                  faces_per_s=round(counts["faces"] / seconds, 2))
    return counts


def index_library(a: argparse.Namespace, paths: list[Path]) -> dict[str, Any]:
    def one(path: Path, data: bytes, key: str, metadata: dict[str, Any]) -> Outcome:
        try:
            fs.send(Routes.photo(key))
            return "skipped", 0
        except NotFound:
            pass
        except ApiError as e:
            return "error", f"{e.status} {e.detail}"
        try:
            faces = fs.send(Routes.index_photo(data, photo_id=key, album=a.album, metadata=metadata)).faces
        except Conflict:  # indexed meanwhile (another run)
            return "skipped", 0
        except ApiError as e:
            return "error", f"{e.status} {e.detail}"
        return ("indexed", len(faces)) if faces else ("no_face", 0)

    with connect(a, gallery="create") as fs:
        fs.send(Routes.live())  # Unreachable: one line, exit 2
        return run(paths, a.dir, a.workers or (8 if a.url else Settings().workers), one)
