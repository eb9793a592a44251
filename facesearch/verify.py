"""`facesearch verify A B` (or `facesearch verify A --identity NAME`): are these the same person?

Prints ``same person`` or ``different people`` with the distance and the threshold it was decided at (the
shipped encoder's calibrated verification threshold unless --threshold), in-process or against a running server
(--url). The largest face of each photo is compared. Exit status: 0 same person, 1 different people, 2 on errors
(no such file, no face, unknown identity, server unreachable), so scripts can branch on it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from facesearch.cli import missing_files
from facesearch.client import ApiError, FaceSearch, Routes, Unreachable


class Refused(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="facesearch verify", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("photo", type=Path)
    p.add_argument("other", type=Path, nargs="?", help="the second photo (or give --identity)")
    p.add_argument("--identity", help="compare with this enrolled identity's faces instead of a second photo")
    p.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000 (default: in-process)")
    p.add_argument("--api-key")
    p.add_argument("--collection", help="work in this collection (default: default)")
    p.add_argument("--data-dir", type=Path, help="in-process, with --identity: the gallery's folder")
    p.add_argument("--threshold", type=float, help="distance threshold (default: the calibrated one)")
    p.add_argument("--json", action="store_true", help="print the answer as JSON")
    a = p.parse_args(argv)
    if (a.other is None) == (a.identity is None):
        p.error("give a second photo or --identity, not both")
    if missing_files("verify", (a.photo, a.other)):
        return 2
    try:
        answer = remote_verify(a) if a.url else local_verify(a)
    except (Unreachable, Refused) as e:
        print(f"facesearch verify: {e}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(answer))
    else:
        verdict = "same person" if answer["same_person"] else "different people"
        print(f"{verdict}\tdistance {answer['distance']:.3f}\tthreshold {answer['threshold']['distance']:.3f}")
    return 0 if answer["same_person"] else 1


def remote_verify(a: argparse.Namespace) -> dict[str, Any]:
    with FaceSearch(a.url, a.api_key, collection=a.collection) as fs:
        try:
            return fs.send(Routes.verify(a.photo, a.other, identity=a.identity, threshold=a.threshold)).model_dump()
        except ApiError as e:
            raise Refused(str(e.detail)) from e


def local_verify(a: argparse.Namespace) -> dict[str, Any]:
    from facesearch import decisions
    from facesearch.compose import open_pipeline, open_settings_gallery
    from facesearch.settings import Settings
    from index.config import gallery_exists
    from index.errors import NotFound
    from model.errors import ImageError

    s = Settings(**({"data_dir": a.data_dir} if a.data_dir else {}))
    if a.identity is not None and not gallery_exists(s.data_dir, s.database_url):
        raise Refused(f"no gallery in {s.data_dir} (set --data-dir or FACESEARCH_DATA_DIR)")
    pipeline = open_pipeline(s)
    try:
        def embedding(photo: Path) -> Any:
            try:
                analysis = pipeline.analyze(photo.read_bytes(), max_faces=1)
            except ImageError as e:
                raise Refused(f"{photo}: {e}") from e
            if not analysis.faces:
                raise Refused(f"{photo}: no face found in the image")
            return analysis.faces[0].embedding

        thr = decisions.verify_threshold(pipeline.calibration, a.threshold)
        e = embedding(a.photo)
        if a.identity is None:
            verdict = decisions.verify_pair(e, embedding(a.other), thr)
        else:
            gallery = open_settings_gallery(s, dim=pipeline.dim, model_version=pipeline.model_version,
                                            collection=a.collection)
            try:
                verdict = decisions.verify_against(gallery, a.identity, e, thr)
            except NotFound as err:
                raise Refused(str(err)) from err
            finally:
                gallery.close()
    finally:
        pipeline.close()
    return {"same_person": verdict.same_person, "distance": verdict.distance,
            "threshold": {"distance": thr.distance, "source": thr.source}, "identity": a.identity,
            "matched_face_id": verdict.matched_face_id}
