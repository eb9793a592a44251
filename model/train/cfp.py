"""`facesearch evaluate-cfp`: CFP's frontal-frontal (FF) and frontal-profile (FP) protocols, and its training tree.

CFP (Celebrities in Frontal-Profile, Sengupta et al., WACV 2016): 500 people, 10 frontal + 4 profile photos
each; per protocol 10 people-disjoint splits of 350 same + 350 different pairs, split k holding people
50(k-1)+1 .. 50k. ``Protocol/Pair_list_{F,P}.txt`` number the photos, ``Protocol/Split/<FF|FP>/<nn>/{same,diff}.txt``
pair those numbers (FP: frontal, profile).

Splits 1-5 (people 001-250) are kept for an outside check: this module refuses to read them or their people,
for anything. Splits 6-8 (people 251-400) may be trained on (``--train-tree``); splits 9-10 (401-500) are
where we measure.

Each photo goes through the serving pipeline as ``/v1/embed`` does (the encoder's detector, the largest face, its
chip and mirror averaging); a photo where no face is found decides its pairs "different". Accuracy: each
split's threshold chosen on the other measured splits. ``--reference dlib`` runs dlib's own pipeline (HOG,
5-point chip, ResNet; no face found: "different") on the same pairs in the same run.

The tree is committed in the public repository zhangjunh/DR-GAN-by-pytorch under ``cfp-dataset/`` with the
images moved to ``Data/Images/train/<id>`` (001-450) and ``Data/Images/test/<id>`` (451-500); both layouts
are read.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.train.commands import parser
from model.train.provenance import command, git_commit

log = logging.getLogger(__name__)
PEOPLE_PER_SPLIT = 50
OUTSIDE_CHECK_SPLITS = frozenset(range(1, 6))  # people 001-250: never read
MEASURE_SPLITS = (9, 10)
TRAIN_SPLITS = (6, 7, 8)
NO_FACE_DISTANCE = 2.0  # the largest distance between unit vectors: a pair with a missing face is "different"


def parse_splits(text: str) -> list[int]:
    """``9-10`` or ``6,7,8`` -> split numbers; splits 1-5 are refused."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += range(int(lo), int(hi or lo) + 1)
    bad = sorted(set(out) & OUTSIDE_CHECK_SPLITS)
    if bad:
        raise SystemExit(f"CFP splits {bad} (people 001-250) are kept for an outside check and are never read")
    if any(not 1 <= s <= 10 for s in out):
        raise SystemExit(f"CFP has splits 1-10, not {text}")
    return sorted(set(out))


def split_of(person: int) -> int:
    return (person - 1) // PEOPLE_PER_SPLIT + 1


@dataclass(frozen=True)
class CfpPair:
    split: int
    same: bool
    files: tuple[str, str]  # relative to the CFP root


class Cfp:
    """One CFP tree on disk (the original ``Data/Images/<id>`` layout or the DR-GAN copy's train/test)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not (self.root / "Protocol").is_dir():
            raise SystemExit(f"{root}: not a CFP tree (no Protocol/ folder)")

    def photo(self, person: int, pose: str, number: int) -> str:
        if split_of(person) in OUTSIDE_CHECK_SPLITS:
            raise ValueError(f"CFP person {person:03d} belongs to the outside check")
        for layout in ("", "train/" if person <= 450 else "test/"):
            rel = f"Data/Images/{layout}{person:03d}/{pose}/{number:02d}.jpg"
            if (self.root / rel).exists():
                return rel
        raise FileNotFoundError(f"{self.root}: no photo {person:03d}/{pose}/{number:02d}")

    def _numbered(self, pose: str) -> dict[int, tuple[int, int]]:
        """Pair-list number -> (person, photo number), for the people outside the outside check only."""
        name = {"frontal": "Pair_list_F.txt", "profile": "Pair_list_P.txt"}[pose]
        out = {}
        for line in (self.root / "Protocol" / name).read_text().splitlines():
            if not line.strip():
                continue
            number, path = line.split()
            parts = Path(path).parts  # ../Data/Images/<id>/<pose>/<nn>.jpg
            person, photo = int(parts[-3]), int(Path(parts[-1]).stem)
            if split_of(person) not in OUTSIDE_CHECK_SPLITS:
                out[int(number)] = (person, photo)
        return out

    def pairs(self, protocol: str, splits: list[int]) -> list[CfpPair]:
        """The protocol's (``FF`` or ``FP``) pairs of these splits."""
        frontal = self._numbered("frontal")
        second = frontal if protocol == "FF" else self._numbered("profile")
        pose2 = "frontal" if protocol == "FF" else "profile"
        out = []
        for s in splits:
            folder = self.root / "Protocol" / "Split" / protocol / f"{s:02d}"
            for kind in ("same", "diff"):
                for line in (folder / f"{kind}.txt").read_text().split():
                    i, j = (int(x) for x in line.split(","))
                    (p1, n1), (p2, n2) = frontal[i], second[j]
                    if split_of(p1) != s or split_of(p2) != s:
                        raise ValueError(f"CFP {protocol} split {s}: pair {line} leaves the split's people")
                    out.append(CfpPair(s, kind == "same",
                                       (self.photo(p1, "frontal", n1), self.photo(p2, pose2, n2))))
        return out

    def people(self, splits: list[int] | tuple[int, ...]) -> list[int]:
        return [p for s in splits for p in range((s - 1) * PEOPLE_PER_SPLIT + 1, s * PEOPLE_PER_SPLIT + 1)]

    def make_train_tree(self, out: Path, splits: list[int] | tuple[int, ...]) -> int:
        """An identity-per-folder tree (``OUT/cfp<id>/<pose>_<nn>.jpg``, symbolic links) of these splits' people
        for ``facesearch train --data``. Returns the number of photos."""
        n = 0
        for person in self.people(splits):
            for pose, count in (("frontal", 10), ("profile", 4)):
                for number in range(1, count + 1):
                    dst = out / f"cfp{person:03d}" / f"{pose}_{number:02d}.jpg"
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    if not dst.exists():
                        dst.symlink_to((self.root / self.photo(person, pose, number)).resolve())
                    n += 1
        return n


