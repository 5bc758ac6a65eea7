"""Mask R-CNN: torchvision's ``MaskRCNN`` over :class:`~methods.segmentor.backbone.TimmFPN`, with
per-instance loss weights for soft pseudo labels.

:func:`build_mask_rcnn` assembles the model from :class:`MaskRCNNOptions` (anchors, sampling,
head widths: torchvision's defaults unless set — the embedded profile shrinks them for 128 px
images). Its RoI heads are :class:`WeightedRoIHeads`: each sampled proposal carries the weight of
the ground-truth instance it is matched to (background proposals weight 1), and

- classification: ``sum_i w_i CE_i / n_sampled``,
- box regression: ``sum_{i pos} w_i smoothL1_i / n_sampled``,
- mask: ``sum_{i pos} w_i mean_pixels(BCE_i) / n_pos``,

which are exactly torchvision's ``fastrcnn_loss`` / ``maskrcnn_loss`` when every weight is 1. A
weight-0 instance therefore contributes nothing to these losses (its proposals are neither
foreground nor background). **The RPN stays unweighted**: every pseudo instance, whatever its
weight, is an object for the proposal network.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads, project_masks_on_boxes
from torchvision.ops import MultiScaleRoIAlign

from .backbone import TimmFPN

__all__ = ["MaskRCNNOptions", "WeightedRoIHeads", "build_mask_rcnn", "weighted_fastrcnn_loss",
           "weighted_maskrcnn_loss"]


@dataclass(frozen=True)
class MaskRCNNOptions:
    """Architecture and sampling options; the defaults are torchvision's ``maskrcnn_resnet50_fpn``."""

    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    """One anchor size per pyramid level (the FPN levels, finest first, then ``pool``)."""
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 1000
    rpn_batch_size_per_image: int = 256
    box_batch_size_per_image: int = 512
    representation_size: int = 1024
    """Width of the two-layer MLP box head."""
    mask_head_layers: int = 4
    """3x3 convs of the mask head (each as wide as the FPN)."""
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    detections_per_img: int = 100

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _proposal_weights(targets: list[dict[str, torch.Tensor]], matched_idxs: list[torch.Tensor],
                      labels: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per sampled proposal: the weight of its matched instance if foreground, else 1."""
    out = []
    for t, idx, lab in zip(targets, matched_idxs, labels):
        ones = torch.ones(lab.shape, dtype=torch.float32, device=lab.device)
        w = t.get("weights")
        if w is None or w.numel() == 0:
            out.append(ones)
        else:
            out.append(torch.where(lab > 0, w.to(ones)[idx.clamp(min=0)], ones))
    return out


def weighted_fastrcnn_loss(class_logits: torch.Tensor, box_regression: torch.Tensor, labels: list[torch.Tensor],
                           regression_targets: list[torch.Tensor],
                           weights: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's ``fastrcnn_loss`` with a weight per sampled proposal (normalised by the count)."""
    labels_all = torch.cat(labels)
    targets_all = torch.cat(regression_targets)
    w = torch.cat(weights)
    n = labels_all.numel()
    classification = (F.cross_entropy(class_logits, labels_all, reduction="none") * w).sum() / n
    pos = torch.where(labels_all > 0)[0]
    box_regression = box_regression.reshape(n, box_regression.size(-1) // 4, 4)
    box = F.smooth_l1_loss(box_regression[pos, labels_all[pos]], targets_all[pos], beta=1 / 9, reduction="none")
    return classification, (box.sum(1) * w[pos]).sum() / n


def weighted_maskrcnn_loss(mask_logits: torch.Tensor, proposals: list[torch.Tensor], gt_masks: list[torch.Tensor],
                           gt_labels: list[torch.Tensor], matched_idxs: list[torch.Tensor],
                           weights: list[torch.Tensor]) -> torch.Tensor:
    """torchvision's ``maskrcnn_loss`` with a weight per positive proposal (normalised by the count)."""
    m = mask_logits.shape[-1]
    labels = torch.cat([gl[i] for gl, i in zip(gt_labels, matched_idxs)])
    targets = torch.cat([project_masks_on_boxes(gm, p, i, m) for gm, p, i in zip(gt_masks, proposals, matched_idxs)])
    if targets.numel() == 0:
        return mask_logits.sum() * 0
    w = torch.cat(weights)
    logits = mask_logits[torch.arange(labels.shape[0], device=labels.device), labels]
    per_roi = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(dim=(1, 2))
    return (per_roi * w).sum() / labels.shape[0]


class WeightedRoIHeads(RoIHeads):
    """torchvision ``RoIHeads`` whose training losses weight each proposal by its instance's
    ``targets[i]["weights"]`` (absent = 1). Inference is torchvision's, unchanged."""

    def forward(self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor],
                image_shapes: list[tuple[int, int]], targets: list[dict[str, torch.Tensor]] | None = None):
        if not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        if targets is None:
            raise ValueError("targets are needed in training mode")
        proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        weights = _proposal_weights(targets, matched_idxs, labels)

        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        loss_classifier, loss_box_reg = weighted_fastrcnn_loss(class_logits, box_regression, labels,
                                                               regression_targets, weights)
        losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}

        if self.has_mask():
            positive = [torch.where(lab > 0)[0] for lab in labels]
            mask_proposals = [p[pos] for p, pos in zip(proposals, positive)]
            mask_logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, mask_proposals,
                                                                                image_shapes)))
            losses["loss_mask"] = weighted_maskrcnn_loss(
                mask_logits, mask_proposals, [t["masks"] for t in targets], [t["labels"] for t in targets],
                [idx[pos] for idx, pos in zip(matched_idxs, positive)], [w[pos] for w, pos in zip(weights, positive)],
            )
        return [], losses


