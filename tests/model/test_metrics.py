"""Verification metrics against naive references."""

from __future__ import annotations

import numpy as np
import pytest

from model.train.metrics import accuracy_at, best_threshold, eer, kfold_accuracy, roc_auc, val_at_far


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    same = np.repeat([True, False], 300)
    dist = np.where(same, rng.normal(0.8, 0.15, 600), rng.normal(1.25, 0.12, 600))
    return dist, same


def test_best_threshold_matches_exhaustive_search(data: tuple[np.ndarray, np.ndarray]) -> None:
    dist, same = data
    t = best_threshold(dist, same)
    naive = max(accuracy_at(dist, same, c) for c in np.concatenate([dist, [dist.min() - 1]]))
    assert accuracy_at(dist, same, t) == pytest.approx(naive)


def test_auc_matches_pair_counting(data: tuple[np.ndarray, np.ndarray]) -> None:
    dist, same = data
    g, i = dist[same], dist[~same]
    naive = ((g[:, None] < i[None, :]).sum() + 0.5 * (g[:, None] == i[None, :]).sum()) / (len(g) * len(i))
    assert roc_auc(dist, same) == pytest.approx(naive)
    assert roc_auc(np.array([0.1, 0.2, 0.3, 0.4]), np.array([True, True, False, False])) == 1.0


def test_kfold_threshold_is_chosen_on_the_other_folds() -> None:
    # fold 1 separable at 1.0, fold 2 separable at 0.5: each fold is judged with the other's threshold
    dist = np.array([0.9, 0.9, 1.1, 1.1, 0.4, 0.4, 0.6, 0.6])
    same = np.array([True, True, False, False, True, True, False, False])
    folds = np.array([1, 1, 1, 1, 2, 2, 2, 2])
    mean, _, thresholds = kfold_accuracy(dist, same, folds)
    assert 0.5 <= thresholds[0] <= 0.6 and 0.9 <= thresholds[1] <= 1.1
    assert mean == pytest.approx(0.5 * (accuracy_at(dist[:4], same[:4], thresholds[0])
                                        + accuracy_at(dist[4:], same[4:], thresholds[1])))


def test_eer_and_val_at_far(data: tuple[np.ndarray, np.ndarray]) -> None:
    dist, same = data
    e = eer(dist, same)
    assert 0.0 < e < 0.2
    val, t = val_at_far(dist, same, 1e-3)
    assert (dist[~same] <= t).mean() <= 1e-3
    assert val == pytest.approx((dist[same] <= t).mean())
    perfect = np.array([0.1, 0.2, 1.5, 1.6])
    labels = np.array([True, True, False, False])
    assert eer(perfect, labels) == 0.0 and val_at_far(perfect, labels, 1e-3)[0] == 1.0


def test_best_threshold_never_splits_equal_distances() -> None:
    """Pairs decided "different" for want of a face all sit at one distance: a threshold there would accept them
    all, so the best threshold lies below them, not in the middle of the tie."""
    dist = np.array([0.1, 0.2, 2.0, 2.0, 2.0, 2.0])
    same = np.array([True, True, True, False, False, False])
    t = best_threshold(dist, same)
    assert 0.2 < t < 2.0
    assert accuracy_at(dist, same, t) == 5 / 6
