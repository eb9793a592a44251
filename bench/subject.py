"""How sure the largest face is the subject: LFW photos with several faces, the subject being the central one (LFW's
convention), by how much larger the largest face is than the next.

    python bench/subject.py [--json PATH]

People of LFW's folds 1-2 are left out (held out for the encoder's figures). For each photo where the detector finds
two or more faces: the ratio of the largest face's size (shorter box side) to the second's, and whether the
largest is the central one. For each candidate ratio R: the share of multi-face photos whose largest face is at
least R times the next (enrolled without asking) and, among those, the share whose largest face is not the
subject (a wrong person enrolled). The service's rule (facesearch/enrollment.py SUBJECT_RATIO) is the smallest R
with no wrong subject among these photos.
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

from model.faces import FaceDetector  # noqa: E402
from model.train.lfw import people_in_folds, read_pairs  # noqa: E402
from model.train.subject import central_face  # noqa: E402

LFW = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "lfw"
RATIOS = (1.0, 1.1, 1.2, 1.3, 1.5, 1.75, 2.0, 2.5, 3.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--detector", default="yunet")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    held = people_in_folds(read_pairs(LFW / "pairs.txt"), {1, 2})
    files = [f for f in sorted((LFW / "lfw-deepfunneled").glob("*/*.jpg")) if f.parent.name not in held]
    detector = FaceDetector(a.detector)
    ratio, right = [], []
    for f in tqdm(files, desc="detect"):
        rgb = np.asarray(Image.open(f).convert("RGB"))
        faces = detector.detect(rgb)  # largest first
        if len(faces) < 2:
            continue
        ratio.append(faces[0].size / max(faces[1].size, 1e-6))
        right.append(central_face(faces, rgb.shape[1], rgb.shape[0]) is faces[0])
    ratios, ok = np.array(ratio), np.array(right)
    r: dict[str, Any] = {"detector": a.detector, "photos": len(files), "multi_face_photos": len(ratios),
                         "largest_is_subject": int(ok.sum()), "command": command()}
    for t in RATIOS:
        taken = ratios >= t
        r[f"ratio_{t:g}"] = {"enrolled_share": round(float(taken.mean()), 4),
                             "wrong_subject": int((taken & ~ok).sum())}
    report(r, a.json, digits=4)


if __name__ == "__main__":
    main()
