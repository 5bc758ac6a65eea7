"""Proposal pooling for Table 1: shape-invariant MoIPool (Eq. 5-8), shape-interpolation MoIPool (TPS),
and torchvision's RoIPool / RoIAlign — batched, device-agnostic, differentiable in the features.

Shape-invariant MoIPool follows the release's kernel: the box is cut into bins with RoIPool's rounding
(cells ``round(x0/s) .. round(x1/s)`` inclusive, bin ``k`` spans ``[floor(k·n/h^p), ceil((k+1)·n/h^p))``
cells, torchvision's ``roi_pool``), a cell counts only when its s×s pixel window touches the mask (Ω,
Eq. 6), each bin outputs the maximum of its valid cells and 0 when it has none (Eq. 5 on non-negative
features). Cost: per proposal, the cells of its bins (``moipool_bin_samples`` = 0) or a fixed k×k per bin
— the features are read per bin through a flat index and Ω is a gather from the superpixel tables
(:mod:`methods.jtsm.segments`); no masked feature map or full-resolution mask per proposal is built.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align, roi_pool

from methods.jtsm.config import JtsmConfig
from methods.jtsm.segments import SegmentBatch, cell_superpixels
from methods.jtsm.tps import shape_interpolation_pool

__all__ = ["moi_pool", "pool_proposals", "psi"]


def _round_half_up(x: torch.Tensor) -> torch.Tensor:
    return torch.floor(x + 0.5)  # C's round() for the non-negative coordinates of boxes


def _bin_cells(start: torch.Tensor, end: torch.Tensor, bins: int, limit: int, samples: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell indices read by each bin along one axis: (N, bins, G) long clamped into the map, and
    (N, bins) bool "the bin holds at least one cell of the map". ``samples`` 0 = every cell."""
    length = (end - start + 1).clamp(min=1).float()
    size = length[:, None] / bins
    k = torch.arange(bins, device=start.device, dtype=torch.float32)[None]
    lo = (torch.floor(k * size) + start[:, None]).clamp(0, limit).long()
    hi = (torch.ceil((k + 1) * size) + start[:, None]).clamp(0, limit).long()
    count = hi - lo
    g = samples if samples > 0 else max(1, int(count.max())) if count.numel() else 1
    j = torch.arange(g, device=start.device)
    idx = lo[..., None] + torch.div(j * count[..., None], g, rounding_mode="floor")
    return idx.clamp(0, limit - 1), count > 0


def moi_pool(features: torch.Tensor, segments: SegmentBatch, *, output_size: int, stride: int,
             bin_samples: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Shape-invariant MoIPool Φ^p (Eq. 5-6) of every proposal: (N, C, h^p, w^p) features and the
    (N, h^p, w^p) bool indicator of bins that hold a valid cell (the Σ of ψ, Eq. 7).

    Gradients flow to the cell that gave each maximum (RoIPool's backward)."""
    b, c, hf, wf = features.shape
    n = len(segments)
    if n == 0:
        return features.new_zeros(0, c, output_size, output_size), features.new_zeros(0, output_size, output_size,
                                                                                          dtype=torch.bool)
    boxes = segments.boxes.float() / stride
    x0, y0, x1, y1 = _round_half_up(boxes).unbind(1)
    rows, row_ok = _bin_cells(y0, y1, output_size, hf, bin_samples)   # (N, P, Gh)
    cols, col_ok = _bin_cells(x0, x1, output_size, wf, bin_samples)   # (N, P, Gw)
    table = cell_superpixels(segments.superpixels, stride, (hf, wf), segments.num_superpixels)
    members = F.pad(segments.members, (0, 1))                         # pad id → False
    flat = features.permute(0, 2, 3, 1).reshape(b * hf * wf, c)
    base = segments.batch_index * (hf * wf)
    bin_ok = row_ok[:, :, None] & col_ok[:, None, :]                  # (N, P, P)
    best = features.new_full((n, output_size, output_size, c), float("-inf"))
    arg = torch.zeros(n, output_size, output_size, c, dtype=torch.long, device=features.device)
    nidx = torch.arange(n, device=features.device)[:, None, None]
    with torch.no_grad():
        for gy in range(rows.shape[2]):
            for gx in range(cols.shape[2]):
                r, q = rows[:, :, None, gy], cols[:, None, :, gx]      # (N, P, 1), (N, 1, P)
                ids = table[segments.batch_index[:, None, None], r, q]  # (N, P, P, K)
                omega = members[nidx[..., None], ids].any(-1) & bin_ok
                cell = base[:, None, None] + r * wf + q                  # (N, P, P)
                value = flat[cell].masked_fill(~omega[..., None], float("-inf"))
                better = value > best
                best = torch.where(better, value, best)
                arg = torch.where(better, cell[..., None], arg)
    valid = torch.isfinite(best)
    pooled = flat.gather(0, arg.view(-1, c)).view(n, output_size, output_size, c)
    pooled = pooled * valid
    return pooled.permute(0, 3, 1, 2).contiguous(), valid.any(-1)


def psi(valid_bins: torch.Tensor, variant: str) -> torch.Tensor:
    """(N,) compensation ψ of Eq. 7 from the (N, h^p, w^p) valid-bin indicator: ``paper``
    h^p·w^p / Σ valid, ``release`` h^p·w^p / (Σ valid + 1), ``none`` 1."""
    bins = valid_bins.shape[1] * valid_bins.shape[2]
    count = valid_bins.flatten(1).sum(1).float()
    if variant == "paper":
        return bins / count.clamp(min=1.0)
    if variant == "release":
        return bins / (count + 1.0)
    if variant == "none":
        return torch.ones_like(count)
    raise ValueError(f"unknown psi variant {variant!r}")


def _rois(segments: SegmentBatch) -> torch.Tensor:
    return torch.cat([segments.batch_index[:, None].to(segments.boxes.dtype), segments.boxes], 1).float()


def pool_proposals(features: torch.Tensor, segments: SegmentBatch, config: JtsmConfig) -> torch.Tensor:
    """(N, C, h^p, w^p) pooled features of every proposal with the configured pooling (Table 1), scaled
    by ψ (Eq. 8, shape-invariant MoIPool) and, when ``config.score_scaling``, by (score + 1) (release)."""
    size, scale = config.pooled_size, 1.0 / config.feature_stride
    if config.pooling == "moipool":
        pooled, valid = moi_pool(features, segments, output_size=size, stride=config.feature_stride,
                                 bin_samples=config.moipool_bin_samples)
        pooled = pooled * psi(valid, config.psi).to(pooled.dtype)[:, None, None, None]
    elif config.pooling == "moipool-interp":
        pooled = shape_interpolation_pool(features, segments, output_size=size, stride=config.feature_stride,
                                          control_points=config.tps_control_points, samples=config.tps_samples)
    elif config.pooling == "roipool":
        pooled = roi_pool(features, _rois(segments), (size, size), scale)
    elif config.pooling == "roialign":
        pooled = roi_align(features, _rois(segments), (size, size), scale, config.roialign_sampling_ratio,
                           aligned=True)
    else:
        raise ValueError(f"unknown pooling {config.pooling!r}")
    if config.score_scaling:
        pooled = pooled * (segments.scores.to(pooled.dtype) + 1.0)[:, None, None, None]
    return pooled
