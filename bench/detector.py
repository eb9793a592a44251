"""Face detection before and after MTCNN moved to ONNX Runtime + NumPy (model/mtcnn.py): misses and speed, in one run.

    python bench/detector.py [--cfp CFP_TREE] [--lfw-every 7] [--threads 2] [--min-face-size 20] [--json PATH]

Both detectors see the same photos, alternating per photo: facenet-pytorch's MTCNN (what served before; PyTorch,
channels-last networks, as model/faces.py ran it) and ours. A photo is missed when no face scores 0.9 or more (the
service's cut). Photos: every ORL face (92x112 greyscale), every ``--lfw-every``-th LFW photo (250x250), and with
``--cfp`` every frontal and profile photo of CFP people 251-500 (splits 6-10; splits 1-5 are never read). Also the
largest difference between the two detectors' boxes and landmarks, in pixels, where both find the same faces.
``--min-face-size``: ours looks for faces this large and up (FACESEARCH_MIN_FACE_SIZE; the pyramid starts at
12 / this, so each step up from 20 drops its largest levels), the reference keeps 20: what a larger setting saves
and what it misses.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report  # noqa: E402

from model.mtcnn import Mtcnn  # noqa: E402
from model.train.cfp import Cfp  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
MIN_SCORE = 0.9


def photo_sets(cfp: Path | None, lfw_every: int) -> dict[str, list[Path]]:
    sets = {"orl": sorted((SHARED / "orl").glob("s*/*.pgm")),
            "lfw": sorted((SHARED / "lfw" / "lfw-deepfunneled").glob("*/*.jpg"))[::lfw_every]}
    if cfp:
        tree = Cfp(cfp)
        people = tree.people(range(6, 11))
        sets["cfp_frontal"] = [cfp / tree.photo(p, "frontal", n) for p in people for n in range(1, 11)]
        sets["cfp_profile"] = [cfp / tree.photo(p, "profile", n) for p in people for n in range(1, 5)]
    return sets


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfp", type=Path, help="the CFP tree (Protocol/ and Data/)")
    p.add_argument("--lfw-every", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--min-face-size", type=int, default=20, help="ours only (the reference: 20)")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from facenet_pytorch import MTCNN

    before = MTCNN(keep_all=True, min_face_size=20, device=torch.device("cpu"), post_process=False)
    for net in (before.pnet, before.rnet, before.onet):
        net.to(memory_format=torch.channels_last)
    after = Mtcnn(min_face_size=a.min_face_size, threads=a.threads)

    def run_before(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with torch.inference_mode():
            boxes, scores, points = before.detect(Image.fromarray(rgb), landmarks=True)
        if boxes is None:
            return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
        return boxes, scores.astype(np.float64), points

    def run_after(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        boxes, scores, points = after.detect(rgb)
        order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), kind="stable")
        return boxes[order], scores[order], points[order]

    r: dict[str, Any] = {"threads": a.threads, "min_face_size": a.min_face_size}
    seconds = {"before": 0.0, "after": 0.0}
    worst, worst_score, differing = 0.0, 0.0, 0
    for name, files in photo_sets(a.cfp, a.lfw_every).items():
        missed = {"before": 0, "after": 0}
        for f in files:
            rgb = np.asarray(Image.open(f).convert("RGB"))
            found = {}
            for side, fn in (("before", run_before), ("after", run_after)):
                t = time.perf_counter()
                found[side] = fn(rgb)
                seconds[side] += time.perf_counter() - t
                missed[side] += int(not (found[side][1] >= MIN_SCORE).any())
            (b0, s0, p0), (b1, s1, p1) = found["before"], found["after"]
            if len(b0) != len(b1):
                differing += 1
            elif len(b0):
                worst = max(worst, float(np.abs(b0 - b1).max()), float(np.abs(p0 - p1).max()))
                worst_score = max(worst_score, float(np.abs(s0 - s1).max()))
        r[f"{name}_photos"] = len(files)
        r[f"{name}_missed_before"] = missed["before"]
        r[f"{name}_missed_after"] = missed["after"]
    total = sum(v for k, v in r.items() if k.endswith("_photos"))
    r["photos_with_other_face_counts"] = differing
    r["max_box_or_landmark_difference_px"] = worst
    r["max_score_difference"] = worst_score
    r["ms_per_photo_before"] = 1000 * seconds["before"] / total
    r["ms_per_photo_after"] = 1000 * seconds["after"] / total
    r["speedup"] = seconds["before"] / seconds["after"]
    report(r, a.json, digits=4)


if __name__ == "__main__":
    main()
