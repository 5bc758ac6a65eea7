"""Test-time helpers (Sec. 4.1): the multi-scale + flip views of an image with its proposals carried
along, the average of the proposal scores over the views, and per-class NMS into detections."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms

from methods.jtsm.segments import SegmentBatch

__all__ = ["average_over_views", "detections", "view_of"]


def view_of(image: torch.Tensor, segments: SegmentBatch, *, size: tuple[int, int], flip: bool
            ) -> tuple[torch.Tensor, SegmentBatch]:
    """One test view of a single image (1, 3, H, W) and its proposals: resized to ``size`` (h, w)
    (bilinear image, nearest superpixels, boxes scaled) and optionally flipped left-right. Proposals
    keep their order, so their scores can be averaged over views."""
    _, _, h, w = image.shape
    nh, nw = size
    img = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
    sp = F.interpolate(segments.superpixels[:, None].float(), size=size, mode="nearest")[:, 0].long()
    scale = torch.tensor([nw / w, nh / h, nw / w, nh / h], device=segments.boxes.device)
    boxes = segments.boxes * scale
    if flip:
        img, sp = img.flip(-1), sp.flip(-1)
        boxes = torch.stack([nw - boxes[:, 2], boxes[:, 1], nw - boxes[:, 0], boxes[:, 3]], 1)
    return img, SegmentBatch(sp, segments.members, boxes, segments.batch_index, segments.scores, ((nh, nw),))


def average_over_views(score_fn: Callable[[torch.Tensor, SegmentBatch], torch.Tensor], image: torch.Tensor,
                       segments: SegmentBatch, *, scales: Sequence[int], flip: bool) -> torch.Tensor:
    """(N, K) proposal scores averaged over every scale (shorter side) and, with ``flip``, its mirror
    (the paper's test: {480, 576, 688, 864, 1200} × flips)."""
    _, _, h, w = image.shape
    total, count = None, 0
    for s in scales:
        size = (max(1, round(h * s / min(h, w))), max(1, round(w * s / min(h, w))))
        for mirrored in ((False, True) if flip else (False,)):
            scores = score_fn(*view_of(image, segments, size=size, flip=mirrored))
            total = scores if total is None else total + scores
            count += 1
    assert total is not None
    return total / count


def detections(boxes: torch.Tensor, scores: torch.Tensor, *, nms_threshold: float, max_per_image: int = 100,
               min_score: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class NMS (IoU > ``nms_threshold`` suppressed) of proposal boxes (N, 4) scored (N, K):
    (kept boxes (D, 4), scores (D,), classes (D,)), best ``max_per_image`` by score."""
    n, k = scores.shape
    cls = torch.arange(k, device=scores.device).repeat(n)
    flat = scores.reshape(-1)
    box = boxes[:, None].expand(n, k, 4).reshape(-1, 4)
    ok = flat > min_score
    box, flat, cls = box[ok], flat[ok], cls[ok]
    keep = batched_nms(box.float(), flat.float(), cls, nms_threshold)[:max_per_image]
    return box[keep], flat[keep], cls[keep]

