"""Sinkhorn-Knopp for Point2Mask's transport problem (paper 001, Eq. 1 and Alg. 1).

Suppliers are the thing points i (supply x_i = k_i), consumers the thing pixels j (demand y_j = 1;
the code's cost matrices are (pixels, points)). With
potentials u (points) and v (pixels), the entropic plan is
Gamma_ij = exp((u_i + v_j - c_ij) / eps), and the log-domain iteration of Alg. 1 (the release's
``SinkhornDistance``, u = v = 1 at the start) is

    v_j <- eps * log(y_j + 1e-8) - eps * LSE_i((u_i - c_ij) / eps)                   (columns)
    u_i <- eps * log(x_i + 1e-8) - eps * LSE_j((v_j - c_ij) / eps)                   (rows)

(the release writes both as increments of the old value, which cancels). Substituting the first
line into the second gives one fused update per iteration that needs only u:

    s_ij = softmax_i((u_i - c_ij) / eps),    r_i = sum_j y_j s_ij,
    u_i <- u_i + eps * (log max(x_i, 1e-8) - log r_i)

— one pass over the costs instead of the release's two log-sum-exps over materialised matrices,
and the same iterates (the release's 1e-8 on y_j = 1 is below float32 resolution; pixels the
release gives y_j = 0 are simply left out of ``cost``). The pseudo label of pixel j is
argmax_i Gamma_ij = argmax_i (u_i - c_ij), v_j being constant along i. ``iterations`` reproduces the release's fixed,
unconverged count; ``tolerance`` iterates until the row marginals r_i are within a relative
tolerance of the supplies.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = ["SinkhornResult", "sinkhorn", "transport_plan", "plan_labels"]

#: Floor of the supplies before the log: a zero supply stays finite. The release adds 1e-8 to every
#: supply, which is the same in float32 for the integer counts of Eq. 4 and keeps k exact otherwise.
LOG_FLOOR = 1e-8
#: Softmax exponents are clamped at -UNDERFLOW: exp(-80) ~ 2e-35 is still a normal float32, and such
#: terms are below float32 resolution next to the peak term (1).
UNDERFLOW = 80.0


class SinkhornResult(NamedTuple):
    """Point potentials ``u`` (n,), the iterations run, and the final row-marginal error
    max_i |r_i - x_i| / max(x_i, 1) (measured before the last u update)."""

    u: torch.Tensor
    iterations: int
    error: float


class _ActiveSet:
    """The pixels whose softmax over points is not one-hot near the reference potentials ``u_ref``.

    With the reduced costs c_ij - u_ref_i, their per-pixel minimum at point o(j) (the *owner*) and
    the margins d_ij = (c_ij - u_ref_i) - (c_oj - u_ref_o), a point is a *candidate* of pixel j when
    d_ij <= tau = 2 * delta + GAP * eps. While max_i |u_i - u_ref_i| <= delta (:meth:`valid_for`):

    - every non-candidate i of pixel j has (u_i - c_ij) < (u_o - c_oj) - GAP * eps, i.e.
      s_ij < exp(-GAP). Pixels with a single candidate (most: one object's points are far from the
      next object's) give their whole demand to their owner, counted once in ``base``; only the
      *active* pixels (two or more candidates) are iterated;
    - for a point whose row sum r_i is tiny (beaten everywhere), the terms of its exact log-sum-exp
      over pixels with d_ij > min_j d_ij + 2 * tau are below exp(-GAP) times its largest term, so
      :meth:`row_pixels` (cached per point) is all the exact sum needs.
    """

    GAP = 40.0

    def __init__(self, cost: torch.Tensor, weight: torch.Tensor, u_ref: torch.Tensor, epsilon: float) -> None:
        self.u_ref = u_ref
        self.delta = 2 * self.GAP * epsilon
        self.tau = 2 * self.delta + self.GAP * epsilon
        self.full_cost = cost
        reduced = cost - u_ref
        self.rmin, self.owner = reduced.min(1)
        self.cmin = cost.gather(1, self.owner[:, None])[:, 0]
        active = ((reduced - self.rmin[:, None]) <= self.tau).sum(1) > 1
        single = ~active
        self.index = torch.nonzero(active).squeeze(1)
        self.cost = cost[self.index]
        self.weight = weight[self.index]
        self.base = torch.zeros(cost.shape[1], dtype=cost.dtype, device=cost.device)
        self.base.index_add_(0, self.owner[single], weight[single])
        self.neglected = float(weight.sum()) * math.exp(-self.GAP)
        self._rows: dict[int, torch.Tensor] = {}

    def valid_for(self, u: torch.Tensor) -> bool:
        return float((u - self.u_ref).abs().max()) <= self.delta

    def row_pixels(self, i: int) -> torch.Tensor:
        """Pixels that carry point i's exact row sum (see the class docstring)."""
        if i not in self._rows:
            margin = self.full_cost[:, i] - self.u_ref[i] - self.rmin
            self._rows[i] = torch.nonzero(margin <= margin.min() + 2 * self.tau).squeeze(1)
        return self._rows[i]


def _log_row_sums(u: torch.Tensor, weight: torch.Tensor, active: _ActiveSet, epsilon: float) -> torch.Tensor:
    """log r_i = log sum_j w_j softmax_i((u_i - c_ij) / eps) over all pixels, from the active set.

    Rows whose sum is so small that the neglected mass could matter (a point beaten everywhere, e.g.
    one with zero supply) are recomputed exactly in the log domain, so their potential moves as in
    the release's log-sum-exp.
    """
    a = (u - active.cost) / epsilon
    peak = a.max(1, keepdim=True).values
    e = torch.exp((a - peak).clamp_min(-UNDERFLOW))  # clamped: no denormals (slow on CPUs), no effect
    z = e.sum(1, keepdim=True)
    r = active.base + (active.weight[None] @ (e / z))[0]
    log_r = torch.log(r.clamp_min(torch.finfo(r.dtype).tiny))
    unresolved = torch.nonzero(r < active.neglected * 1e8).squeeze(1).tolist()
    if unresolved:
        lse = (u[active.owner] - active.cmin) / epsilon  # LSE_k of a one-hot pixel, to exp(-GAP)
        lse[active.index] = (peak + torch.log(z))[:, 0]
        for i in unresolved:
            j = active.row_pixels(i)
            terms = (u[i] - active.full_cost[j, i]) / epsilon - lse[j] + torch.log(weight[j])
            log_r[i] = torch.logsumexp(terms, dim=0)
    return log_r


def sinkhorn(
    cost: torch.Tensor,
    supply: torch.Tensor,
    demand: torch.Tensor | None = None,
    *,
    epsilon: float = 1e-3,
    iterations: int | None = 80,
    tolerance: float | None = None,
    max_iterations: int = 100000,
) -> SinkhornResult:
    """Log-domain Sinkhorn-Knopp from u = v = 1 (Alg. 1), returning the point potentials.

    Args:
        cost: (m, n) transport costs c_ij, pixel j (rows) by point i (columns).
        supply: (n,) unit numbers x_i = k_i (Eq. 4), sum = sum of ``demand``.
        demand: (m,) consumer demands y_j; None = 1 per pixel (Alg. 1 line 5).
        epsilon: entropic regularisation (release: 1e-3).
        iterations: a fixed count (release: 80, not converged); None = run to ``tolerance``.
        tolerance: with ``iterations=None``, iterate until max_i |r_i - x_i| / max(x_i, 1) < tolerance,
            with eps-scaling (:func:`_epsilon_schedule`) from u = 1.
        max_iterations: cap on the total updates of the converged mode; reaching it raises RuntimeError.

    Returns:
        :class:`SinkhornResult`.
    """
    if (iterations is None) == (tolerance is None):
        raise ValueError("give exactly one of iterations (fixed count) and tolerance (converged)")
    m, n = cost.shape
    weight = torch.ones(m, dtype=cost.dtype, device=cost.device) if demand is None else demand.to(cost)
    supply = supply.to(cost)
    u = torch.ones(n, dtype=cost.dtype, device=cost.device)
    if iterations is not None:
        u, error, _ = _iterate(u, cost, weight, supply, epsilon, iterations, None)
        return SinkhornResult(u, iterations, error)
    total = 0
    for eps in _epsilon_schedule(cost, epsilon):
        u, error, used = _iterate(u, cost, weight, supply, eps, max_iterations - total, tolerance)
        total += used
        if error >= tolerance:
            raise RuntimeError(f"Sinkhorn did not reach tolerance {tolerance} at eps {eps:.3g} in "
                               f"{max_iterations} iterations (error {error:.3g})")
    return SinkhornResult(u, total, error)


def _epsilon_schedule(cost: torch.Tensor, epsilon: float) -> list[float]:
    """eps-scaling for the converged mode: halve from the cost range down to ``epsilon``.

    Every stage runs to the tolerance from the previous stage's potentials (stopping the coarse
    stages early leaves the last one tens of thousands of updates); the last stage solves the problem
    at ``epsilon``, so the plan is the same (the entropic optimum is unique), reached in far fewer
    updates than from u = 1 at eps = 1e-3."""
    spread = float((cost.max(1).values - cost.min(1).values).max()) if cost.numel() else 0.0
    schedule = [epsilon]
    while schedule[-1] * 2 < spread:
        schedule.append(schedule[-1] * 2)
    return schedule[::-1]


def _iterate(
    u: torch.Tensor, cost: torch.Tensor, weight: torch.Tensor, supply: torch.Tensor, epsilon: float,
    limit: int, tolerance: float | None,
) -> tuple[torch.Tensor, float, int]:
    """Fused updates at one eps: ``limit`` of them, or until the row error is below ``tolerance``.

    Returns the potentials, the row error measured before the last update, and the updates made."""
    log_x = torch.log(supply.clamp_min(LOG_FLOOR))
    scale = supply.clamp_min(1.0)
    active = _ActiveSet(cost, weight, u, epsilon)
    error = float("inf")
    for t in range(limit):
        if not active.valid_for(u):
            active = _ActiveSet(cost, weight, u, epsilon)
        log_r = _log_row_sums(u, weight, active, epsilon)
        error = float(((log_r.exp() - supply).abs() / scale).max())
        if tolerance is not None and error < tolerance:
            return u, error, t
        u = u + epsilon * (log_x - log_r)
    return u, error, limit


def transport_plan(cost: torch.Tensor, u: torch.Tensor, demand: torch.Tensor | None = None, *, epsilon: float = 1e-3) -> torch.Tensor:
    """Gamma (m, n) after the column update for potentials ``u``: y_j * softmax_i((u_i - c_ij) / eps).

    Its column sums are the demands exactly; its row sums are the r_i of the next update."""
    weight = torch.ones(cost.shape[0], dtype=cost.dtype, device=cost.device) if demand is None else demand.to(cost)
    return weight[:, None] * torch.softmax((u - cost) / epsilon, dim=1)


def plan_labels(cost: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """argmax_i Gamma_ij = argmax_i (u_i - c_ij) for every pixel j: (m,) point indices (Alg. 1 line 10)."""
    return torch.argmax(u - cost, dim=1)
