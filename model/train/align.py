"""`facesearch align`: detect + align every photo of an identity-per-folder tree once, cache the crops.

The cache mirrors the tree (``OUT/<identity>/<file>.png``) and keeps ``OUT/index.tsv`` with one line per
photo: relative path and how it was aligned (``detected`` or ``fallback`` when no face was found and
the centred template was used). Reruns skip photos already in the index (resumable).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from model.embedder import EncoderConfig
from model.encoder import new_config
from model.train.commands import parser

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".pgm", ".bmp", ".webp"}

_detector = None
_aligner = None


def list_images(root: Path) -> list[Path]:
    """Relative paths of the photos in an identity-per-folder tree, sorted."""
    return sorted(p.relative_to(root) for p in root.glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _init_worker(min_face_size: int, config: dict[str, Any]) -> None:
    import torch

    from model.embedder import EncoderConfig, make_aligner
    from model.faces import FaceDetector

    torch.set_num_threads(1)
    global _detector, _aligner
    encoder = EncoderConfig.from_dict(config)
    _detector = FaceDetector(encoder.detector, min_face_size=min_face_size, threads=1)
    _aligner = make_aligner(encoder)


def align_photo(args: tuple[Path, Path, Path]) -> tuple[str, str]:
    from model.train.subject import central_face, fallback_face

    root, out, rel = args
    rgb = np.asarray(Image.open(root / rel).convert("RGB"))
    assert _detector is not None and _aligner is not None
    face = central_face(_detector.detect(rgb), rgb.shape[1], rgb.shape[0])
    status = "detected" if face is not None else "fallback"
    if face is None:
        face = fallback_face(rgb.shape[1], rgb.shape[0])
    dst = (out / rel).with_suffix(".png")
    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_aligner(rgb, face)).save(dst)
    return str(rel.with_suffix(".png")), status


def read_index(out: Path) -> dict[str, str]:
    """relative crop path -> status, from OUT/index.tsv."""
    index = out / "index.tsv"
    if not index.exists():
        return {}
    rows = (line.rstrip("\n").split("\t") for line in index.open() if line.strip())
    return {r[0]: r[1] for r in rows if len(r) == 2}


def align_tree(root: Path, out: Path, config: EncoderConfig, *, workers: int = 2,
               min_face_size: int = 20) -> dict[str, int]:
    """Cut ``config``'s chip (:func:`model.encoder.make_aligner`) from every photo of the tree into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    done = read_index(out)
    todo = [rel for rel in list_images(root) if str(rel.with_suffix(".png")) not in done]
    counts = {"skipped": len(done), "detected": 0, "fallback": 0}
    if not todo:
        return counts
    jobs: Iterator[tuple[Path, Path, Path]] = ((root, out, rel) for rel in todo)
    with (out / "index.tsv").open("a") as index, mp.get_context("spawn").Pool(
        workers, initializer=_init_worker, initargs=(min_face_size, asdict(config))
    ) as pool:
        for rel, status in tqdm(pool.imap_unordered(align_photo, jobs, chunksize=16), total=len(todo),
                                desc=f"align {root.name}"):
            index.write(f"{rel}\t{status}\n")
            index.flush()
            counts[status] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    a = parser("align", __doc__).parse_args(argv)
    config = new_config(a.arch)
    counts = align_tree(a.data, a.out, config, workers=a.workers, min_face_size=a.min_face_size)
    log.info("aligned %s: %s", a.data, counts)
    print(counts)
    return 0
