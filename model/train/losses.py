"""FaceNet's triplet loss with online mining, kept apart from sampling and reduction so each is testable.

All distances here are squared Euclidean distances between unit vectors (0..4), as in FaceNet.
"""

from __future__ import annotations

from typing import Literal

import torch

Mining = Literal["semihard", "hard", "all"]


def squared_distances(emb: torch.Tensor) -> torch.Tensor:
    """emb: (N, D) unit vectors -> (N, N) squared Euclidean distances, exact zeros on the diagonal."""
    d = (2.0 - 2.0 * emb @ emb.T).clamp_min(0.0)
    return d.fill_diagonal_(0.0)


def mine_triplets(d: torch.Tensor, labels: torch.Tensor, margin: float,
                  mode: Mining = "semihard") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices (a, p, n) of triplets for every anchor-positive pair in the batch.

    semihard: the nearest negative farther than the positive (d_ap < d_an < d_ap + margin; FaceNet 3.2);
              pairs without one contribute no triplet.
    hard:     the nearest negative of the anchor, whatever its distance.
    all:      every negative violating the margin.
    """
    labels = labels.view(-1)
    n = len(labels)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(n, dtype=torch.bool, device=d.device)
    a_idx, p_idx = torch.nonzero(same & ~eye, as_tuple=True)
    if len(a_idx) == 0:
        empty = torch.zeros(0, dtype=torch.long, device=d.device)
        return empty, empty, empty
    d = d.detach()
    d_ap = d[a_idx, p_idx][:, None]  # (P, 1)
    d_an = d[a_idx]  # (P, N)
    neg = ~same[a_idx]  # (P, N)
    if mode == "all":
        valid = neg & (d_an < d_ap + margin)
        pair, n_idx = torch.nonzero(valid, as_tuple=True)
        return a_idx[pair], p_idx[pair], n_idx
    if mode == "hard":
        masked = d_an.masked_fill(~neg, float("inf"))
        best, n_idx = masked.min(dim=1)
        keep = torch.isfinite(best)
        return a_idx[keep], p_idx[keep], n_idx[keep]
    candidates = neg & (d_an > d_ap) & (d_an < d_ap + margin)
    masked = d_an.masked_fill(~candidates, float("inf"))
    best, n_idx = masked.min(dim=1)
    keep = torch.isfinite(best)
    return a_idx[keep], p_idx[keep], n_idx[keep]


def triplet_loss(emb: torch.Tensor, labels: torch.Tensor, margin: float = 0.2,
                 mode: Mining = "semihard") -> tuple[torch.Tensor, dict[str, float]]:
    """Mean of max(0, d_ap - d_an + margin) over mined triplets (0 when none), and mining statistics.

    ``active_fraction`` is the share of all anchor-positive pairs whose mined triplet has a positive
    loss: the figure FaceNet tracks.
    """
    d = squared_distances(emb)
    a, p, n = mine_triplets(d, labels, margin, mode)
    labels = labels.view(-1)
    num_pairs = int(((labels[:, None] == labels[None, :]).sum() - len(labels)).item())
    if len(a) == 0:
        zero = emb.sum() * 0.0  # keeps the graph, gives zero gradients
        return zero, {"triplets": 0.0, "active_fraction": 0.0}
    losses = torch.relu(d[a, p] - d[a, n] + margin)
    active = float((losses > 0).sum().item())
    stats = {"triplets": float(len(a)), "active_fraction": active / max(num_pairs, 1)}
    return losses.mean(), stats


def distillation_loss(emb: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared distance between the student's unit vectors and the teacher's, over rows in ``mask``.

    Embedding matching (a teacher's vector per photo as the target): the teacher's geometry, learned
    from millions of faces, is carried into the student photo by photo. 0 when no row has a target.
    """
    if not bool(mask.any()):
        return emb.sum() * 0.0
    return ((emb[mask] - target[mask]) ** 2).sum(dim=1).mean()


def relational_distillation_loss(emb: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between the student's and the teacher's squared distances, over all pairs
    of rows in ``mask``: the teacher's geometry without asking the student to rotate into its space.
    0 when fewer than two rows have a target.
    """
    if int(mask.sum()) < 2:
        return emb.sum() * 0.0
    d_s = squared_distances(emb[mask])
    d_t = squared_distances(target[mask])
    n = d_s.shape[0]
    return ((d_s - d_t) ** 2).sum() / (n * (n - 1))
