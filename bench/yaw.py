"""Where the side-view warning (facesearch/decisions.py MAX_YAW) sits for the detector that serves: the yaw estimated
from its five points on CFP's frontal and profile photos of people 251-400 (splits 6-8; 1-5 are never read).

    python bench/yaw.py --cfp CFP_TREE [--detector yunet] [--json PATH]

For each candidate limit: the share of profile photos warned about and the share of frontal photos warned about.
The limit chosen is the smallest that warns about no more than 1% of frontal photos.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command, report  # noqa: E402

from model.faces import FaceDetector, yaw_estimate  # noqa: E402
from model.train.cfp import Cfp  # noqa: E402

LIMITS = (20, 25, 30, 35, 40, 45, 50)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfp", type=Path, required=True)
    p.add_argument("--detector", default="yunet")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    tree = Cfp(a.cfp)
    detector = FaceDetector(a.detector)
    yaw: dict[str, list[float]] = {"frontal": [], "profile": []}
    for person in tqdm(tree.people([6, 7, 8]), desc="people"):
        for pose, n in (("frontal", 10), ("profile", 4)):
            for k in range(1, n + 1):
                rgb = np.asarray(Image.open(a.cfp / tree.photo(person, pose, k)).convert("RGB"))
                faces = detector.detect(rgb)
                if faces:
                    yaw[pose].append(abs(yaw_estimate(faces[0].landmarks)))
    front, side = np.array(yaw["frontal"]), np.array(yaw["profile"])
    r: dict[str, Any] = {"detector": a.detector, "frontal_photos": len(front), "profile_photos": len(side),
                         "command": command()}
    for t in LIMITS:
        r[f"limit_{t}"] = {"profiles_warned": round(float((side > t).mean()), 4),
                           "frontals_warned": round(float((front > t).mean()), 4)}
    ok = [t for t in LIMITS if (front > t).mean() <= 0.01]
    r["chosen"] = min(ok) if ok else None
    report(r, a.json, digits=4)


if __name__ == "__main__":
    main()
