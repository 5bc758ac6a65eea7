"""Pseudo ground truth for the segmentation refinement branches (Sec. 3.4): the mined top segment per
present class, re-estimated by GrabCut, turned into instance-branch targets (Eq. 9) and a stuff map
(Eq. 10)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import roi_align

from methods.jtsm.grabcut import reestimate
from methods.jtsm.segments import SegmentBatch, box_iou

__all__ = ["InstanceTargets", "PseudoGroundTruth", "instance_targets", "mine_pseudo_ground_truth",
           "semantic_targets", "tight_box"]


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), ends exclusive, of a non-empty bool mask."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@dataclass
class PseudoGroundTruth:
    """One mined segment per (image, present class): ``batch_index``, ``classes`` (index over thing +
    stuff classes, things first), ``weights`` (the image score y_c), ``boxes`` (M, 4) and ``masks``
    (M, H, W) bool (padded batch size)."""

    batch_index: torch.Tensor
    classes: torch.Tensor
    weights: torch.Tensor
    boxes: torch.Tensor
    masks: torch.Tensor


@torch.no_grad()
def mine_pseudo_ground_truth(scores: torch.Tensor, image_scores: torch.Tensor, labels: torch.Tensor,
                             segments: SegmentBatch, images: np.ndarray | None, *, mode: str,
                             iterations: int) -> PseudoGroundTruth:
    """Per image and present class, the top-scoring proposal of ``scores`` (N, n^c); its mask is
    re-estimated by GrabCut in ``mode`` within its box when ``images`` (B, H, W, 3) uint8 is given
    (``reestimate`` on), else kept as is. The box is the re-estimated mask's tight box."""
    dev = scores.device
    picks, classes, weights = [], [], []
    for b in range(labels.shape[0]):
        own = (segments.batch_index == b).nonzero().flatten()
        present = labels[b].nonzero().flatten()
        if len(own) and len(present):
            picks.append(own[scores[own][:, present].argmax(0)])
            classes.append(present)
            weights.append(image_scores[b, present])
    if not picks:
        _, h, w = segments.superpixels.shape
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        return PseudoGroundTruth(empty, empty, scores.new_zeros(0), scores.new_zeros(0, 4),
                                 torch.zeros(0, h, w, dtype=torch.bool, device=dev))
    pick = torch.cat(picks)
    masks = segments.dense_masks(pick).cpu().numpy()
    batch = segments.batch_index[pick]
    boxes = []
    for k in range(len(pick)):
        box = tuple(int(v) for v in segments.boxes[pick[k]].round().tolist())
        if images is not None:
            masks[k] = reestimate(images[int(batch[k])], box, masks[k], mode=mode, iterations=iterations)  # type: ignore[arg-type]
        boxes.append(tight_box(masks[k]))
    return PseudoGroundTruth(batch, torch.cat(classes), torch.cat(weights).detach(),
                             torch.tensor(boxes, dtype=torch.float32, device=dev), torch.from_numpy(masks).to(dev))


@dataclass
class InstanceTargets:
    """Eq. 9's training boxes: ``proposals`` (P,) indices, ``classes`` (P,) thing index, ``masks``
    (P, m, m) the pseudo mask cropped to each box, ``weights`` (P,) image scores."""

    proposals: torch.Tensor
    classes: torch.Tensor
    masks: torch.Tensor
    weights: torch.Tensor


@torch.no_grad()
def instance_targets(pseudo: PseudoGroundTruth, segments: SegmentBatch, *, num_things: int, mask_size: int,
                     threshold: float, per_image: int) -> InstanceTargets:
    """Proposals whose box overlaps a thing pseudo ground truth of their image by IoU ≥ ``threshold``
    (at most ``per_image``, highest IoU first) with that pseudo mask cropped to their box (RoIAlign,
    then > 0.5) as target."""
    dev = segments.boxes.device
    things = (pseudo.classes < num_things).nonzero().flatten()
    chosen, owners = [], []
    for b in range(len(segments.image_sizes)):
        own = (segments.batch_index == b).nonzero().flatten()
        seeds = things[pseudo.batch_index[things] == b]
        if len(own) == 0 or len(seeds) == 0:
            continue
        best, which = box_iou(segments.boxes[own], pseudo.boxes[seeds]).max(1)
        keep = (best >= threshold).nonzero().flatten()
        keep = keep[best[keep].argsort(descending=True, stable=True)[:per_image]]
        chosen.append(own[keep])
        owners.append(seeds[which[keep]])
    if not chosen:
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        return InstanceTargets(empty, empty, torch.zeros(0, mask_size, mask_size, device=dev), torch.zeros(0, device=dev))
    proposals, owner = torch.cat(chosen), torch.cat(owners)
    rois = torch.cat([owner[:, None].float(), segments.boxes[proposals].float()], 1)
    crops = roi_align(pseudo.masks[:, None].float(), rois, (mask_size, mask_size), 1.0, 2, aligned=True)
    return InstanceTargets(proposals, pseudo.classes[owner], (crops[:, 0] > 0.5).float(), pseudo.weights[owner])


@torch.no_grad()
def semantic_targets(pseudo: PseudoGroundTruth, *, num_things: int, batch_size: int, ignore_index: int = 255
                     ) -> torch.Tensor:
    """(B, H, W) long stuff-index map for Eq. 10: each stuff pseudo mask painted with its stuff index
    (higher image score on top), thing pseudo masks and unlabelled pixels ``ignore_index``."""
    _, h, w = pseudo.masks.shape
    target = torch.full((batch_size, h, w), ignore_index, dtype=torch.long, device=pseudo.masks.device)
    order = pseudo.weights.argsort(stable=True)
    for k in order.tolist():
        b, c = int(pseudo.batch_index[k]), int(pseudo.classes[k])
        if c >= num_things:
            target[b][pseudo.masks[k]] = c - num_things
    for k in (pseudo.classes < num_things).nonzero().flatten().tolist():
        target[int(pseudo.batch_index[k])][pseudo.masks[k]] = ignore_index
    return target
