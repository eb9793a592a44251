"""Verification metrics on distances (Euclidean between unit vectors; smaller = more similar).

``same`` marks genuine pairs. A pair is accepted as the same person when distance <= threshold.
"""

from __future__ import annotations

import numpy as np


def accuracy_at(dist: np.ndarray, same: np.ndarray, threshold: float) -> float:
    return float(((dist <= threshold) == same).mean())


def best_threshold(dist: np.ndarray, same: np.ndarray) -> float:
    """Threshold maximising accuracy (midpoints between sorted distances; ties -> smallest)."""
    order = np.argsort(dist, kind="stable")
    d, s = dist[order], same[order].astype(np.int64)
    # Accepting the first i pairs: correct = genuines among them + impostors after them.
    genuine_acc = np.concatenate([[0], np.cumsum(s)])
    impostor_rej = (len(s) - s.sum()) - np.concatenate([[0], np.cumsum(1 - s)])
    correct = genuine_acc + impostor_rej
    # a threshold cannot split equal distances (pairs decided "different" for want of a face all lie at one value)
    splittable = np.concatenate([[True], d[1:] > d[:-1], [True]])
    correct = np.where(splittable, correct, -1)
    i = int(np.argmax(correct))
    if i == 0:
        return float(d[0] - 1e-6)
    if i == len(d):
        return float(d[-1] + 1e-6)
    return float((d[i - 1] + d[i]) / 2)


def kfold_accuracy(dist: np.ndarray, same: np.ndarray, folds: np.ndarray) -> tuple[float, float, list[float]]:
    """LFW protocol: each fold's threshold is chosen on the other folds. Returns (mean, std, thresholds).

    With a single fold the threshold is chosen on that fold itself.
    """
    accs, thresholds = [], []
    for f in np.unique(folds):
        test = folds == f
        train = ~test if (~test).any() else test
        t = best_threshold(dist[train], same[train])
        thresholds.append(t)
        accs.append(accuracy_at(dist[test], same[test], t))
    return float(np.mean(accs)), float(np.std(accs)), thresholds


def roc_auc(dist: np.ndarray, same: np.ndarray) -> float:
    """Probability that a random genuine pair is closer than a random impostor pair (ties count half)."""
    g, i = dist[same], dist[~same]
    if len(g) == 0 or len(i) == 0:
        return float("nan")
    allv = np.concatenate([g, i])
    # average ranks handle ties
    order = allv.argsort(kind="stable")
    ranks = np.empty(len(allv))
    sorted_v = allv[order]
    uniq, start, counts = np.unique(sorted_v, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    # genuine should have *small* distances: AUC = P(g < i)
    r_i = ranks[len(g):].sum()
    return float((r_i - len(i) * (len(i) + 1) / 2) / (len(g) * len(i)))


def roc_curve(dist: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(far, tar, thresholds) for every distinct threshold, ascending."""
    thresholds = np.unique(dist)
    g, i = np.sort(dist[same]), np.sort(dist[~same])
    tar = np.searchsorted(g, thresholds, side="right") / max(len(g), 1)
    far = np.searchsorted(i, thresholds, side="right") / max(len(i), 1)
    return np.concatenate([[0.0], far]), np.concatenate([[0.0], tar]), np.concatenate([[thresholds[0] - 1e-6],
                                                                                         thresholds])


def eer(dist: np.ndarray, same: np.ndarray) -> float:
    """Equal error rate: where false accepts = false rejects."""
    far, tar, _ = roc_curve(dist, same)
    frr = 1.0 - tar
    k = int(np.argmin(np.abs(far - frr)))
    return float((far[k] + frr[k]) / 2)


def val_at_far(dist: np.ndarray, same: np.ndarray, far_target: float) -> tuple[float, float]:
    """FaceNet's VAL@FAR: the largest true-accept rate whose false-accept rate is <= far_target.

    Returns (val, threshold).
    """
    far, tar, thr = roc_curve(dist, same)
    ok = far <= far_target
    k = int(np.flatnonzero(ok)[-1])
    return float(tar[k]), float(thr[k])
