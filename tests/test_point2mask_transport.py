"""Point2Mask Sinkhorn-Knopp (Eq. 1, Alg. 1): hand cases, convergence, POT, and the release's iterates."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch
from fixtures.point2mask_release import SinkhornDistance

from methods.point2mask import plan_labels, sinkhorn, transport_plan


def test_flat_cost_equal_k_splits_every_pixel_evenly():
    cost = torch.zeros(12, 3)  # 12 pixels, 3 points, every pixel equally far from every point
    supply = torch.full((3,), 4.0)  # Equal Division: 12 / 3
    result = sinkhorn(cost, supply, iterations=80)
    plan = transport_plan(cost, result.u)
    torch.testing.assert_close(plan, torch.full((12, 3), 1 / 3))
    torch.testing.assert_close(plan.sum(0), supply)
    assert result.error < 1e-6


def test_marginals_after_convergence():
    gen = torch.Generator().manual_seed(0)
    cost = torch.rand(60, 4, generator=gen, dtype=torch.float64)
    supply = torch.tensor([5.0, 10.0, 20.0, 25.0], dtype=torch.float64)
    result = sinkhorn(cost, supply, epsilon=0.05, iterations=None, tolerance=1e-9)
    plan = transport_plan(cost, result.u, epsilon=0.05)
    torch.testing.assert_close(plan.sum(1), torch.ones(60, dtype=torch.float64))  # y_j = 1
    torch.testing.assert_close(plan.sum(0), supply, rtol=1e-8, atol=1e-8)  # x_i = k_i
    assert result.error < 1e-9 and result.iterations > 1


def test_converged_plan_equals_pot():
    gen = torch.Generator().manual_seed(1)
    cost = torch.rand(40, 3, generator=gen, dtype=torch.float64)
    supply = torch.tensor([8.0, 12.0, 20.0], dtype=torch.float64)
    result = sinkhorn(cost, supply, epsilon=0.05, iterations=None, tolerance=1e-10)
    ours = transport_plan(cost, result.u, epsilon=0.05).numpy()
    pot = ot.sinkhorn(np.ones(40), supply.numpy(), cost.numpy(), reg=0.05, method="sinkhorn_log", stopThr=1e-12,
                      numItermax=100000)
    np.testing.assert_allclose(ours, pot, atol=1e-7)


def test_release_iterates_match_the_release_sinkhorn():
    """80 unconverged iterations, eps = 1e-3, u = v = 1, a zero-supply point: same labels as the release."""
    gen = torch.Generator().manual_seed(2)
    cost = torch.rand(5, 400, generator=gen) * 0.05 + torch.linspace(0, 0.2, 5)[:, None]
    supply = torch.tensor([100, 150, 0, 90, 60])
    _, pi = SinkhornDistance()(supply, torch.ones(400), cost)
    result = sinkhorn(cost.T.contiguous(), supply.float(), iterations=80)
    assert result.iterations == 80
    assert torch.equal(plan_labels(cost.T, result.u), pi.argmax(0))


def test_sinkhorn_needs_one_stopping_rule():
    with pytest.raises(ValueError, match="exactly one"):
        sinkhorn(torch.zeros(2, 2), torch.ones(2), iterations=None)
