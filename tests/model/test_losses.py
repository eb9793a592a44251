"""Triplet loss and mining against hand-computed values; the P x K sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.train.losses import (
    distillation_loss,
    mine_triplets,
    relational_distillation_loss,
    squared_distances,
    triplet_loss,
)


def emb_2d(points: list[tuple[float, float]]) -> torch.Tensor:
    """Unit vectors at these angles (degrees) on the circle, from (deg, _) pairs."""
    ang = torch.tensor([np.radians(p[0]) for p in points])
    return torch.stack([torch.cos(ang), torch.sin(ang)], dim=1)


def test_squared_distances_of_unit_vectors() -> None:
    e = emb_2d([(0, 0), (90, 0), (180, 0)])
    d = squared_distances(e)
    np.testing.assert_allclose(d.numpy(), [[0, 2, 4], [2, 0, 2], [4, 2, 0]], atol=1e-6)


def test_semihard_picks_nearest_negative_beyond_the_positive() -> None:
    # anchor 0 deg, positive 30 deg; negatives at 10 (hard), 38 and 35 (both semi-hard, the farther one
    # listed first), 60 and 170 (beyond the margin)
    e = emb_2d([(0, 0), (30, 0), (10, 0), (38, 0), (35, 0), (60, 0), (170, 0)])
    labels = torch.tensor([0, 0, 1, 2, 3, 4, 5])
    d = squared_distances(e)
    a, p, n = mine_triplets(d, labels, margin=0.2, mode="semihard")
    pairs = {(int(x), int(y)): int(z) for x, y, z in zip(a, p, n, strict=True)}
    sq = {deg: 2 - 2 * np.cos(np.radians(deg)) for deg in (30, 35, 38, 60)}
    # the case is what it claims: two negatives inside (d_ap, d_ap + margin), the others outside
    assert sq[30] < sq[35] < sq[38] < sq[30] + 0.2 < sq[60]
    assert pairs[(0, 1)] == 4  # 35 degrees: the nearest of the two semi-hard negatives
    # hard mode always takes the nearest negative: 10 degrees
    a, p, n = mine_triplets(d, labels, margin=0.2, mode="hard")
    assert {(int(x), int(y)): int(z) for x, y, z in zip(a, p, n, strict=True)}[(0, 1)] == 2


def test_triplet_loss_hand_computed() -> None:
    # anchor 0, positive 20, negative 28: d_ap = 0.121 < d_an = 0.234 < d_ap + 0.2 (semi-hard)
    e = emb_2d([(0, 0), (20, 0), (28, 0)])
    labels = torch.tensor([0, 0, 1])
    loss, stats = triplet_loss(e, labels, margin=0.2, mode="semihard")
    d_ap = 2 - 2 * np.cos(np.radians(20))
    d_an = 2 - 2 * np.cos(np.radians(28))
    expected_a0 = d_ap - d_an + 0.2
    # anchor 1 (20 deg): negative 28 at 2-2cos8 < d_ap: hard, not semi-hard -> no triplet
    assert stats["triplets"] == 1.0
    assert loss.item() == pytest.approx(expected_a0, abs=1e-5)
    assert stats["active_fraction"] == pytest.approx(0.5)


def test_no_valid_triplet_gives_zero_loss_and_zero_gradient() -> None:
    for labels in (torch.tensor([0, 1, 2, 3]), torch.tensor([5, 5, 5, 5])):  # no positives / no negatives
        e = emb_2d([(0, 0), (90, 0), (180, 0), (270, 0)]).requires_grad_(True)
        loss, stats = triplet_loss(e, labels)
        assert loss.item() == 0.0 and stats["triplets"] == 0.0
        loss.backward()
        assert e.grad is not None and torch.count_nonzero(e.grad) == 0


def test_all_mode_matches_naive_enumeration() -> None:
    torch.manual_seed(0)
    e = torch.nn.functional.normalize(torch.randn(12, 8), dim=1)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    d = squared_distances(e)
    a, p, n = mine_triplets(d, labels, margin=0.5, mode="all")
    got = sorted(zip(a.tolist(), p.tolist(), n.tolist(), strict=True))
    naive = sorted((i, j, k) for i in range(12) for j in range(12) for k in range(12)
                   if i != j and labels[i] == labels[j] and labels[k] != labels[i] and d[i, k] < d[i, j] + 0.5)
    assert got == naive


def test_pk_sampler_batches_hold_p_identities_with_k_images() -> None:
    from pytorch_metric_learning.samplers import MPerClassSampler

    labels = np.repeat(np.arange(20), 5)
    sampler = MPerClassSampler(labels, m=4, batch_size=16, length_before_new_iter=160)
    idx = np.fromiter(iter(sampler), dtype=np.int64)
    assert len(idx) == 160
    for b in range(0, 160, 16):
        _, counts = np.unique(labels[idx[b : b + 16]], return_counts=True)
        assert len(counts) == 4 and set(counts) == {4}


def test_distillation_loss_hand_computed_and_masked() -> None:
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], requires_grad=True)
    target = torch.tensor([[0.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    # rows 0 and 1: squared distances 2 and 0 -> mean 1; row 2 has no target and is ignored
    loss = distillation_loss(emb, target, torch.tensor([True, True, False]))
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert emb.grad is not None and emb.grad[2].abs().sum() == 0
    none = distillation_loss(emb, target, torch.zeros(3, dtype=torch.bool))
    assert none.item() == 0.0 and none.requires_grad


def test_relational_distillation_is_zero_for_a_rotated_teacher_and_masks_rows() -> None:
    torch.manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    q, _ = torch.linalg.qr(torch.randn(8, 8))
    mask = torch.ones(6, dtype=torch.bool)
    # the same geometry in another orientation costs nothing: only distances are matched
    assert relational_distillation_loss(emb, emb @ q, mask).item() == pytest.approx(0.0, abs=1e-6)
    # hand-computed: two rows at squared distance 2 against a teacher at 0 -> (2 - 0)^2 on both ordered pairs / 2
    two = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    same = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    assert relational_distillation_loss(two, same, torch.tensor([True, True, False])).item() == pytest.approx(4.0)
    assert relational_distillation_loss(two, same, torch.tensor([True, False, False])).item() == 0.0
