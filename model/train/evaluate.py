"""`facesearch evaluate`: the LFW View 2 protocol on held-out folds, through the serving pipeline.

Photos go through the same detector, alignment and encoder as the service (LFW convention: the face
nearest the centre; where none is found, the centred template is used and counted as a detection
failure). Writes OUT/report.json, OUT/roc.png and OUT/distances.png.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from model.embedder import Embedder, load_encoder
from model.faces import FaceDetector
from model.train.commands import parser
from model.train.lfw import parse_folds, people_in_folds, read_pairs
from model.train.metrics import eer, kfold_accuracy, roc_auc, roc_curve, val_at_far
from model.train.subject import central_face, fallback_face

log = logging.getLogger(__name__)
BIN_EDGES = np.linspace(0.0, 2.0, 2001)  # 0.001 wide: fine enough to read FAR down to 1e-5


class CachedChips:
    """Chips of a tree cut once by ``facesearch align`` (the detector, subject choice and aligner the
    evaluation itself uses), read instead of cut again: a candidate is evaluated in a minute, not twenty."""

    def __init__(self, folder: Path, data: Path, embedder: Embedder) -> None:
        from model.train.align import read_index
        from model.train.data import chip_key

        if folder.parent.name != chip_key(embedder.config):
            raise SystemExit(f"{folder} holds {folder.parent.name} chips; this checkpoint cuts "
                             f"{chip_key(embedder.config)}")
        self.folder, self.data = folder, data
        self.status = read_index(folder)

    def get(self, path: Path) -> tuple[np.ndarray, bool] | None:
        rel = str(path.relative_to(self.data).with_suffix(".png"))
        if rel not in self.status:
            return None
        return np.asarray(Image.open(self.folder / rel).convert("RGB")), self.status[rel] == "detected"


def embed_photos(paths: list[Path], embedder: Embedder, detector: FaceDetector,
                 batch: int = 64, cached: CachedChips | None = None) -> tuple[np.ndarray, int]:
    """Embed the subject of each photo; returns (float32 (N, D), number of detection failures)."""
    out, crops, failures = [], [], 0
    for path in tqdm(paths, desc="embed photos"):
        hit = cached.get(path) if cached is not None else None
        if hit is not None:
            crops.append(hit[0])
            failures += not hit[1]
        else:
            rgb = np.asarray(Image.open(path).convert("RGB"))
            face = central_face(detector.detect(rgb), rgb.shape[1], rgb.shape[0])
            if face is None:
                failures += 1
                face = fallback_face(rgb.shape[1], rgb.shape[0])
            crops.append(embedder.aligner(rgb, face))
        if len(crops) == batch:
            out.append(embedder(np.stack(crops)))
            crops = []
    if crops:
        out.append(embedder(np.stack(crops)))
    return np.concatenate(out) if out else np.zeros((0, embedder.dim), np.float32), failures


def pairwise_histograms(emb: np.ndarray, people: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Histograms (over BIN_EDGES) of genuine and impostor distances of all pairs of these photos."""
    genuine = np.zeros(len(BIN_EDGES) - 1, dtype=np.int64)
    impostor = np.zeros_like(genuine)
    for i in range(0, len(emb), 512):
        block = emb[i : i + 512]
        d = np.sqrt(np.clip(2.0 - 2.0 * block @ emb.T, 0.0, 4.0))
        rows = np.arange(i, i + len(block))[:, None]
        upper = np.arange(len(emb))[None, :] > rows  # each unordered pair once
        same = people[i : i + len(block)][:, None] == people[None, :]
        genuine += np.histogram(d[upper & same], BIN_EDGES)[0]
        impostor += np.histogram(d[upper & ~same], BIN_EDGES)[0]
    return genuine, impostor


def plot(dist: np.ndarray, same: np.ndarray, threshold: float, out: Path, title: str,
         reference: tuple[str, np.ndarray] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    curves = [(title, dist)] + ([reference] if reference else [])
    for name, d in curves:
        far, tar, _ = roc_curve(d, same)
        ax.plot(np.maximum(far, 1e-4), tar, label=f"{name} (AUC {roc_auc(d, same):.4f})")
    ax.set_xscale("log")
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title("ROC on held-out LFW pairs")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "roc.png", dpi=90)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 2, 81).tolist()
    ax.hist(dist[same], bins, alpha=0.6, label="same person")
    ax.hist(dist[~same], bins, alpha=0.6, label="different people")
    ax.axvline(threshold, color="k", ls="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("distance (Euclidean, unit vectors)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "distances.png", dpi=90)
    plt.close(fig)


def pair_metrics(dist: np.ndarray, same: np.ndarray, fold: np.ndarray) -> dict[str, Any]:
    acc, std, fold_thresholds = kfold_accuracy(dist, same, fold)
    from model.train.metrics import best_threshold

    val, far_threshold = val_at_far(dist, same, 1e-3)
    return {
        "accuracy": acc,
        "accuracy_std": std,
        "auc": roc_auc(dist, same),
        "eer": eer(dist, same),
        "val_at_far_1e-3": val,
        "threshold_far_1e-3_pairs": far_threshold,
        "threshold": best_threshold(dist, same),
        "fold_thresholds": fold_thresholds,
    }


