"""JTSM's network (Fig. 2): a backbone feature map, the panoptic mining branch (pooling → two FC →
WSDDN + n^r refinement heads), the instance branch on RoIAlign features and the semantic branch on the
full map; and the training objective of one batch, L = L_MIL + Σ_r L_PR^r + L_IS + L_SS (Eq. 1, 4)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torchvision.ops import roi_align

from methods.jtsm.config import JtsmConfig
from methods.jtsm.heads import InstanceMaskHead, ProposalFeatures, RefineHeads, SemanticHead, WsddnHead
from methods.jtsm.losses import instance_mask_loss, mil_loss, refine_loss, refine_targets, semantic_loss
from methods.jtsm.moipool import pool_proposals
from methods.jtsm.pseudo import instance_targets, mine_pseudo_ground_truth, semantic_targets
from methods.jtsm.segments import SegmentBatch

__all__ = ["JtsmNet", "JtsmOutputs"]


@dataclass
class JtsmOutputs:
    """One forward pass: the feature map, S^MIL (N, n^c), image scores y (B, n^c), the refinement
    logits S^r (N, K_r + 1) and the stuff logits (B, n^s, h, w)."""

    features: torch.Tensor
    mil_scores: torch.Tensor
    image_scores: torch.Tensor
    refine_logits: list[torch.Tensor]
    semantic_logits: torch.Tensor


class JtsmNet(nn.Module):
    """``backbone`` maps (B, 3, H, W) normalised images to a list whose last entry is the stride-
    ``config.feature_stride`` map of ``channels`` channels (a ``methods.backbones.feature_extractor``
    with one ``out_indices``). Classes: ``num_things`` thing classes first, then ``num_stuff``."""

    def __init__(self, config: JtsmConfig, *, backbone: nn.Module, channels: int, num_things: int,
                 num_stuff: int) -> None:
        super().__init__()
        self.config = config
        self.num_things, self.num_stuff = num_things, num_stuff
        self.backbone = backbone
        size = config.pooled_size
        self.proposal_features = ProposalFeatures(channels * size * size, config.fc_dim, config.dropout)
        self.mil = WsddnHead(config.fc_dim, num_things + num_stuff)
        self.refine_classes = num_things + num_stuff if config.refine_stuff else num_things
        self.refine = RefineHeads(config.fc_dim, self.refine_classes, config.n_refine)
        self.instance = InstanceMaskHead(channels, config.mask_head_dim, num_things)
        # a things-only network (the instance and WSOD settings, Sec. 4.3-4.4) has no semantic branch
        self.semantic = SemanticHead(channels, config.mask_head_dim, num_stuff) if num_stuff else None

    def forward(self, images: torch.Tensor, segments: SegmentBatch) -> JtsmOutputs:
        features = self.backbone(images)[-1]
        x = self.proposal_features(pool_proposals(features, segments, self.config))
        mil_scores, image_scores = self.mil(x, segments.batch_index, images.shape[0])
        semantic = self.semantic(features) if self.semantic is not None else \
            features.new_zeros(features.shape[0], 0, *features.shape[2:])
        return JtsmOutputs(features, mil_scores, image_scores, self.refine(x), semantic)

    def proposal_scores(self, outputs: JtsmOutputs) -> torch.Tensor:
        """(N, n^c) test scores: the mean of the refinement heads' softmax foreground scores (Sec. 3.2);
        S^MIL when n^r = 0 and, with the release's thing-only heads, for the stuff columns."""
        if not outputs.refine_logits:
            return outputs.mil_scores
        mean = torch.stack([torch.softmax(s, 1)[:, :-1] for s in outputs.refine_logits]).mean(0)
        return mean if self.config.refine_stuff else torch.cat([mean, outputs.mil_scores[:, self.num_things:]], 1)

    def instance_masks(self, features: torch.Tensor, boxes: torch.Tensor, batch_index: torch.Tensor
                       ) -> torch.Tensor:
        """(n, n^t, m, m) mask logits of boxes (n, 4) from RoIAlign features (m/2 × m/2)."""
        rois = torch.cat([batch_index[:, None].to(boxes.dtype), boxes], 1).float()
        half = self.config.mask_size // 2
        pooled = roi_align(features, rois, (half, half), 1.0 / self.config.feature_stride,
                           self.config.roialign_sampling_ratio, aligned=True)
        return self.instance(pooled)

    def training_losses(self, images: torch.Tensor, segments: SegmentBatch, labels: torch.Tensor,
                        rgb: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """Every term of Eq. 1 for one batch. ``labels`` (B, n^c) image labels (things then stuff);
        ``rgb`` (B, H, W, 3) uint8 the same images for GrabCut (needed when ``config.reestimate``)."""
        cfg = self.config
        out = self(images, segments)
        losses = {"mil": mil_loss(out.image_scores, labels)}
        previous = out.mil_scores.detach()
        image_scores = out.image_scores.detach().clamp(0, 1)
        head_labels = labels[:, :self.refine_classes]
        for r, logits in enumerate(out.refine_logits):
            targets = refine_targets(previous[:, :self.refine_classes], image_scores, head_labels, segments,
                                     threshold=cfg.refine_iou_threshold, overlap=cfg.refine_iou)
            losses[f"refine{r + 1}"] = refine_loss(logits, targets)
            previous = torch.softmax(logits.detach(), 1)[:, :-1]
        if cfg.loss_instance or (cfg.loss_semantic and self.num_stuff):
            scores = self.proposal_scores(JtsmOutputs(out.features, out.mil_scores.detach(), image_scores,
                                                      [s.detach() for s in out.refine_logits], out.semantic_logits))
            if cfg.reestimate and rgb is None:
                raise ValueError("jtsm.reestimate needs the RGB images for GrabCut")
            pseudo = mine_pseudo_ground_truth(scores, image_scores, labels, segments,
                                              rgb if cfg.reestimate else None, mode=cfg.grabcut_mode,
                                              iterations=cfg.grabcut_iterations)
            if cfg.loss_instance:
                t = instance_targets(pseudo, segments, num_things=self.num_things, mask_size=cfg.mask_size,
                                     threshold=cfg.refine_iou_threshold, per_image=cfg.mask_boxes_per_image)
                logits = self.instance_masks(out.features, segments.boxes[t.proposals],
                                             segments.batch_index[t.proposals])
                losses["instance"] = instance_mask_loss(logits, t.classes, t.masks, t.weights)
            if cfg.loss_semantic and self.num_stuff:
                target = semantic_targets(pseudo, num_things=self.num_things, batch_size=images.shape[0])
                losses["semantic"] = semantic_loss(out.semantic_logits, target)
        return losses
