"""`facesearch verify A B` (or `facesearch verify A --identity NAME`): are these the same person?

Prints ``same person`` or ``different people`` with the distance and the threshold it was decided at (the
shipped encoder's calibrated verification threshold unless --threshold), in-process or against a running server
(--url). The largest face of each photo is compared. Exit status: 0 same person, 1 different people, 2 on errors
(no such file, no face, unknown identity, server unreachable), so scripts can branch on it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facesearch.client import ApiError, Routes, Unreachable
from facesearch.commands import client_options, connect, missing_files


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="facesearch verify", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("photo", type=Path)
    p.add_argument("other", type=Path, nargs="?", help="the second photo (or give --identity)")
    p.add_argument("--identity", help="compare with this enrolled identity's faces instead of a second photo")
    client_options(p)
    p.add_argument("--threshold", type=float, help="distance threshold (default: the calibrated one)")
    p.add_argument("--json", action="store_true", help="print the answer as JSON")
    a = p.parse_args(argv)
    if (a.other is None) == (a.identity is None):
        p.error("give a second photo or --identity, not both")
    if missing_files("verify", (a.photo, a.other)):
        return 2
    try:  # two photos need no gallery; a photo against an identity needs one that exists
        with connect(a, gallery="existing" if a.identity is not None else None) as fs:
            answer = fs.send(Routes.verify(a.photo, a.other, identity=a.identity, threshold=a.threshold))
    except Unreachable as e:
        print(f"facesearch verify: {e}", file=sys.stderr)
        return 2
    except ApiError as e:
        photo = {"image": a.photo, "image1": a.photo, "image2": a.other}.get(e.extra.get("source", ""))
        print(f"facesearch verify: {f'{photo}: ' if photo else ''}{e.detail}", file=sys.stderr)
        return 2
    if a.json:
        print(answer.model_dump_json())
    else:
        verdict = "same person" if answer.same_person else "different people"
        print(f"{verdict}\tdistance {answer.distance:.3f}\tthreshold {answer.threshold.distance:.3f}")
    return 0 if answer.same_person else 1