def serving_embeddings(root: Path, files: list[str], checkpoint: Path | None,
                       flip: bool | None) -> tuple[dict[str, np.ndarray | None], dict[str, Any]]:
    """Each photo's largest face through the serving pipeline (detector, chip, encoder), or None without one."""
    from PIL import Image
    from tqdm import tqdm

    from model.embedder import load_encoder
    from model.faces import FaceDetector

    embedder, card = load_encoder(checkpoint, flip=flip)
    detector = FaceDetector(embedder.config.detector)
    out: dict[str, np.ndarray | None] = {}
    t = time.perf_counter()
    for f in tqdm(files, desc="embed"):
        rgb = np.asarray(Image.open(root / f).convert("RGB"))
        faces = detector.detect(rgb)  # largest first, as /v1/embed's face=largest
        out[f] = embedder(embedder.aligner(rgb, faces[0])[None])[0] if faces else None
    info = {"model_version": card.get("model_version"), "flip": embedder.flip,
            "seconds": round(time.perf_counter() - t, 1)}
    return out, info


def dlib_embeddings(root: Path, files: list[str]) -> dict[str, np.ndarray | None]:
    """dlib's pipeline (HOG with one upsampling, 5-point chip, ResNet); None where HOG finds no face."""
    from tqdm import tqdm

    from model.train.teacher import dlib_embedding

    out: dict[str, np.ndarray | None] = {}
    for f in tqdm(files, desc="dlib"):
        emb, found = dlib_embedding(root / f)
        out[f] = emb if found else None
    return out


def protocol_metrics(pairs: list[CfpPair], emb: dict[str, np.ndarray | None]) -> dict[str, Any]:
    from model.train.metrics import kfold_accuracy, roc_auc

    def distance(a: np.ndarray | None, b: np.ndarray | None) -> float:
        return NO_FACE_DISTANCE if a is None or b is None else float(np.linalg.norm(a - b))

    dist = np.array([distance(emb[p.files[0]], emb[p.files[1]]) for p in pairs])
    same = np.array([p.same for p in pairs])
    split = np.array([p.split for p in pairs])
    acc, std, thresholds = kfold_accuracy(dist, same, split)
    per_split = {}
    for s, t in zip(np.unique(split), thresholds, strict=True):
        m = split == s
        per_split[int(s)] = float(((dist[m] <= t) == same[m]).mean())
    return {"accuracy": round(acc, 4), "accuracy_std": round(std, 4), "auc": round(roc_auc(dist, same), 4),
            "per_split": per_split, "thresholds": [round(t, 4) for t in thresholds], "pairs": len(pairs),
            "pairs_with_a_missing_face": int(sum(emb[a] is None or emb[b] is None
                                                 for a, b in (p.files for p in pairs)))}


def evaluate(root: Path, splits: list[int], checkpoint: Path | None = None, flip: bool | None = None,
             reference: str | None = None) -> dict[str, Any]:
    cfp = Cfp(root)
    protocols = {name: cfp.pairs(name, splits) for name in ("FF", "FP")}
    files = sorted({f for pairs in protocols.values() for p in pairs for f in p.files})
    ours, info = serving_embeddings(cfp.root, files, checkpoint, flip)
    report: dict[str, Any] = {"splits": splits, "photos": len(files), **info,
                              "no_face": {"frontal": sum(ours[f] is None for f in files if "/frontal/" in f),
                                          "profile": sum(ours[f] is None for f in files if "/profile/" in f)}}
    for name, pairs in protocols.items():
        report[name] = protocol_metrics(pairs, ours)
    if reference == "dlib":
        theirs = dlib_embeddings(cfp.root, files)
        report["reference"] = {"name": "dlib (face_recognition: HOG + 5-point chip + ResNet)",
                               "no_face": {"frontal": sum(theirs[f] is None for f in files if "/frontal/" in f),
                                           "profile": sum(theirs[f] is None for f in files if "/profile/" in f)},
                               **{name: protocol_metrics(pairs, theirs) for name, pairs in protocols.items()}}
    return report


def main(argv: list[str] | None = None) -> int:
    a = parser("evaluate-cfp", __doc__).parse_args(argv)
    if a.train_tree:
        splits = parse_splits(a.train_splits)
        if not set(splits) <= set(TRAIN_SPLITS):
            raise SystemExit(f"only splits {list(TRAIN_SPLITS)} may be trained on; {splits} asked")
        n = Cfp(a.root).make_train_tree(a.train_tree, splits)
        print(json.dumps({"tree": str(a.train_tree), "photos": n, "splits": splits}))
        return 0
    report = evaluate(a.root, parse_splits(a.splits), a.checkpoint, a.flip, a.reference)
    report.update(git_commit=git_commit(), command=command("facesearch"))
    text = json.dumps(report, indent=2)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(text + "\n")
    print(text)
    return 0
