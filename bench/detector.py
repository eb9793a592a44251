"""The two detectors side by side, on the same photos in one run: YuNet (encoder v3's) against MTCNN (encoder v2's).

    python bench/detector.py [--cfp CFP_TREE] [--lfw-every 7] [--threads 2] [--json PATH]

Both run as the service runs them (model/faces.py's FaceDetector, ONNX Runtime, each at its own score cut:
YuNet 0.6, MTCNN 0.9), alternating per photo. Photos: every ORL face (92x112 greyscale), every ``--lfw-every``-th
LFW photo (250x250), group photos of three LFW photos side by side (each should give three faces), and with
``--cfp`` every frontal and profile photo of CFP people 251-500 (splits 6-10; splits 1-5 are never read).
A photo is missed when no face is found (a group photo: each of its three people whose photo has no face box
centred on it). Also: photos with more faces than people in them (a false face, or a background one), and the
milliseconds per photo.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command, report  # noqa: E402

from model.faces import FaceDetector  # noqa: E402
from model.train.cfp import Cfp  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
DETECTORS = ("yunet", "mtcnn")


def photo_sets(cfp: Path | None, lfw_every: int) -> dict[str, list[Path]]:
    sets = {"orl": sorted((SHARED / "orl").glob("s*/*.pgm")),
            "lfw": sorted((SHARED / "lfw" / "lfw-deepfunneled").glob("*/*.jpg"))[::lfw_every]}
    if cfp:
        tree = Cfp(cfp)
        people = tree.people(range(6, 11))
        sets["cfp_frontal"] = [cfp / tree.photo(p, "frontal", n) for p in people for n in range(1, 11)]
        sets["cfp_profile"] = [cfp / tree.photo(p, "profile", n) for p in people for n in range(1, 5)]
    return sets


def group_photo(files: list[Path]) -> tuple[np.ndarray, list[tuple[float, float, float]]]:
    """Three photos side by side on grey (as bench/photos.py indexes them); each one's centre and width."""
    imgs = [Image.open(f).convert("RGB") for f in files]
    canvas = Image.new("RGB", (sum(i.width for i in imgs) + 20 * (len(imgs) + 1),
                               max(i.height for i in imgs) + 40), (120, 120, 120))
    x, where = 20, []
    for i in imgs:
        canvas.paste(i, (x, 20))
        where.append((x + i.width / 2, 20 + i.height / 2, float(i.width)))
        x += i.width + 20
    return np.asarray(canvas), where


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfp", type=Path, help="the CFP tree (Protocol/ and Data/)")
    p.add_argument("--lfw-every", type=int, default=7)
    p.add_argument("--groups", type=int, default=200, help="group photos of three LFW photos")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    detectors = {k: FaceDetector(k, threads=a.threads) for k in DETECTORS}
    r: dict[str, Any] = {"threads": a.threads, "min_score": {k: d.min_score for k, d in detectors.items()},
                         "command": command()}
    seconds = dict.fromkeys(DETECTORS, 0.0)
    photos = 0
    sets = photo_sets(a.cfp, a.lfw_every)
    for name, files in sets.items():
        missed, extra = dict.fromkeys(DETECTORS, 0), dict.fromkeys(DETECTORS, 0)
        for f in files:
            rgb = np.asarray(Image.open(f).convert("RGB"))
            photos += 1
            for k, d in detectors.items():
                t = time.perf_counter()
                faces = d.detect(rgb)
                seconds[k] += time.perf_counter() - t
                missed[k] += not faces
                extra[k] += len(faces) > 1
        r[name] = {"photos": len(files), "missed": missed, "more_than_one_face": extra}
    lfw = sets["lfw"]
    rng = np.random.default_rng(0)
    missed, extra = dict.fromkeys(DETECTORS, 0), dict.fromkeys(DETECTORS, 0)
    for _ in range(a.groups):
        rgb, where = group_photo([lfw[i] for i in rng.choice(len(lfw), 3, replace=False)])
        photos += 1
        for k, d in detectors.items():
            t = time.perf_counter()
            faces = d.detect(rgb)
            seconds[k] += time.perf_counter() - t
            centres = [((f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2) for f in faces]
            hit = sum(any(abs(x - cx) < w / 4 and abs(y - cy) < w / 4 for x, y in centres) for cx, cy, w in where)
            missed[k] += len(where) - hit
            extra[k] += len(faces) > len(where)
    r["groups_of_3"] = {"photos": a.groups, "people": 3 * a.groups, "missed_people": missed,
                        "more_faces_than_people": extra}
    r["photos"] = photos
    r["ms_per_photo"] = {k: round(1000 * s / photos, 2) for k, s in seconds.items()}
    r["speedup_yunet"] = round(seconds["mtcnn"] / seconds["yunet"], 2)
    report(r, a.json, digits=4)


if __name__ == "__main__":
    main()
