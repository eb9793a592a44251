"""`facesearch train`: FaceNet-style triplet training of the encoder on aligned, cached crops.

P identities x K images per batch, online semi-hard negatives, triplet loss (margin 0.2) on squared
distances of unit vectors; optionally an auxiliary CosFace identity head beside it, and a teacher's
embedding of each photo as a second target (``--teacher``: dlib's vectors from ``facesearch teacher``,
half-centred over the training set and put back on the unit sphere, matched by squared distance). A checkpoint
every epoch (``OUT/last.pt``, resumable), a CSV log and a curve PNG.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import random
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_metric_learning.losses import CosFaceLoss
from pytorch_metric_learning.samplers import MPerClassSampler
from torch import nn
from tqdm import tqdm

from model.embedder import EncoderConfig
from model.encoder import (
    Preprocess,
    build_model,
    has_imagenet_start,
    new_config,
    read_checkpoint,
    save_checkpoint,
    torch_embedder,
)
from model.errors import CheckpointError
from model.train.commands import parser
from model.train.data import Augment, cache_dir_for, load_crops
from model.train.lfw import parse_folds, people_in_folds, read_pairs
from model.train.losses import Mining, distillation_loss, relational_distillation_loss, triplet_loss
from model.train.metrics import kfold_accuracy
from model.train.teacher import read_teacher

log = logging.getLogger(__name__)
TEACHER_CENTRING = 0.5  # share of the teacher vectors' mean taken out (see teacher_targets)
# --distill: the loss and how the model card words it
DISTILL = {
    "embedding": (distillation_loss, "squared distance to dlib's embedding of the photo"),
    "relational": (relational_distillation_loss, "squared error of the batch's squared distances against dlib's"),
}

CSV_FIELDS = ["epoch", "step", "seconds", "lr", "loss", "triplet_loss", "cosface_loss", "distill_loss",
              "active_fraction", "mining", "heldout_accuracy"]


def portable(arg: str) -> str:
    """An absolute path as the model card records it: relative to the working folder (a reader elsewhere cannot
    follow this machine's absolute paths); anything else unchanged."""
    return os.path.relpath(arg) if os.path.isabs(arg) else arg


def read_people(path: Path) -> list[str]:
    """Identities listed one per line (``#`` starts a comment), in file order."""
    lines = (ln.split("#", 1)[0].strip() for ln in Path(path).read_text().splitlines())
    return [ln for ln in lines if ln]


def freeze(model: nn.Module, stages: str) -> list[str]:
    """Keep the named stages (``stem,blocks32``) at their start: the first layers of a pretrained face network
    hold generic edges and textures that a few thousand people cannot improve. Returns the frozen stages."""
    names = [s for s in stages.split(",") if s]
    if not names:
        return []
    groups = dict(getattr(model, "parameter_groups", lambda: [])())
    unknown = [n for n in names if n not in groups]
    if unknown:
        raise SystemExit(f"--freeze: unknown stage(s) {', '.join(unknown)} (stages: {', '.join(groups) or 'none'})")
    for n in names:
        for q in groups[n]:
            q.requires_grad_(False)
    return names


def lr_at(step: int, total: int, base: float, warmup: int, time_progress: float = 0.0) -> float:
    """Linear warm-up, then cosine decay over the steps or the time budget, whichever is further along."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = max((step - warmup) / max(1, total - warmup), time_progress)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def heldout_pairs(args: argparse.Namespace,
                  config: EncoderConfig) -> tuple[list[Path], np.ndarray, np.ndarray, np.ndarray] | None:
    """Cached crops of the excluded LFW folds' pairs, for a per-epoch accuracy figure."""
    if not args.exclude_pairs:
        return None
    lfw = [r for r in args.data if (r / read_pairs(args.exclude_pairs)[0].files[0]).exists()]
    if not lfw:
        return None
    folds = parse_folds(args.exclude_folds)
    pairs = [p for p in read_pairs(args.exclude_pairs) if p.fold in folds]
    cache = cache_dir_for(lfw[0], args.cache, config)
    files: list[Path] = []
    index: dict[Path, int] = {}
    ij = []
    for p in pairs:
        row = []
        for f in p.files:
            path = (cache / f).with_suffix(".png")
            if path not in index:
                index[path] = len(files)
                files.append(path)
            row.append(index[path])
        ij.append(row)
    same = np.array([p.same for p in pairs])
    fold = np.array([p.fold for p in pairs])
    return files, np.array(ij), same, fold


def evaluate_heldout(model: nn.Module, config: EncoderConfig,
                     held: tuple[list[Path], np.ndarray, np.ndarray, np.ndarray]) -> float:
    from PIL import Image

    files, ij, same, fold = held
    if not all(f.exists() for f in files):
        return float("nan")
    crops = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    emb = torch_embedder(model)(crops)  # embeds with a fused eval-mode copy
    dist = np.linalg.norm(emb[ij[:, 0]] - emb[ij[:, 1]], axis=1)
    acc, _, _ = kfold_accuracy(dist, same, fold)
    return acc


def teacher_targets(folder: Path, roots: list[Path], keys: list[tuple[str, str]],
                    size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher vector per crop (zeros where none) and a mask of the crops that have one.

    dlib's vectors crowd into a narrow cone (strangers 0.58 apart, the same person 0.29); subtracting half
    their mean over the training set and renormalising spreads them (0.94 and 0.48) to where the triplet
    margin acts, and keeps their ranking (same/different accuracy over 2,000 LFW training photos 0.9948 ->
    0.9946; subtracting the whole mean costs 0.4 points).
    """
    tables = {root.name: read_teacher(folder, root) for root in roots}
    target = np.zeros((len(keys), size), np.float32)
    has = np.zeros(len(keys), bool)
    for i, (tree, rel) in enumerate(keys):
        vec = tables[tree].get(rel)
        if vec is not None:
            if len(vec) != size:
                raise SystemExit(f"teacher vectors have {len(vec)} dimensions, the encoder {size}")
            target[i], has[i] = vec, True
    if not has.any():
        raise SystemExit(f"no teacher embeddings for the training photos in {folder}: run facesearch teacher")
    target[has] -= TEACHER_CENTRING * target[has].mean(axis=0)
    target[has] /= np.linalg.norm(target[has], axis=1, keepdims=True).clip(1e-12)
    log.info("teacher targets for %d of %d photos", int(has.sum()), len(keys))
    return torch.from_numpy(target), torch.from_numpy(has)


def plot_curves(log_path: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(log_path.open()))
    if not rows:
        return
    step = [int(r["step"]) for r in rows]
    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    ax[0].plot(step, [float(r["loss"]) for r in rows], label="total")
    ax[0].plot(step, [float(r["triplet_loss"]) for r in rows], label="triplet")
    if any(float(r.get("distill_loss") or 0) for r in rows):
        ax[0].plot(step, [float(r.get("distill_loss") or 0) for r in rows], label="teacher")
    ax[0].set_title("loss")
    ax[0].legend()
    ax[1].plot(step, [float(r["active_fraction"]) for r in rows])
    ax[1].set_title("active triplet fraction")
    acc = [(int(r["step"]), float(r["heldout_accuracy"])) for r in rows if r["heldout_accuracy"] not in ("", "nan")]
    if acc:
        ax[2].plot(*zip(*acc, strict=True), marker="o")
    ax[2].set_title("held-out LFW accuracy (per epoch)")
    for a in ax:
        a.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)


@dataclass
class Data:
    """The training set in memory: crops uint8 (N, S, S, 3), labels int64 (N,), identity names, crop keys."""

    crops: np.ndarray
    labels: np.ndarray
    names: list[str]
    keys: list[tuple[str, str]]
    excluded: int  # people kept out


@dataclass
class Losses:
    """What a batch is scored with: the triplet loss, and optional second targets and heads."""

    margin: float
    mining: Mining
    hard_after: float
    targets: tuple[torch.Tensor, torch.Tensor] | None = None  # teacher vectors and which photos have one
    distill: Any = None
    distill_weight: float = 0.0
    distill_words: str = ""
    mirror_teacher: Any = None  # the start's mirror-averaged embedder, frozen
    mirror_weight: float = 0.0
    cosface: nn.Module | None = None
    cosface_weight: float = 0.0

    def __call__(self, emb: torch.Tensor, y: torch.Tensor, idx: np.ndarray, batch_crops: np.ndarray,
                 mining: Mining) -> tuple[torch.Tensor, dict[str, float]]:
        t_loss, stats = triplet_loss(emb, y, self.margin, mining)
        loss = t_loss
        c_loss = d_loss = torch.zeros(())
        if self.targets is not None:
            d_loss = self.distill(emb, self.targets[0][idx], self.targets[1][idx])
            loss = loss + self.distill_weight * d_loss
        if self.mirror_teacher is not None:
            target = torch.from_numpy(self.mirror_teacher(batch_crops))
            d_loss = distillation_loss(emb, target, torch.ones(len(target), dtype=torch.bool))
            loss = loss + self.mirror_weight * d_loss
        if self.cosface is not None:
            c_loss = self.cosface(emb, y)
            loss = loss + self.cosface_weight * c_loss
        return loss, {"loss": loss.item(), "triplet_loss": t_loss.item(), "cosface_loss": c_loss.item(),
                      "distill_loss": d_loss.item(), "active_fraction": stats["active_fraction"]}

    def words(self) -> str:
        """The model card's description of the loss."""
        return (f"triplet (margin {self.margin}, squared L2 on unit vectors, {self.mining} mining"
                + (f", hard after {self.hard_after:.0%} of steps" if self.hard_after < 1 else "") + ")"
                + (f" + {self.cosface_weight} x CosFace identity head (auxiliary)" if self.cosface else "")
                + (f" + {self.distill_weight} x {self.distill_words} (teacher, CC0; half its mean taken out, "
                   "unit length)" if self.targets is not None else "")
                + (f" + {self.mirror_weight} x squared distance to the initial model's mirror-averaged "
                   "embedding of the photo" if self.mirror_teacher is not None else ""))


def start_config(args: argparse.Namespace, init: dict[str, Any] | None) -> EncoderConfig:
    """The run's config: the --init checkpoint's architecture, input, chip and size, or a new one."""
    if init is not None:
        config = EncoderConfig.from_dict(init["config"])
        config.flip = False
    else:
        config = new_config(args.arch, embedding_size=args.embedding_size, input_size=args.input_size)
    config.model_version = f"training-run-{args.out.name}"
    return config


def build_data(args: argparse.Namespace, config: EncoderConfig) -> Data:
    """Align (once, cached) and load every training photo of the people not kept out."""
    exclude: set[str] = set()
    if args.exclude_pairs:
        exclude = people_in_folds(read_pairs(args.exclude_pairs), parse_folds(args.exclude_folds))
    if args.exclude_people:
        exclude |= set(read_people(args.exclude_people))
    crops, labels, names, keys = load_crops(args.data, args.cache, config, exclude=exclude)
    if len(names) < 2:
        raise SystemExit("need at least two identities to train")
    log.info("training on %d photos of %d people (%d people excluded)", len(crops), len(names), len(exclude))
    return Data(crops, labels, names, keys, len(exclude))


def build_start(args: argparse.Namespace, config: EncoderConfig, init: dict[str, Any] | None
                ) -> tuple[nn.Module, str, list[str]]:
    """The network at its start (ImageNet, random or --init's weights), its stages frozen; with the card's words
    for where it started and which stages are frozen."""
    imagenet = not args.no_imagenet and not args.init and has_imagenet_start(config)
    model: nn.Module = build_model(config, imagenet_init=imagenet)
    init_from = "ImageNet" if imagenet else "random"
    if init is not None:
        try:
            model.load_state_dict(init["state_dict"])
        except RuntimeError as e:  # weights of another shape
            raise CheckpointError(f"weights in {args.init} do not fit {config.arch}: {e}") from e
        init_from = f"{args.init} ({init['config'].get('model_version', 'unversioned')})"  # the path may change
        log.info("initialised from %s", args.init)
    return model, init_from, freeze(model, args.freeze)


def build_losses(args: argparse.Namespace, model: nn.Module, data: Data) -> Losses:
    losses = Losses(margin=args.margin, mining=args.mining, hard_after=args.hard_after)
    if args.mirror_distill > 0:
        if not args.init:
            raise SystemExit("--mirror-distill needs --init (the model whose mirror-averaged embeddings are targets)")
        losses.mirror_teacher = torch_embedder(model, flip=True)  # a folded copy of the start, frozen
        losses.mirror_weight = args.mirror_distill
    if args.teacher:
        losses.targets = teacher_targets(args.teacher, args.data, data.keys, args.embedding_size)
        losses.distill, losses.distill_words = DISTILL[args.distill]
        losses.distill_weight = args.distill_weight
    if args.cosface_weight > 0:
        losses.cosface = CosFaceLoss(num_classes=len(data.names), embedding_size=args.embedding_size)
        losses.cosface_weight = args.cosface_weight
    return losses


@dataclass
class Progress:
    epoch: int = 0
    step: int = 0
    seconds_before: float = 0.0  # training time of the runs this one resumes


def resume(args: argparse.Namespace, model: nn.Module, opt: torch.optim.Optimizer, losses: Losses) -> Progress:
    """Where OUT/last.pt stopped (--resume), its weights and optimizer state loaded; a fresh start otherwise."""
    if not (args.resume and (args.out / "last.pt").exists()):
        return Progress()
    ckpt = read_checkpoint(args.out / "last.pt")
    model.load_state_dict(ckpt["state_dict"])
    state = ckpt["train_state"]
    opt.load_state_dict(state["optimizer"])
    if losses.cosface is not None and "cosface" in state:
        losses.cosface.load_state_dict(state["cosface"])
    progress = Progress(int(state["epoch"]), int(state["step"]), float(state.get("seconds", 0.0)))
    torch.manual_seed(args.seed + progress.epoch)
    log.info("resumed from epoch %d, step %d", progress.epoch, progress.step)
    return progress


def train_one_epoch(args: argparse.Namespace, model: nn.Module, data: Data, losses: Losses,
                    opt: torch.optim.Optimizer, augment: Augment, preprocess: Preprocess, progress: Progress,
                    t0: float) -> tuple[dict[str, float], Mining, float, bool]:
    """One epoch of P x K batches: mean figures, the mining used last, the last learning rate, and whether the
    time budget ran out."""
    batch = args.identities * args.per_identity
    total_steps = args.epochs * args.steps_per_epoch
    sampler = MPerClassSampler(data.labels, m=min(args.per_identity, batch), batch_size=batch,
                               length_before_new_iter=args.steps_per_epoch * batch)
    order = np.fromiter(iter(sampler), dtype=np.int64)
    sums = dict.fromkeys(("loss", "triplet_loss", "cosface_loss", "distill_loss", "active_fraction"), 0.0)
    n, lr, mining, budget = 0, args.lr, losses.mining, args.max_minutes * 60
    bar = tqdm(range(args.steps_per_epoch), desc=f"epoch {progress.epoch + 1}/{args.epochs}", leave=False)
    for i in bar:
        idx = order[i * batch : (i + 1) * batch]
        if len(idx) < batch:
            break
        mining = "hard" if progress.step >= args.hard_after * total_steps else args.mining
        elapsed = progress.seconds_before + time.time() - t0
        lr = lr_at(progress.step, total_steps, args.lr, args.warmup_steps, elapsed / budget if budget else 0.0)
        for g in opt.param_groups:
            g["lr"] = lr
        batch_crops = augment(data.crops[idx])
        loss, figures = losses(model(preprocess(batch_crops)), torch.from_numpy(data.labels[idx]), idx,
                               batch_crops, mining)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        progress.step += 1
        n += 1
        for key in sums:
            sums[key] += figures[key]
        bar.set_postfix(loss=f"{figures['loss']:.3f}", active=f"{figures['active_fraction']:.2f}")
        if budget and progress.seconds_before + time.time() - t0 > budget:
            return {k: v / max(n, 1) for k, v in sums.items()}, mining, lr, True
    return {k: v / max(n, 1) for k, v in sums.items()}, mining, lr, False


def training_card(args: argparse.Namespace, config: EncoderConfig, data: Data, losses: Losses, init_from: str,
                  frozen: list[str], progress: Progress, command: str, start: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """The model card's training section for the run so far; ``start``: the --init checkpoint's own training
    section (its lineage: where the start's weights came from, their digest and terms)."""
    targets = losses.targets
    return {
        "training": {
            "start": start,
            "command": command,
            "data": [portable(str(d)) for d in args.data],
            "excluded_pairs": str(args.exclude_pairs) if args.exclude_pairs else None,
            "excluded_folds": parse_folds(args.exclude_folds) if args.exclude_pairs else [],
            "excluded_people_file": str(args.exclude_people) if args.exclude_people else None,
            "excluded_people": data.excluded,
            "people": len(data.names),
            "photos": int(len(data.crops)),
            "epochs": progress.epoch,
            "steps": progress.step,
            "batch": f"{args.identities} identities x {args.per_identity} images",
            "loss": losses.words(),
            "initialised_from": init_from,
            "frozen": frozen,
            "teacher": None if targets is None else {
                "model": "dlib_face_recognition_resnet_model_v1 (dlib's ResNet, public domain: CC0)",
                "pipeline": "dlib HOG detector + 5-point chip on the original photo (facesearch teacher)",
                "embeddings": str(args.teacher),
                "photos_with_target": int(targets[1].sum()),
                "weight": args.distill_weight,
                "matching": args.distill,
                "centring": TEACHER_CENTRING,
            },
            "config": asdict(config),
        }
    }


def main(argv: list[str] | None = None) -> int:
    args = parser("train", __doc__).parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    init = read_checkpoint(args.init) if args.init else None
    config = start_config(args, init)
    data = build_data(args, config)
    (out / "people.txt").write_text("".join(f"{n}\n" for n in data.names))  # who trained: checkable against tests
    model, init_from, frozen = build_start(args, config, init)
    losses = build_losses(args, model, data)
    params = [q for q in model.parameters() if q.requires_grad]
    params += list(losses.cosface.parameters()) if losses.cosface is not None else []
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    progress = resume(args, model, opt, losses)

    preprocess = Preprocess(config)
    augment = Augment(seed=args.seed)
    held = heldout_pairs(args, config)
    log_path = out / "log.csv"
    new_log = not log_path.exists() or not args.resume
    given = argv if argv is not None else sys.argv[2:]
    command = "facesearch train " + " ".join(shlex.quote(portable(a)) for a in given)
    t0 = time.time()
    model.train()
    with log_path.open("w" if new_log else "a", newline="") as log_file:
        writer = csv.DictWriter(log_file, fieldnames=CSV_FIELDS)
        if new_log:
            writer.writeheader()
        for epoch in range(progress.epoch, args.epochs):
            progress.epoch = epoch
            means, mining, lr, stop = train_one_epoch(args, model, data, losses, opt, augment, preprocess,
                                                      progress, t0)
            progress.epoch = epoch + 1
            acc = evaluate_heldout(model, config, held) if held else float("nan")
            row: dict[str, Any] = {"epoch": epoch + 1, "step": progress.step,
                                   "seconds": round(progress.seconds_before + time.time() - t0, 1),
                                   "lr": f"{lr:.2e}", "mining": mining, "heldout_accuracy": f"{acc:.4f}"}
            row.update({key: f"{v:.4f}" for key, v in means.items()})
            writer.writerow(row)
            log_file.flush()
            log.info("epoch %d: %s", epoch + 1, row)
            train_state: dict[str, Any] = {"optimizer": opt.state_dict(), "epoch": epoch + 1, "step": progress.step,
                                           "seconds": progress.seconds_before + time.time() - t0}
            if losses.cosface is not None:
                train_state["cosface"] = losses.cosface.state_dict()
            start = (init.get("card") or {}).get("training") if init is not None else None
            card = training_card(args, config, data, losses, init_from, frozen, progress, command, start)
            save_checkpoint(out / "last.pt", model, card=card, extra={"train_state": train_state})
            plot_curves(log_path, out / "curves.png")
            (out / "card.json").write_text(json.dumps(card, indent=2))
            if stop:
                break
    return 0
