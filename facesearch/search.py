"""`facesearch search PHOTO...`: who in the gallery each face of each photo is (``match`` or ``unknown``).

In-process on the gallery the service would open (FACESEARCH_* settings, or --data-dir), or against a running
server (--url, --api-key). One line per face: ``PHOTO  match|unknown  IDENTITY  distance D  box x1,y1,x2,y2``;
--json prints the service's own answer per photo. Exit status: 0, 1 if a photo could not be read, 2 on usage
errors (no such file, no gallery, server unreachable).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from facesearch.cli import missing_files
from facesearch.client import ApiError, FaceSearch, Routes, Unreachable


def face_line(photo: Path, face: dict[str, Any]) -> str:
    who = face["identity"] if face["decision"] == "match" else "-"
    d = face.get("distance")
    box = ",".join(f"{x:.0f}" for x in face["box"])
    return f"{photo}\t{face['decision']}\t{who}\t" + (f"distance {d:.3f}" if d is not None else "empty gallery") + \
        f"\tbox {box}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="facesearch search", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("photos", nargs="+", type=Path)
    p.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000 (default: in-process)")
    p.add_argument("--api-key")
    p.add_argument("--collection", help="work in this collection (default: default)")
    p.add_argument("--data-dir", type=Path, help="in-process: the gallery's folder (default: FACESEARCH_DATA_DIR)")
    p.add_argument("-k", type=int, default=5, help="candidate identities per face")
    p.add_argument("--threshold", type=float, help="distance threshold (default: from FACESEARCH_SEARCH_FPIR)")
    p.add_argument("--json", action="store_true", help="print the service's answer per photo as JSON")
    a = p.parse_args(argv)
    if missing_files("search", a.photos):
        return 2
    try:
        answers = remote_search(a) if a.url else local_search(a)
    except (Unreachable, NoGallery) as e:
        print(f"facesearch search: {e}", file=sys.stderr)
        return 2
    failed = 0
    for photo, status, body in answers:
        if status != 200:
            failed += 1
            print(f"facesearch search: {photo}: {body.get('detail')}", file=sys.stderr)
        elif a.json:
            print(json.dumps({"photo": str(photo), **body}))
        elif not body["faces"]:
            print(f"{photo}\tno face")
        else:
            for face in body["faces"]:
                print(face_line(photo, face))
    return 1 if failed else 0


class NoGallery(Exception):
    pass


def remote_search(a: argparse.Namespace) -> list[tuple[Path, int, dict[str, Any]]]:
    out: list[tuple[Path, int, dict[str, Any]]] = []
    with FaceSearch(a.url, a.api_key, collection=a.collection) as fs:
        for photo in a.photos:
            try:
                out.append((photo, 200, fs.send(Routes.search(photo, k=a.k, threshold=a.threshold)).model_dump()))
            except ApiError as e:
                out.append((photo, e.status, {"detail": e.detail}))
    return out


def local_search(a: argparse.Namespace) -> list[tuple[Path, int, dict[str, Any]]]:
    from facesearch import decisions
    from facesearch.compose import open_pipeline, open_settings_gallery
    from facesearch.settings import Settings
    from index.config import gallery_exists
    from model.errors import ImageError

    s = Settings(**({"data_dir": a.data_dir} if a.data_dir else {}))
    if not gallery_exists(s.data_dir, s.database_url):
        raise NoGallery(f"no gallery in {s.data_dir} (enroll first, or set --data-dir / FACESEARCH_DATA_DIR)")
    pipeline = open_pipeline(s)
    gallery = open_settings_gallery(s, dim=pipeline.dim, model_version=pipeline.model_version,
                                    collection=a.collection)
    out: list[tuple[Path, int, dict[str, Any]]] = []
    try:
        for photo in a.photos:
            try:
                analysis = pipeline.analyze(photo.read_bytes(), max_faces=s.max_faces)
            except ImageError as e:
                out.append((photo, 400, {"detail": str(e)}))
                continue
            thr, found = decisions.search_gallery(gallery, pipeline.calibration, analysis.faces, s.search_fpir,
                                                  a.threshold, a.k)
            faces = [{"box": [float(x) for x in d.face.face.box], "decision": "match" if d.match else "unknown",
                      "identity": d.match.identity if d.match else None,
                      "distance": d.best.distance if d.best else None,
                      "candidates": [{"identity": h.identity, "distance": h.distance} for h in d.candidates]}
                     for d in found]
            out.append((photo, 200, {"faces": faces, "threshold": {"distance": thr.distance, "source": thr.source}}))
    finally:
        gallery.close()
        pipeline.close()
    return out
