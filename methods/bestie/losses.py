"""BESTIE's objective (Sec. 3.5, Eqs. 3–6; Listing 6) and the hard-pixel cross-entropy.

    L = λ_center·L_center + λ_offset·L_offset + λ_sem·L_sem,     λ = 200, 0.01, 1   (Eq. 6)

- L_center (Eq. 3): weighted squared error of the class-wise centre map, summed over channels,
  divided by |P| = the number of pixels with weight > 0 (instance-aware guidance: only the labelled
  instance pixels have weight; without IAG every pixel has weight 1).
- L_offset (Eq. 4): weighted L1 of the offsets, summed over [dy, dx], divided by |P|.
- The pseudo and refined terms of L_center and L_offset are summed (Eqs. 3–4, Listing 1) or
  averaged (release, 0.5 each): ``combine``.
- L_sem (Eq. 5): cross-entropy against the WSSS map (255 ignored), the mean over all pixels
  (paper) or over the top ``hard_pixel_ratio`` fraction of per-pixel losses (release: DeepLab's
  hard-pixel CE with 0.2; :func:`topk_cross_entropy`, also P2Seg's ``hard_pixel_ratio``), the
  fraction taken of all pixels, ignored ones at loss 0 (release) or of the labelled ones (``pool``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["IGNORE_INDEX", "HardPixelPool", "OffsetLoss", "LossWeights", "InstanceTargets", "topk_cross_entropy",
           "weighted_center_loss", "weighted_offset_loss", "bestie_loss"]

IGNORE_INDEX = 255

#: Which pixels the hard-pixel CE keeps its fraction of (:func:`topk_cross_entropy`).
HardPixelPool = Literal["all", "labelled"]


def topk_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, *, ratio: float = 1.0, ignore_index: int = IGNORE_INDEX,
    pool: HardPixelPool = "labelled",
) -> torch.Tensor:
    """DeepLab's hard-pixel (OHEM) cross-entropy of the whole batch: the mean of its largest per-pixel
    CE losses.

    - ``pool="labelled"``: the ``ceil(ratio · N)`` largest of the N non-ignored pixels (ratio 1 = the
      plain mean CE over the labelled pixels);
    - ``pool="all"`` (the release's ``DeepLabCE``): the ``int(ratio · N)`` largest (at least one) of
      all N pixels, ignored pixels counted with loss 0 (ratio 1 = the sum over the labelled pixels
      divided by every pixel).

    Args:
        logits: (B, S, H, W); target: (B, H, W) long with ``ignore_index`` for unlabelled pixels.
        ratio: fraction in (0, 1] of the pool kept.
    Returns a scalar; an exact 0 with a graph when no pixel is labelled.
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    if pool not in ("all", "labelled"):
        raise ValueError(f"pool must be 'all' or 'labelled', got {pool!r}")
    losses = F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="none")
    if not bool((target != ignore_index).any()):
        return logits.sum() * 0.0
    if pool == "all":
        losses = losses.reshape(-1)  # ignored pixels: loss 0
        k = max(int(ratio * losses.numel()), 1)
    else:
        losses = losses[target != ignore_index]
        k = math.ceil(ratio * losses.numel())
    if k < losses.numel():
        losses = torch.topk(losses, k, sorted=False).values
    return losses.mean()


def _normalised(weighted: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    count = (weight > 0).sum()
    return weighted.sum() / count.clamp(min=1)


def weighted_center_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Σ_p w_p Σ_c (pred − target)² / |{p: w_p > 0}| (Eq. 3); pred/target (B, C, H, W), weight (B, H, W)."""
    return _normalised(((pred.float() - target) ** 2).sum(1) * weight, weight)


OffsetLoss = Literal["l1", "smooth-l1"]


def weighted_offset_loss(
    pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, kind: OffsetLoss = "l1"
) -> torch.Tensor:
    """Σ_p w_p (ℓ(Δdy) + ℓ(Δdx)) / |{p: w_p > 0}| (BESTIE Eq. 4: ℓ = |·|; P2Seg Eq. 3: ℓ = smooth L1
    with β = 1 px); pred/target (B, 2, H, W), weight (B, H, W)."""
    if kind == "l1":
        err = (pred.float() - target).abs()
    elif kind == "smooth-l1":
        err = F.smooth_l1_loss(pred.float(), target, reduction="none", beta=1.0)
    else:
        raise ValueError(f"offset loss must be 'l1' or 'smooth-l1', got {kind!r}")
    return _normalised(err.sum(1) * weight, weight)


@dataclass(frozen=True)
class LossWeights:
    """λ of Eq. 6 (paper, after Panoptic-DeepLab): centre 200, offset 0.01, semantic 1."""

    center: float = 200.0
    offset: float = 0.01
    semantic: float = 1.0


@dataclass
class InstanceTargets:
    """Centre/offset supervision of one kind (pseudo or refined) for a batch.

    ``offset`` (B, 2, H, W) with ``offset_weight`` (B, H, W); ``center`` (B, C, H, W) with
    ``center_weight`` (B, H, W), or None when the kind has no centre term.
    """

    offset: torch.Tensor
    offset_weight: torch.Tensor
    center: torch.Tensor | None = None
    center_weight: torch.Tensor | None = None


def bestie_loss(
    *,
    semantic_logits: torch.Tensor,
    center: torch.Tensor,
    offset: torch.Tensor,
    semantic_target: torch.Tensor,
    pseudo: InstanceTargets,
    refined: InstanceTargets | None,
    weights: LossWeights = LossWeights(),
    combine: Literal["sum", "mean"] = "sum",
    hard_pixel_ratio: float | None = None,
    hard_pixel_pool: HardPixelPool = "labelled",
    offset_loss: OffsetLoss = "l1",
) -> dict[str, torch.Tensor]:
    """Eq. 6 for one batch: ``{"loss", "semantic", "center", "offset", "center_pseudo", "offset_pseudo",
    ["center_refined"], ["offset_refined"]}`` (scalar tensors; center/offset before λ).

    ``hard_pixel_ratio`` None = plain CE over the labelled pixels (paper Eq. 5); a ratio =
    :func:`topk_cross_entropy` of ``hard_pixel_pool``.
    ``offset_loss``: L1 (BESTIE Eq. 4) or smooth L1 (P2Seg Eq. 3).
    """
    out: dict[str, torch.Tensor] = {}
    out["semantic"] = (topk_cross_entropy(semantic_logits, semantic_target) if hard_pixel_ratio is None else
                       topk_cross_entropy(semantic_logits, semantic_target, ratio=hard_pixel_ratio,
                                          pool=hard_pixel_pool))
    zero = center.sum() * 0.0
    kinds = [("pseudo", pseudo)] + ([("refined", refined)] if refined is not None else [])
    center_terms, offset_terms = [], []
    for name, t in kinds:
        out[f"offset_{name}"] = weighted_offset_loss(offset, t.offset, t.offset_weight, offset_loss)
        offset_terms.append(out[f"offset_{name}"])
        if t.center is not None and t.center_weight is not None:
            out[f"center_{name}"] = weighted_center_loss(center, t.center, t.center_weight)
            center_terms.append(out[f"center_{name}"])
    scale = 1.0 / len(kinds) if combine == "mean" else 1.0
    if combine not in ("sum", "mean"):
        raise ValueError(f"combine must be 'sum' or 'mean', got {combine!r}")
    out["center"] = scale * sum(center_terms, zero)
    out["offset"] = scale * sum(offset_terms, zero)
    out["loss"] = weights.center * out["center"] + weights.offset * out["offset"] + weights.semantic * out["semantic"]
    return out
