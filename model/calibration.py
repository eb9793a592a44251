"""Thresholds from the model card's measurements.

Search: the card's ``openset`` table (``facesearch calibrate-openset``) holds, for gallery sizes from a hundred
faces up and for target false-positive identification rates (FPIR, the share of strangers matched to someone), the
distance measured to keep that rate. The threshold for a gallery is interpolated in log size and log FPIR between
them, and extrapolated in log size beyond the largest gallery measured.

A card without that table (older weights) falls back to the impostor histogram (distances between photos of
different people the encoder never saw) and independence: the per-comparison false-accept rate (FAR) for a target
FPIR over N faces is 1 - (1 - FPIR)^(1/N). On in-the-wild photos that let three times too many strangers through.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class Calibration:
    def __init__(self, card: dict[str, Any]) -> None:
        dist = card.get("distributions") or {}
        thresholds = card.get("thresholds") or {}
        self.verify_threshold = float(thresholds.get("verification", 1.0))
        self.edges = np.asarray(dist.get("bin_edges", []), dtype=np.float64)
        impostor = np.asarray(dist.get("impostor_counts", []), dtype=np.float64)
        self.impostor_pairs = float(impostor.sum())
        # cdf[i] = fraction of impostor pairs with distance < edges[i + 1]
        self.impostor_cdf = np.cumsum(impostor) / self.impostor_pairs if self.impostor_pairs else np.zeros(0)
        table = card.get("openset") or {}
        self.openset_sizes = np.log(np.asarray(table.get("gallery_faces", []), dtype=np.float64))
        self.openset_fpirs = np.log(np.asarray(table.get("fpir", []), dtype=np.float64))
        self.openset_thresholds = np.asarray(table.get("thresholds", []), dtype=np.float64)

    @property
    def has_openset(self) -> bool:
        return (len(self.openset_sizes) >= 2 and len(self.openset_fpirs) >= 1
                and self.openset_thresholds.shape == (len(self.openset_sizes), len(self.openset_fpirs)))

    @property
    def has_distribution(self) -> bool:
        return self.impostor_pairs > 0 and len(self.edges) == len(self.impostor_cdf) + 1

    def far_at(self, threshold: float) -> float:
        """Fraction of impostor comparisons at distance <= threshold (linear within a bin)."""
        if not self.has_distribution:
            return float("nan")
        cdf = np.concatenate([[0.0], self.impostor_cdf])  # cdf[i]: fraction below edges[i]
        return float(np.interp(threshold, self.edges, cdf))

    def threshold_for_far(self, far: float) -> float:
        """The largest bin edge whose impostor FAR does not exceed ``far``."""
        if not self.has_distribution:
            return self.verify_threshold
        ok = np.flatnonzero(self.impostor_cdf <= far)
        if len(ok) == 0:
            return float(self.edges[0])
        return float(self.edges[ok[-1] + 1])

    @staticmethod
    def per_comparison_far(fpir: float, gallery_faces: int) -> float:
        n = max(1, gallery_faces)
        return float(-np.expm1(np.log1p(-fpir) / n))

    def search_threshold(self, fpir: float, gallery_faces: int) -> tuple[float, float]:
        """(threshold, expected FPIR) for a gallery of this many faces; never looser than verification."""
        if self.has_openset:
            t, expected = self._measured_threshold(fpir, gallery_faces)
            return min(t, self.verify_threshold), expected
        t = min(self.threshold_for_far(self.per_comparison_far(fpir, gallery_faces)), self.verify_threshold)
        expected = 1.0 - (1.0 - self.far_at(t)) ** max(1, gallery_faces) if self.has_distribution else float("nan")
        return t, float(expected)

    def _measured_threshold(self, fpir: float, gallery_faces: int) -> tuple[float, float]:
        """The open-set table read at this size and rate: linear in log size (extended past both ends along the
        nearest two sizes), linear in log rate within the measured rates (a rate outside them is held at the
        nearest, and that rate is the expected one)."""
        log_n = np.log(max(1, gallery_faces))
        sizes, rows = self.openset_sizes, self.openset_thresholds
        i = int(np.clip(np.searchsorted(sizes, log_n) - 1, 0, len(sizes) - 2))
        w = (log_n - sizes[i]) / (sizes[i + 1] - sizes[i])
        column = rows[i] + w * (rows[i + 1] - rows[i])  # the threshold for each measured rate at this size
        log_f = float(np.clip(np.log(fpir), self.openset_fpirs[0], self.openset_fpirs[-1]))
        t = float(np.interp(log_f, self.openset_fpirs, column)) if len(column) > 1 else float(column[0])
        return t, float(np.exp(log_f))
