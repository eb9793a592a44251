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

from facesearch.client import ApiError, FaceSearch, NotFound, Routes, Unreachable

log = logging.getLogger(__name__)
SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".pgm"}


def photos(root: Path) -> list[tuple[str, Path]]:
    return sorted((p.parent.name, p) for p in root.glob("*/*") if p.suffix.lower() in SUFFIXES)


def enrolled_hashes(fs: FaceSearch, identity: str) -> set[str]:
    try:
        faces = fs.send(Routes.identity(identity, limit=1000)).face_list.items
    except NotFound:
        return set()
    return {f.sha256 for f in faces if f.sha256}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="facesearch enroll", description=__doc__)
    p.add_argument("dir", type=Path)
    p.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000 (default: in-process)")
    p.add_argument("--api-key")
    p.add_argument("--collection", help="work in this collection (default: default)")
    p.add_argument("--data-dir", type=Path, help="in-process: gallery folder (default: FACESEARCH_DATA_DIR)")
    p.add_argument("--limit-per-identity", type=int, default=0, help="enroll at most this many photos each")
    a = p.parse_args(argv)
    if not a.dir.is_dir():
        print(f"facesearch enroll: {a.dir} is not a folder (expected one sub-folder of photos per identity)",
              file=sys.stderr)
        return 2
    items = photos(a.dir)
    if not items:
        print(f"facesearch enroll: no photos in {a.dir} (expected {a.dir}/<identity>/<photo>)", file=sys.stderr)
        return 2
    if a.limit_per_identity:
        seen: dict[str, int] = {}
        kept = []
        for ident, path in items:
            seen[ident] = seen.get(ident, 0) + 1
            if seen[ident] <= a.limit_per_identity:
                kept.append((ident, path))
        items = kept
    counts = {"enrolled": 0, "skipped": 0, "no_face": 0, "failed": 0}
    no_face: list[str] = []
    warned: list[str] = []  # in-process: the enrollment warnings the API would answer
    if a.url:
        fs = FaceSearch(a.url, a.api_key, collection=a.collection)
        known: dict[str, set[str]] = {}
        try:
            fs.send(Routes.live())  # a server that is not there: one line before any progress bar
            for ident, path in tqdm(items, desc="enroll"):
                data = path.read_bytes()
                if ident not in known:
                    known[ident] = enrolled_hashes(fs, ident)
                if hashlib.sha256(data).hexdigest() in known[ident]:
                    counts["skipped"] += 1
                    continue
                try:
                    fs.send(Routes.enroll(ident, data, face="largest"))
                    counts["enrolled"] += 1
                except ApiError as e:
                    if e.code == "no_face":
                        counts["no_face"] += 1
                        no_face.append(str(path))
                    else:
                        counts["failed"] += 1
                        log.warning("%s: %s %s", path, e.status, e.detail)
        except Unreachable as e:
            print(f"facesearch enroll: {e}", file=sys.stderr)
            print(json.dumps(counts))
            return 2
        finally:
            fs.close()
    else:
        from facesearch import enrollment
        from facesearch.compose import open_pipeline, open_settings_gallery
        from facesearch.settings import Settings
        from model.errors import ImageError

        s = Settings(**({"data_dir": a.data_dir} if a.data_dir else {}))
        pipeline = open_pipeline(s)
        gallery = open_settings_gallery(s, dim=pipeline.dim, model_version=pipeline.model_version,
                                        collection=a.collection)

        def prepare(item: tuple[str, Path]) -> tuple[str, str, Path, Any]:
            """Read, hash, detect and embed in a worker thread; the gallery writes stay in this thread."""
            ident, path = item
            data = path.read_bytes()
            sha = enrollment.sha256_of(data)
            if any(f.identity == ident for f in gallery.faces_with_sha256(sha)):
                return "skipped", sha, path, None
            try:  # as the API enrolls: the source crop is kept, so a later encoder can re-embed the face
                return "analyzed", sha, path, pipeline.analyze(data, max_faces=1, sources=True)
            except ImageError as e:
                return "failed", sha, path, e

        added: set[tuple[str, str]] = set()  # (identity, sha256) enrolled by this run
        try:
            with ThreadPoolExecutor(s.workers) as pool:
                for (ident, _), (kind, sha, path, result) in tqdm(
                        zip(items, pool.map(prepare, items), strict=True), total=len(items), desc="enroll"):
                    if kind == "skipped" or (ident, sha) in added:
                        counts["skipped"] += 1
                    elif kind == "failed":
                        counts["failed"] += 1
                        log.warning("%s: %s", path, result)
                    elif not result.faces:
                        counts["no_face"] += 1
                        no_face.append(str(path))
                    else:
                        done = enrollment.enroll(gallery, ident, enrollment.choose_faces([result], "largest"),
                                                 [sha], actor="cli")
                        warned += [f"{path}: {w}" for w in done[0].warnings]
                        added.add((ident, sha))
                        counts["enrolled"] += 1
        finally:
            gallery.close()
            pipeline.close()
    print(json.dumps(counts))
    for path_str in no_face[:50]:
        print(f"no face: {path_str}")
    for line in warned[:50]:
        print(f"warning: {line}")
    return 0 if counts["failed"] == 0 else 1
