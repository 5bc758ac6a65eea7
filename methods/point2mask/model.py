"""Point2Mask's network (paper 001, Sec. 3.1, Fig. 2) with a Panoptic-DeepLab-style panoptic head.

The paper's network is Panoptic SegFormer (a query-based panoptic head) with two extra branches that
only serve the pseudo labels: the category-wise semantic map P^s (Sec. 3.3.1, learned with Eq. 5) and
the high-level boundary map P^b_high (Sec. 3.3.1, learned with Eq. 6-7). Here the panoptic branch is
``panoptic_head = "deeplab"``: BESTIE's Panoptic-DeepLab-style network
(:class:`methods.bestie.model.BestieNet`: semantic logits, class-wise centre heatmaps, offsets),
reused by subclassing. The two pseudo-label branches are added on the same backbone and decoder:

- ``weak_semantic_head`` — P^s: a head of the decoder's kind on the decoder's semantic features,
  C logits (the paper's semantic decoder, one query per class);
- ``neck`` + ``boundary_head`` — P^b_high: every backbone level projected by a 1x1 conv to
  ``neck_channels`` (the neck of Fig. 2), summed at the finest level by
  :class:`~methods.point2mask.boundary.BoundaryHead` (conv1x1, ReLU, conv1x1, sigmoid).

Only the panoptic branch is used at inference (Sec. 3.4.2).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from methods.bestie.model import BestieNet

from .boundary import BoundaryHead

__all__ = ["PANOPTIC_HEADS", "Point2MaskNet"]

#: The panoptic heads: "deeplab" (implemented) and the paper's "panoptic-segformer" (refused by the config).
PANOPTIC_HEADS = ("deeplab", "panoptic-segformer")


class Point2MaskNet(BestieNet):
    """Backbone + decoder + panoptic heads (:class:`BestieNet`) + P^s head + neck and P^b_high head.

    ``forward`` returns the panoptic outputs only (``semantic``, ``center``, ``offset``);
    :meth:`forward_train` adds ``weak`` (B, C, H, W) P^s logits and ``boundary`` (B, h, w) P^b_high
    probabilities at the finest backbone level.
    """

    def __init__(self, num_semantic: int, num_things: int, *, neck_channels: int = 32,
                 detach_boundary_inputs: bool = False, **network: Any) -> None:
        super().__init__(num_semantic, num_things, **network)
        channels = self.backbone.feature_info.channels()
        self.neck = nn.ModuleList(nn.Conv2d(c, neck_channels, 1) for c in channels)
        self.boundary_head = BoundaryHead(neck_channels, detach_inputs=detach_boundary_inputs)
        self.weak_semantic_head = self.decoder.head(self.decoder.semantic_channels,
                                                    self.decoder.head_widths["semantic"], num_semantic)

    #: the class-specific layers: re-initialised when a run fine-tunes from another dataset's weights (Table 1)
    CLASS_LAYERS = ("semantic_head.", "center_head.", "weak_semantic_head.")

    def forward_train(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        levels = self.backbone(x)
        features = self.decoder(levels)
        size = x.shape[-2:]
        out = self.heads(features, size)
        out["weak"] = F.interpolate(self.weak_semantic_head(features.semantic), size=tuple(size), mode="bilinear",
                                    align_corners=False)
        out["boundary"] = self.boundary_head([proj(level) for proj, level in zip(self.neck, levels)])
        return out

    def load_transferred(self, state: dict[str, torch.Tensor], skip: Sequence[str] = CLASS_LAYERS) -> list[str]:
        """Load ``state`` (another run's ``model.pt`` state_dict) except the class-specific layers ``skip``,
        which keep their fresh initialisation; returns the skipped keys. Every other key must match."""
        own = self.state_dict()
        kept = {k: v for k, v in state.items() if not k.startswith(tuple(skip))}
        missing = [k for k in own if not k.startswith(tuple(skip)) and k not in kept]
        wrong = [k for k, v in kept.items() if k not in own or own[k].shape != v.shape]
        if missing or wrong:
            raise ValueError(f"transferred weights do not fit the network: missing {missing[:5]}, "
                             f"unexpected or mis-shaped {wrong[:5]} (same backbone and widths needed)")
        self.load_state_dict({**own, **kept})
        return sorted(k for k in state if k.startswith(tuple(skip)))