def build_mask_rcnn(
    num_classes: int,
    backbone: TimmFPN,
    *,
    min_size: int | tuple[int, ...],
    max_size: int,
    options: MaskRCNNOptions | None = None,
) -> MaskRCNN:
    """torchvision ``MaskRCNN`` on ``backbone`` with :class:`WeightedRoIHeads`.

    Args:
        num_classes: thing classes + 1 (background), torchvision's convention.
        backbone: a :class:`TimmFPN` built with ``extra_pool=True``; its levels ``"0"..`` and ``"pool"``
            must match ``len(options.anchor_sizes)``.
        min_size: shorter side after resizing; a tuple samples one per training image, and the last
            is used at test time (``GeneralizedRCNNTransform``).
        max_size: cap on the longer side.
    """
    o = options or MaskRCNNOptions()
    n_fpn = len(backbone.strides)
    if len(o.anchor_sizes) != n_fpn + 1:
        raise ValueError(f"{len(o.anchor_sizes)} anchor sizes for {n_fpn} FPN levels + pool; give {n_fpn + 1}")
    featmaps = [str(i) for i in range(n_fpn)]
    ch = backbone.out_channels
    anchors = AnchorGenerator(tuple((s,) for s in o.anchor_sizes), (tuple(o.aspect_ratios),) * len(o.anchor_sizes))
    model = MaskRCNN(
        backbone, num_classes=None, min_size=min_size, max_size=max_size,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=o.rpn_pre_nms_top_n_train, rpn_post_nms_top_n_train=o.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=o.rpn_pre_nms_top_n_test, rpn_post_nms_top_n_test=o.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=o.rpn_batch_size_per_image,
        box_roi_pool=MultiScaleRoIAlign(featmaps, output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(ch * 7 * 7, o.representation_size),
        box_predictor=FastRCNNPredictor(o.representation_size, num_classes),
        mask_roi_pool=MultiScaleRoIAlign(featmaps, output_size=14, sampling_ratio=2),
        mask_head=MaskRCNNHeads(ch, (ch,) * o.mask_head_layers, 1),
        mask_predictor=MaskRCNNPredictor(ch, ch, num_classes),
    )
    old: RoIHeads = model.roi_heads
    model.roi_heads = WeightedRoIHeads(
        old.box_roi_pool, old.box_head, old.box_predictor,
        fg_iou_thresh=0.5, bg_iou_thresh=0.5,
        batch_size_per_image=o.box_batch_size_per_image, positive_fraction=0.25, bbox_reg_weights=None,
        score_thresh=o.box_score_thresh, nms_thresh=o.box_nms_thresh, detections_per_img=o.detections_per_img,
        mask_roi_pool=old.mask_roi_pool, mask_head=old.mask_head, mask_predictor=old.mask_predictor,
    )
    return model
