"""512 numbers per face or 128: EdgeFace's embedding against a 128-d linear projection of it, by the pre-registered
rule (model/train/preregistered/encoder-v3.md).

    python bench/width.py --checkpoint runs/v3-ft/last.pt --chips CHIPS/celeba-fillers --lfw-chips
        CHIPS/lfw-deepfunneled --cfp CFP --out runs/v3-128/last.pt [--json PATH]

The projection: the first 128 right singular vectors of the checkpoint's embeddings of 20,000 training chips
(uncentred PCA, no training), as the head's ``proj`` layer; each projected vector is put back on the unit sphere.
Measured for both: CFP split 8 frontal-profile (the choosing split; ``facesearch evaluate-cfp --splits 8``) and LFW
folds 3-10 (trained on: a ranking, not a figure), and bytes per stored face (float32 vectors).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command, portable, report  # noqa: E402

from model.embedder import load_encoder  # noqa: E402
from model.encoder import build_model, load_checkpoint_model, save_checkpoint  # noqa: E402
from model.train.align import read_index  # noqa: E402
from model.train.cfp import evaluate  # noqa: E402
from model.train.lfw import read_pairs  # noqa: E402
from model.train.metrics import kfold_accuracy  # noqa: E402

LFW_PAIRS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "lfw" / "pairs.txt"


def chips_of(folder: Path, rels: list[str]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(folder / r).convert("RGB")) for r in rels])


def lfw_accuracy(checkpoint: Path, lfw_chips: Path, folds: set[int]) -> float:
    embedder, _ = load_encoder(checkpoint)
    pairs = [p for p in read_pairs(LFW_PAIRS) if p.fold in folds]
    files = sorted({str(Path(f).with_suffix(".png")) for p in pairs for f in p.files})
    emb = dict(zip(files, embedder(chips_of(lfw_chips, files)), strict=True))
    d = np.array([np.linalg.norm(emb[str(Path(p.files[0]).with_suffix(".png"))]
                                 - emb[str(Path(p.files[1]).with_suffix(".png"))]) for p in pairs])
    acc, _, _ = kfold_accuracy(d, np.array([p.same for p in pairs]), np.array([p.fold for p in pairs]))
    return acc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--chips", type=Path, required=True, help="training chips (facesearch align cache)")
    p.add_argument("--lfw-chips", type=Path, required=True)
    p.add_argument("--cfp", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="where the 128-d checkpoint is written")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--sample", type=int, default=20000)
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    embedder, _ = load_encoder(a.checkpoint)
    rels = sorted(r for r, status in read_index(a.chips).items() if status == "detected")
    pick = np.random.default_rng(0).choice(len(rels), min(a.sample, len(rels)), replace=False)
    emb = embedder(chips_of(a.chips, [rels[i] for i in sorted(pick)]))
    _, singular, vt = np.linalg.svd(emb, full_matrices=False)
    model, config, card = load_checkpoint_model(a.checkpoint)
    narrow = build_model(replace(config, embedding_size=a.width, model_version=f"{config.model_version}-pca{a.width}"))
    missing = narrow.load_state_dict(model.state_dict(), strict=False).missing_keys
    assert missing == ["head.proj.weight"], missing
    with torch.no_grad():
        narrow.head.proj.weight.copy_(torch.from_numpy(vt[: a.width].copy()))
    save_checkpoint(a.out, narrow, card=card)
    r: dict[str, Any] = {"checkpoint": portable(str(a.checkpoint)), "sample": len(pick), "width": a.width,
                         "energy_kept": round(float((singular[: a.width] ** 2).sum() / (singular**2).sum()), 4),
                         "command": command()}
    for name, ckpt, dim in (("wide", a.checkpoint, config.embedding_size), ("narrow", a.out, a.width)):
        cfp = evaluate(a.cfp, [8], ckpt)
        r[name] = {"dim": dim, "bytes_per_face": 4 * dim, "cfp_split8_fp": cfp["FP"]["accuracy"],
                   "cfp_split8_ff": cfp["FF"]["accuracy"], "lfw_folds_3_10": lfw_accuracy(ckpt, a.lfw_chips,
                                                                                         set(range(3, 11)))}
    r["narrow_ships"] = bool(r["wide"]["cfp_split8_fp"] - r["narrow"]["cfp_split8_fp"] <= 0.003
                             and r["wide"]["lfw_folds_3_10"] - r["narrow"]["lfw_folds_3_10"] <= 0.001)
    report(r, a.json, digits=4)


if __name__ == "__main__":
    main()
