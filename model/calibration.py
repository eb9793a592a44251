"""Thresholds from the model card's measured distance distributions.

The card holds histograms of genuine and impostor distances (Euclidean between unit vectors) measured
on people the encoder never saw. From the impostor histogram we read the distance below which a given
fraction of strangers falls: the false-accept rate (FAR) of one comparison. In 1:N search a stranger
gets N chances, so the per-comparison FAR for a target false-positive identification rate (FPIR) is
1 - (1 - FPIR)^(1/N).
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
        t = min(self.threshold_for_far(self.per_comparison_far(fpir, gallery_faces)), self.verify_threshold)
        expected = 1.0 - (1.0 - self.far_at(t)) ** max(1, gallery_faces) if self.has_distribution else float("nan")
        return t, float(expected)
