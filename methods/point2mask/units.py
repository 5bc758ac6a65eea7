"""Unit numbers k_i of the suppliers (paper 001, Sec. 3.3.3, Eq. 4, Tables 5-6).

- ``"equal"`` — Equal Division: every point supplies (number of thing pixels) / (number of points).
- ``"nearest-point"`` — Nearest gt Point: k_i = pixels whose assignment is point i.
- ``"nearest-centroid"`` — Nearest Centroid (the paper's scheme, Fig. 4): assign pixels to points,
  replace each point by the centroid of its initial mask, recompute the costs from the centroids and
  count the pixels assigned to each centroid (Eq. 4). ``centroid_iterations`` repeats the centroid
  step (Table 6).

The assignment behind the counts is ``k_assignment``: ``"min-cost"`` (Eq. 4: argmin_i c_ij) or the
release's ``"likelihood"``: argmax_i (1 - c_ij / (max c + 1e-5)) * L_i(j), with L_i the class
likelihood of :func:`class_likelihood`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .config import Point2MaskConfig
from .cost import GeodesicCost

__all__ = ["class_likelihood", "assign", "centroids", "unit_numbers"]


def class_likelihood(probs: torch.Tensor, point_classes: np.ndarray, is_thing: np.ndarray) -> torch.Tensor:
    """The release's L_i(j) = P(c_i | j) + sum over the stuff classes present of P(s | j): (n, H, W).

    ``probs`` are the class probabilities already restricted to the classes present (zero elsewhere),
    so the sum runs over the stuff classes of the image."""
    stuff = probs[torch.from_numpy(~is_thing).to(probs.device)].sum(0)
    return probs[torch.from_numpy(np.asarray(point_classes, dtype=np.int64)).to(probs.device)] + stuff


def assign(
    cost: torch.Tensor,
    consumers: torch.Tensor,
    rule: str,
    *,
    likelihood: torch.Tensor | None = None,
    normaliser: float | None = None,
) -> torch.Tensor:
    """Initial (or centroid) assignment: (H, W) long, the chosen point per consumer pixel, n elsewhere.

    Args:
        cost: (n, H, W) costs c_ij.
        consumers: (H, W) bool, the thing pixels.
        rule: ``"min-cost"`` (first minimum) or ``"likelihood"`` (first maximum of
            (1 - c / (normaliser + 1e-5)) * likelihood).
        likelihood: (n, H, W) class likelihood, for ``"likelihood"``.
        normaliser: the largest cost, for ``"likelihood"`` (the release normalises point costs by their
            image-resolution maximum and centroid costs by their grid maximum).
    """
    if rule == "min-cost":
        labels = cost.argmin(0)
    else:
        labels = ((1 - cost / (normaliser + 1e-5)) * likelihood).argmax(0)
    return torch.where(consumers, labels, torch.full_like(labels, cost.shape[0]))


def centroids(labels: torch.Tensor, rows: np.ndarray, cols: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Centroid C_i of each initial mask, replacing point i (Sec. 3.3.3, Fig. 4).

    C_i = floor of the mask's centre of mass. As in the release, the point is kept instead when the
    mask is empty, when C_i falls outside the mask (a non-convex mask), or when the point's grid cell
    corner (row // s * s, col // s * s) is not in the mask.
    """
    n = len(rows)
    lab = labels.cpu().numpy()
    flat = lab.reshape(-1)
    width = labels.shape[1]
    counts = np.bincount(flat, minlength=n + 1)[:n]
    ys, xs = np.divmod(np.arange(flat.size), width)
    with np.errstate(invalid="ignore", divide="ignore"):
        cy = np.bincount(flat, weights=ys, minlength=n + 1)[:n] / counts
        cx = np.bincount(flat, weights=xs, minlength=n + 1)[:n] / counts
    index = np.arange(n)
    cy_i = np.where(counts > 0, np.nan_to_num(cy), 0).astype(np.int64)
    cx_i = np.where(counts > 0, np.nan_to_num(cx), 0).astype(np.int64)
    corner_in = lab[(np.asarray(rows) // stride) * stride, (np.asarray(cols) // stride) * stride] == index
    keep = (counts > 0) & (lab[cy_i, cx_i] == index) & corner_in
    return np.where(keep, cy_i, rows), np.where(keep, cx_i, cols)


def unit_numbers(
    point_cost: GeodesicCost,
    consumers: torch.Tensor,
    rows: np.ndarray,
    cols: np.ndarray,
    config: Point2MaskConfig,
    *,
    cost_from: Callable[[np.ndarray, np.ndarray], GeodesicCost],
    likelihood: torch.Tensor | None = None,
) -> torch.Tensor:
    """Supplies x_i = k_i (n,) float for ``config.unit_number`` (Table 5).

    Args:
        point_cost: costs from the points.
        consumers: (H, W) bool, the thing pixels (the consumers of the OT problem).
        rows, cols: the points' pixels.
        cost_from: computes the costs from other source pixels (the centroids).
        likelihood: (n, H, W) class likelihood, for ``k_assignment = "likelihood"``.
    """
    n = point_cost.image.shape[0]
    if config.unit_number == "equal":
        return torch.full((n,), float(consumers.sum()) / n)
    rule = config.k_assignment
    labels = assign(point_cost.image, consumers, rule, likelihood=likelihood,
                    normaliser=float(point_cost.image.max()))
    if config.unit_number == "nearest-centroid":
        for _ in range(config.centroid_iterations):
            cy, cx = centroids(labels, rows, cols, config.grid_stride)
            cost = cost_from(cy, cx)
            labels = assign(cost.image, consumers, rule, likelihood=likelihood, normaliser=cost.grid_max)
    return torch.bincount(labels.reshape(-1), minlength=n + 1)[:n].float()