def dlib_distances(data: Path, pairs: list[Any]) -> tuple[np.ndarray, int, float]:
    """dlib's face_recognition pipeline (HOG detector, 5-point chips, ResNet) on the same pairs."""
    from model.train.teacher import dlib_embedding

    cache: dict[str, np.ndarray] = {}
    failures = 0
    t_embed = []
    for f in tqdm(sorted({f for p in pairs for f in p.files}), desc="dlib"):
        t = time.perf_counter()
        cache[f], found = dlib_embedding(data / f)
        t_embed.append(time.perf_counter() - t)
        failures += not found
    dist = np.array([np.linalg.norm(cache[p.files[0]] - cache[p.files[1]]) for p in pairs])
    return dist, failures, float(np.median(t_embed) * 1000)


def main(argv: list[str] | None = None) -> int:
    a = parser("evaluate", __doc__).parse_args(argv)

    embedder, card = load_encoder(a.checkpoint, flip=a.flip)
    trained_out = (card.get("training") or {}).get("excluded_folds") or []
    folds = parse_folds(a.folds) if a.folds else list(trained_out)
    if not folds:
        raise SystemExit("the checkpoint's card names no held-out folds: pass --folds")
    if not set(folds) <= set(trained_out) and not a.force:
        raise SystemExit(f"folds {folds} include people the checkpoint was trained on "
                         f"(held out: {trained_out}); pass --force to evaluate anyway")
    all_pairs = read_pairs(a.pairs)
    pairs = [q for q in all_pairs if q.fold in folds]
    files = sorted({f for q in pairs for f in q.files})
    detector = FaceDetector(embedder.config.detector)
    cached = CachedChips(a.chips, a.data, embedder) if a.chips else None
    t = time.time()
    emb, failures = embed_photos([a.data / f for f in files], embedder, detector, cached=cached)
    log.info("embedded %d photos in %.1fs", len(files), time.time() - t)
    row = {f: i for i, f in enumerate(files)}
    i1 = np.array([row[q.files[0]] for q in pairs])
    i2 = np.array([row[q.files[1]] for q in pairs])
    dist = np.linalg.norm(emb[i1] - emb[i2], axis=1)
    same = np.array([q.same for q in pairs])
    fold = np.array([q.fold for q in pairs])
    report: dict[str, Any] = {
        "model_version": card.get("model_version"),
        "checkpoint": str(a.checkpoint or "shipped"),
        "chips": f"cached by facesearch align in {a.chips}" if a.chips else "cut during the evaluation",
        "flip": embedder.flip,
        **pair_metrics(dist, same, fold),
        "folds": folds,
        "pairs": len(pairs),
        "photos": len(files),
        "detection_failures": failures,
    }
    a.out.mkdir(parents=True, exist_ok=True)
    reference = None
    if a.reference == "dlib":
        d_dist, d_fail, d_ms = dlib_distances(a.data, pairs)
        report["reference"] = {"name": "dlib (face_recognition, HOG + 5-point, ResNet-34)",
                               **pair_metrics(d_dist, same, fold), "detection_failures": d_fail,
                               "pipeline_ms_median": d_ms}  # HOG + chip + ResNet
        reference = ("dlib", d_dist)
    if a.distributions:
        people = sorted(people_in_folds(all_pairs, folds))
        photos = [(name, f) for name in people
                  for f in sorted((a.data / name).glob("*.jpg"))]
        known = {a.data / f: row[f] for f in files}
        todo = [f for _, f in photos if f not in known]
        extra, extra_fail = embed_photos(todo, embedder, detector, cached=cached)
        lookup = {**{f: emb[i] for f, i in known.items()}, **dict(zip(todo, extra, strict=True))}
        all_emb = np.stack([lookup[f] for _, f in photos])
        names = np.array([n for n, _ in photos])
        genuine, impostor = pairwise_histograms(all_emb, names)
        report["distributions"] = {
            "people": len(people), "photos": len(photos), "detection_failures": failures + extra_fail,
            "genuine_pairs": int(genuine.sum()), "impostor_pairs": int(impostor.sum()),
            "bin_edges": [round(float(x), 4) for x in BIN_EDGES],
            "genuine_counts": genuine.tolist(), "impostor_counts": impostor.tolist(),
        }
        from model.calibration import Calibration

        cal = Calibration({"distributions": report["distributions"]})
        report["thresholds_from_distribution"] = {
            f"far_{far:g}": cal.threshold_for_far(far) for far in (1e-2, 1e-3, 1e-4, 1e-5)
        }
        g_sorted = np.repeat((BIN_EDGES[:-1] + BIN_EDGES[1:]) / 2, genuine)
        report["val_at_far_from_distribution"] = {
            k: float((g_sorted <= v).mean()) for k, v in report["thresholds_from_distribution"].items()
        }
    plot(dist, same, report["threshold"], a.out, str(card.get("model_version", "encoder")), reference)
    (a.out / "report.json").write_text(json.dumps(report, indent=2))
    summary = {k: v for k, v in report.items() if not isinstance(v, dict | list)}
    print(json.dumps(summary, indent=2))
    if "reference" in report:
        print("reference:", json.dumps({k: v for k, v in report["reference"].items()
                                         if not isinstance(v, list)}, indent=2))
    return 0
