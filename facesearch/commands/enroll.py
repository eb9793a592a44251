"""`facesearch enroll DIR`: bulk-enroll an identity-per-folder tree (the LFW layout).

In-process (opens the gallery under --data-dir with the shipped encoder) or against a running server
(--url, --api-key). Resumable: photos whose SHA-256 is already enrolled for that identity are skipped.
Photos with several faces enroll the largest. Prints a summary of photos without a face.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tqdm import tqdm

from facesearch.client import ApiError, Client, NotFound, Routes, Unreachable
from facesearch.commands import client_options, connect

log = logging.getLogger(__name__)
SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".pgm"}
PAGE = 1000
# one photo's outcome: ("enrolled", warnings) | ("skipped", None) | ("no_face", None) | ("failed", message)
Outcome = tuple[str, Path, Any]


def photos(root: Path) -> list[tuple[str, Path]]:
    return sorted((p.parent.name, p) for p in root.glob("*/*") if p.suffix.lower() in SUFFIXES)


def enrolled_hashes(fs: Client, identity: str) -> set[str]:
    """The SHA-256 of every photo enrolled for ``identity`` (none when it does not exist)."""
    out: set[str] = set()
    offset = 0
    while True:
        try:
            page = fs.send(Routes.identity(identity, limit=PAGE, offset=offset)).face_list
        except NotFound:
            return out
        out |= {f.sha256 for f in page.items if f.sha256}
        offset += len(page.items)
        if not page.items or offset >= page.total:
            return out


def enroll_identity(fs: Client, identity: str, paths: list[Path]) -> list[Outcome]:
    """One identity's photos in order, each skipped when a photo of the same content is enrolled for it already."""
    known = enrolled_hashes(fs, identity)
    out: list[Outcome] = []
    for path in paths:
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        if sha in known:
            out.append(("skipped", path, None))
            continue
        try:
            answer = fs.send(Routes.enroll(identity, data, face="largest"))
        except ApiError as e:
            out.append(("no_face", path, None) if e.code == "no_face" else ("failed", path, f"{e.status} {e.detail}"))
            continue
        known.add(sha)
        out.append(("enrolled", path, answer.faces[0].warnings))
    return out


def enroll_all(fs: Client, people: dict[str, list[Path]], workers: int) -> tuple[dict[str, int], list[str], list[str]]:
    """Every identity's photos, ``workers`` identities at a time: the counts, the photos without a face and the
    enrollment warnings."""
    counts = {"enrolled": 0, "skipped": 0, "no_face": 0, "failed": 0}
    no_face: list[str] = []
    warned: list[str] = []
    with ThreadPoolExecutor(max(1, workers)) as pool, tqdm(total=sum(map(len, people.values())), desc="enroll") as bar:
        for outcomes in pool.map(lambda person: enroll_identity(fs, *person), people.items()):
            for kind, path, value in outcomes:
                counts[kind] += 1
                if kind == "no_face":
                    no_face.append(str(path))
                elif kind == "failed":
                    log.warning("%s: %s", path, value)
                elif kind == "enrolled":
                    warned += [f"{path}: {w}" for w in value]
            bar.update(len(outcomes))
    return counts, no_face, warned

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="facesearch enroll", description=__doc__)
    p.add_argument("dir", type=Path)
    client_options(p)
    p.add_argument("--limit-per-identity", type=int, default=0, help="enroll at most this many photos each")
    p.add_argument("--workers", type=int, default=4, help="identities enrolled at a time")
    a = p.parse_args(argv)
    if not a.dir.is_dir():
        print(f"facesearch enroll: {a.dir} is not a folder (expected one sub-folder of photos per identity)",
              file=sys.stderr)
        return 2
    items = photos(a.dir)
    if not items:
        print(f"facesearch enroll: no photos in {a.dir} (expected {a.dir}/<identity>/<photo>)", file=sys.stderr)
        return 2
    people: dict[str, list[Path]] = {}
    for ident, path in items:
        kept = people.setdefault(ident, [])
        if not a.limit_per_identity or len(kept) < a.limit_per_identity:
            kept.append(path)
    try:
        with connect(a, gallery="create") as fs:
            fs.send(Routes.live())  # a server that is not there: one line before any progress bar
            counts, no_face, warned = enroll_all(fs, people, a.workers)
    except Unreachable as e:
        print(f"facesearch enroll: {e}", file=sys.stderr)
        return 2
    print(json.dumps(counts))
    for path_str in no_face[:50]:
        print(f"no face: {path_str}")
    for line in warned[:50]:
        print(f"warning: {line}")
    return 0 if counts["failed"] == 0 else 1
