"""Aligned-crop datasets for training: load cached crops into memory, augment batches."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2
from tqdm import tqdm

from model.embedder import EncoderConfig
from model.train.align import align_tree, read_index

log = logging.getLogger(__name__)


def cache_dir_for(root: Path, cache: Path, config: EncoderConfig) -> Path:
    """Where the crops of ``root`` cut for ``config``'s chip are cached: ``cache/<chip>/<tree>``."""
    return cache / chip_key(config) / root.name


def chip_key(config: EncoderConfig) -> str:
    if config.chip == "dlib5":
        return f"dlib5-{config.input_size}-p{config.chip_padding:g}"
    if config.detector != "mtcnn":  # MTCNN's caches predate the detector's name in the key
        return f"template{config.input_size}-{config.detector}"
    return f"template{config.input_size}"


def load_crops(roots: list[Path], cache: Path, config: EncoderConfig, *, exclude: set[str] | None = None,
               workers: int = 2, min_images: int = 1
               ) -> tuple[np.ndarray, np.ndarray, list[str], list[tuple[str, str]]]:
    """Align (if not cached yet) and load every detected face of the trees.

    Returns crops uint8 (N, S, S, 3), labels int64 (N,), the identity name of each label (its folder name:
    one person across trees, as CelebA's aligned photos and its face crops share identity numbers) and each
    crop's key (tree name, path relative to its cache folder).
    People in ``exclude`` (LFW names) and photos without a detected face are left out.
    """
    exclude = exclude or set()
    files: list[tuple[Path, str]] = []
    keys: list[tuple[str, str]] = []
    size = config.input_size
    for root in roots:
        out = cache_dir_for(root, cache, config)
        align_tree(root, out, config, workers=workers)
        for rel, status in sorted(read_index(out).items()):
            person = rel.split("/", 1)[0]
            if status == "detected" and person not in exclude:
                files.append((out / rel, person))
                keys.append((root.name, rel))
    names = sorted({n for _, n in files})
    counts: dict[str, int] = {}
    for _, n in files:
        counts[n] = counts.get(n, 0) + 1
    names = [n for n in names if counts[n] >= min_images]
    label_of = {n: i for i, n in enumerate(names)}
    keep = [i for i, (_, n) in enumerate(files) if n in label_of]
    files, keys = [files[i] for i in keep], [keys[i] for i in keep]
    crops = np.empty((len(files), size, size, 3), dtype=np.uint8)
    for i, (p, _) in enumerate(tqdm(files, desc="load crops")):
        crops[i] = np.asarray(Image.open(p).convert("RGB"))
    labels = np.array([label_of[n] for _, n in files], dtype=np.int64)
    log.info("loaded %d crops of %d people", len(files), len(names))
    return crops, labels, names, keys


class Augment:
    """Per-sample flip, small affine jitter and colour changes on uint8 crops -> uint8 (N, S, S, 3)."""

    def __init__(self, *, seed: int = 0) -> None:
        self.t = v2.Compose([
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.RandomAffine(degrees=8, translate=(0.04, 0.04), scale=(0.92, 1.08))], p=0.7),
            v2.RandomApply([v2.ColorJitter(0.3, 0.3, 0.3, 0.03)], p=0.7),
            v2.RandomGrayscale(p=0.1),
        ])
        torch.manual_seed(seed)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(crops).permute(0, 3, 1, 2)
        out = torch.stack([self.t(img) for img in x])
        return out.permute(0, 2, 3, 1).numpy()
