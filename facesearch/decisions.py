"""Search and verification decisions, the same for the API (``/v1/search``, ``/v1/verify``) and the command line
(``facesearch search``, ``facesearch verify``): which threshold applies, which identity each face of a photo is,
whether two faces are one person.

Distances are Euclidean between unit vectors (0..2); similarity = 1 - d^2/2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from index.errors import NotFound
from index.gallery import Gallery
from index.records import IdentityHit
from model.analysis import AnalyzedFace
from model.calibration import Calibration
from model.faces import Quality

# Faces a decision is less reliable on. A side view: on CFP's people 251-400 (never in a test), the yaw estimated from
# YuNet's five points exceeds 20 degrees for 97.6% of the profile photos and 0.7% of the frontal ones (the smallest
# limit warning about at most 1% of frontal photos: bench/yaw.py, bench/results/yaw-yunet.json).
MIN_FACE_SIZE = 40  # pixels, the shorter side of the box
MIN_BLUR = 30.0  # variance of the Laplacian of the chip
MAX_YAW = 20.0  # degrees


def low_quality(q: Quality) -> list[str]:
    """Why a face is a poor one to decide on (empty when fine); such faces are still searched and stored."""
    out = []
    if q.face_size < MIN_FACE_SIZE:
        out.append(f"small face ({q.face_size:.0f} px): recognition is less reliable below {MIN_FACE_SIZE} px")
    if q.blur < MIN_BLUR:
        out.append(f"blurry face (sharpness {q.blur:.0f}, below {MIN_BLUR:.0f})")
    if abs(q.yaw) > MAX_YAW:
        out.append(f"face turned away ({q.yaw:.0f} degrees): side views are matched less reliably than frontal ones")
    return out


def distance_to_similarity(d: float) -> float:
    return 1.0 - d * d / 2.0


@dataclass(frozen=True)
class Threshold:
    distance: float
    source: Literal["fpir", "verification", "request"]
    far: float | None = None  # false-accept rate of one comparison at this distance
    target_fpir: float | None = None
    expected_fpir: float | None = None  # chance a stranger matches someone in a gallery of gallery_faces
    gallery_faces: int | None = None

    @property
    def similarity(self) -> float:
        return distance_to_similarity(self.distance)


def search_threshold(cal: Calibration, gallery_faces: int, fpir: float, requested: float | None) -> Threshold:
    """The request's threshold, or the one that keeps a stranger's chance of matching anyone at ``fpir``
    for a gallery of this size."""
    if requested is not None:
        return Threshold(requested, "request", far=_nan_none(cal.far_at(requested)), gallery_faces=gallery_faces)
    t, expected = cal.search_threshold(fpir, gallery_faces)
    return Threshold(t, "fpir", far=_nan_none(cal.far_at(t)), target_fpir=fpir, expected_fpir=_nan_none(expected),
                     gallery_faces=gallery_faces)


def verify_threshold(cal: Calibration, requested: float | None) -> Threshold:
    t = requested if requested is not None else cal.verify_threshold
    return Threshold(t, "request" if requested is not None else "verification", far=_nan_none(cal.far_at(t)))


@dataclass(frozen=True)
class FaceDecision:
    face: AnalyzedFace
    match: IdentityHit | None  # the identity granted to this face, under the threshold
    candidates: list[IdentityHit] = field(default_factory=list)

    @property
    def best(self) -> IdentityHit | None:
        """The granted identity, or else the nearest candidate (reported with ``unknown``)."""
        return self.match or (self.candidates[0] if self.candidates else None)


def search(gallery: Gallery, faces: list[AnalyzedFace], threshold: Threshold, k: int) -> list[FaceDecision]:
    """Every face against the gallery: its top-``k`` identities, and at most one face per identity granted."""
    if not faces:
        return []
    queries = np.stack([f.embedding for f in faces if f.embedding is not None])
    results = gallery.search(queries, k=k, threshold=threshold.distance)
    granted = assign_identities([r.identities for r in results], threshold.distance)
    return [FaceDecision(f, g, r.identities) for f, r, g in zip(faces, results, granted, strict=True)]


def search_gallery(gallery: Gallery, cal: Calibration, faces: list[AnalyzedFace], fpir: float,
                   requested: float | None, k: int) -> tuple[Threshold, list[FaceDecision]]:
    """The threshold for the gallery as it is now (its size sets the one for ``fpir``; a store query), then every
    face against it (:func:`search`): one call, for one worker thread."""
    threshold = search_threshold(cal, gallery.searchable_faces, fpir, requested)
    return threshold, search(gallery, faces, threshold, k)


def assign_identities(hits: list[list[IdentityHit]], threshold: float) -> list[IdentityHit | None]:
    """One identity per face in a photo: matches are granted best-first; a face whose best identity
    went to a closer face falls back to its next candidate under the threshold, or unknown."""
    pairs = sorted(((h.distance, fi, h) for fi, row in enumerate(hits) for h in row if h.distance <= threshold),
                   key=lambda t: (t[0], t[1]))
    taken: set[str] = set()
    out: list[IdentityHit | None] = [None] * len(hits)
    for _, fi, h in pairs:
        if out[fi] is None and h.identity not in taken:
            out[fi] = h
            taken.add(h.identity)
    return out


@dataclass(frozen=True)
class Verdict:
    distance: float
    threshold: Threshold
    matched_face_id: int | None = None  # against an identity: its nearest face

    @property
    def same_person(self) -> bool:
        return self.distance <= self.threshold.distance

    @property
    def similarity(self) -> float:
        return distance_to_similarity(self.distance)


def verify_pair(a: np.ndarray, b: np.ndarray, threshold: Threshold) -> Verdict:
    """Two embeddings, float32 (D,)."""
    return Verdict(float(np.linalg.norm(a - b)), threshold)


def verify_against(gallery: Gallery, identity: str, e: np.ndarray, threshold: Threshold) -> Verdict:
    """An embedding against an enrolled identity: the distance to its nearest face."""
    ids, vecs = gallery.embeddings(identity)
    if not len(ids):
        raise NotFound(f"identity {identity!r} has no faces")
    d = np.linalg.norm(vecs - e[None, :], axis=1)
    best = int(np.argmin(d))
    return Verdict(float(d[best]), threshold, int(ids[best]))


def _nan_none(x: float) -> float | None:
    return None if x != x else x
