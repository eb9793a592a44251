"""Accuracy as the service answers: each photo's subject through the serving pipeline (decode, YuNet, the template
chip, the shipped encoder; the face nearest the centre), pairs decided at the card's verification threshold. Used by
the test suite's guards on the shipped weights and by ``bench/lfw_served.py``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from model.train.lfw import read_pairs
from model.train.subject import central_face

if TYPE_CHECKING:
    from model.pipeline import FacePipeline


def subjects(pipeline: FacePipeline, root: Path, files: list[str]) -> dict[str, np.ndarray | None]:
    """Each photo's subject (the face nearest the centre) embedded as the service embeds it; None where none."""
    out: dict[str, np.ndarray | None] = {}
    for f in files:
        a = pipeline.analyze((root / f).read_bytes())
        face = central_face([x.face for x in a.faces], a.width, a.height)
        out[f] = next((x.embedding for x in a.faces if x.face is face), None)
    return out


@dataclass(frozen=True)
class Verification:
    accuracy: float  # of the pairs decided right (a pair with a photo without a face counts as wrong)
    threshold: float  # the distance at or under which a pair is called the same person
    pairs: int
    photos: int
    without_face: int


def lfw_as_served(pipeline: FacePipeline, lfw: Path, folds: tuple[int, ...] = (1, 2)) -> Verification:
    """LFW's pairs of ``folds`` (``lfw``: the photo tree, pairs.txt beside it) decided at the pipeline's own
    verification threshold."""
    pairs = [p for p in read_pairs(lfw.parent / "pairs.txt") if p.fold in folds]
    files = sorted({f for p in pairs for f in p.files})
    emb = subjects(pipeline, lfw, files)
    threshold = pipeline.calibration.verify_threshold
    right = [(e1 is not None and e2 is not None and float(np.linalg.norm(e1 - e2)) <= threshold) == p.same
             for p in pairs for e1, e2 in [(emb[p.files[0]], emb[p.files[1]])]]
    return Verification(float(np.mean(right)), float(threshold), len(pairs), len(files),
                        sum(v is None for v in emb.values()))
