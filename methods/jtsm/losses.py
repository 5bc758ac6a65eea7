"""JTSM's training objective L = L_PM + L_IS + L_SS (Eq. 1): the MIL loss (Eq. 2), the OICR pseudo labels
and refinement loss (Eq. 3-4), the instance mask loss (Eq. 9) and the semantic loss (Eq. 10)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from methods.jtsm.segments import SegmentBatch, box_iou, mask_iou

__all__ = ["RefineTargets", "instance_mask_loss", "mil_loss", "refine_loss", "refine_targets", "semantic_loss"]

_EPS = 1e-6


def mil_loss(image_scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 2: multi-label binary cross-entropy of the image scores y (B, n^c) against the image labels
    t (B, n^c), summed over classes and averaged over images (y clamped into [1e-6, 1 - 1e-6])."""
    y = image_scores.clamp(_EPS, 1 - _EPS)
    t = labels.to(y.dtype)
    return -(t * torch.log(y) + (1 - t) * torch.log(1 - y)).sum(1).mean()


@dataclass
class RefineTargets:
    """Labels of one refinement head: ``classes`` (N,) in [0, K] (K = background), ``weights`` (N,), and
    the pseudo ground truth ``seeds`` (M,) proposal indices with ``seed_classes`` (M,)."""

    classes: torch.Tensor
    weights: torch.Tensor
    seeds: torch.Tensor
    seed_classes: torch.Tensor


@torch.no_grad()
def refine_targets(previous: torch.Tensor, image_scores: torch.Tensor, labels: torch.Tensor,
                   segments: SegmentBatch, *, threshold: float = 0.5, overlap: str = "box") -> RefineTargets:
    """OICR's pseudo labels for head r from the previous head's proposal scores ``previous`` (N, K)
    (S^0 = S^MIL, or S^{r-1}'s foreground columns): per image and present class c the top-scoring
    proposal is the pseudo ground truth; every proposal takes the class of the pseudo ground truth it
    overlaps most if that IoU ≥ ``threshold`` (``box`` or ``mask`` IoU), else background (K). Each
    proposal is weighted by the image score y_c of that pseudo ground truth's class (Eq. 3); an image
    without a present class gives its proposals weight 0."""
    n, k = previous.shape
    classes = torch.full((n,), k, dtype=torch.long, device=previous.device)
    weights = previous.new_zeros(n)
    seeds, seed_classes = [], []
    for b in range(image_scores.shape[0]):
        own = (segments.batch_index == b).nonzero().flatten()
        present = labels[b].nonzero().flatten()
        if len(own) == 0 or len(present) == 0:
            continue
        top = own[previous[own][:, present].argmax(0)]                       # (P,) one seed per class
        iou = (box_iou(segments.boxes[own], segments.boxes[top]) if overlap == "box"
               else mask_iou(segments, own, top))
        best, which = iou.max(1)
        classes[own] = torch.where(best >= threshold, present[which], k)
        weights[own] = image_scores[b, present[which]]
        seeds.append(top)
        seed_classes.append(present)
    cat = (lambda xs: torch.cat(xs) if xs else torch.zeros(0, dtype=torch.long, device=previous.device))
    return RefineTargets(classes, weights, cat(seeds), cat(seed_classes))


def refine_loss(logits: torch.Tensor, targets: RefineTargets) -> torch.Tensor:
    """Eq. 3: softmax cross-entropy of head r's logits (N, K+1) against its pseudo labels, each proposal
    weighted by the image score of its label's pseudo ground truth; averaged over proposals (OICR)."""
    if logits.shape[0] == 0:
        return logits.sum()
    ce = F.cross_entropy(logits, targets.classes, reduction="none")
    return (targets.weights * ce).mean()


def instance_mask_loss(mask_logits: torch.Tensor, classes: torch.Tensor, targets: torch.Tensor,
                       weights: torch.Tensor) -> torch.Tensor:
    """Eq. 9: per-pixel BCE of the predicted mask of each box's pseudo class (class-specific head:
    only that class's map counts) against its pseudo mask (P, m, m), weighted by the image score of
    the class; averaged over boxes. Zero (with a graph) when there is no box."""
    if mask_logits.shape[0] == 0:
        return mask_logits.sum()
    picked = mask_logits[torch.arange(len(classes), device=classes.device), classes]
    bce = F.binary_cross_entropy_with_logits(picked, targets.to(picked.dtype), reduction="none").mean((1, 2))
    return (weights * bce).mean()


def semantic_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Eq. 10: pixel-wise cross-entropy of the stuff logits (B, n^s, h, w), upsampled bilinearly to the
    target (B, H, W) of stuff indices; pixels without a stuff pseudo label are ``ignore_index``. Zero
    (with a graph) when no pixel is labelled."""
    up = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    if not (target != ignore_index).any():
        return up.sum() * 0.0
    return F.cross_entropy(up, target, ignore_index=ignore_index)
