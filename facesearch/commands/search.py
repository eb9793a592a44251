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

from facesearch.client import ApiError, Routes, Unreachable
from facesearch.commands import client_options, connect, missing_files


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
    client_options(p)
    p.add_argument("-k", type=int, default=5, help="candidate identities per face")
    p.add_argument("--threshold", type=float, help="distance threshold (default: from FACESEARCH_SEARCH_FPIR)")
    p.add_argument("--json", action="store_true", help="print the service's answer per photo as JSON")
    a = p.parse_args(argv)
    if missing_files("search", a.photos):
        return 2
    failed = 0
    try:
        with connect(a) as fs:
            for photo in a.photos:
                try:
                    body = fs.send(Routes.search(photo, k=a.k, threshold=a.threshold)).model_dump()
                except ApiError as e:
                    failed += 1
                    print(f"facesearch search: {photo}: {e.detail}", file=sys.stderr)
                    continue
                if a.json:
                    print(json.dumps({"photo": str(photo), **body}))
                elif not body["faces"]:
                    print(f"{photo}\tno face")
                else:
                    for face in body["faces"]:
                        print(face_line(photo, face))
    except Unreachable as e:
        print(f"facesearch search: {e}", file=sys.stderr)
        return 2
    return 1 if failed else 0
