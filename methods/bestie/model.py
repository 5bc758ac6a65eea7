"""BESTIE's network (Sec. 3.2): Panoptic-DeepLab-style heads on a timm backbone.

Backbone levels (``features_only``, ``pretrained=False``) are bilinearly resized to the finest
level and concatenated — the release's HRNet-W48 fusion of all branches at stride 4 (use
``hrnet_w48`` with ``out_indices=(1, 2, 3, 4)``); a 1×1 conv-BN-ReLU reduces them to
``decoder_channels``. Three heads, each conv3×3(→ ``head_channels``)+ReLU+conv1×1 (release):

- semantic: S logits (background/stuff + things, the canonical semantic index order);
- centre: one heatmap per thing class (class-wise, appendix: +1.0 mAP50 over class-agnostic);
- offset: 2 channels [dy, dx] in input pixels.

All outputs are bilinearly upsampled to the input size. The last convs of the centre and offset
heads start at zero (a harness choice for training from random weights: with PyTorch's default
init the ×200 centre term starts ~100× above its minimum and, through Adam's second-moment memory,
keeps the head from learning in a short schedule — docs/bestie.md; val mAP50 6.5 → 16.8). The embedded profile uses
``regnetx_002`` levels 1–3 (strides 4, 8, 16).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["BestieNet", "Head"]


class Head(nn.Sequential):
    """conv3×3 → ReLU → conv1×1 (the release's head)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int) -> None:
        super().__init__(nn.Conv2d(in_channels, mid_channels, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(mid_channels, out_channels, 1))


class BestieNet(nn.Module):
    """timm backbone + fused stride-4 features + semantic / centre / offset heads.

    ``forward`` returns ``{"semantic": (B, S, H, W), "center": (B, C, H, W), "offset": (B, 2, H, W)}``
    at the input resolution; :meth:`features` gives the fused stride-4 map (for methods that add
    heads, e.g. P2Seg's affinity).
    """

    def __init__(
        self,
        num_semantic: int,
        num_center: int,
        *,
        backbone: str = "resnet18",
        out_indices: Sequence[int] = (1, 2, 3),
        decoder_channels: int = 64,
        head_channels: int = 64,
    ) -> None:
        super().__init__()
        import timm

        self.backbone = timm.create_model(backbone, pretrained=False, features_only=True,
                                          out_indices=tuple(out_indices))
        chans = sum(self.backbone.feature_info.channels())
        self.stride = int(self.backbone.feature_info.reduction()[0])
        self.fuse = nn.Sequential(nn.Conv2d(chans, decoder_channels, 1, bias=False),
                                  nn.BatchNorm2d(decoder_channels), nn.ReLU(inplace=True))
        self.semantic_head = Head(decoder_channels, head_channels, num_semantic)
        self.center_head = Head(decoder_channels, head_channels, num_center)
        self.offset_head = Head(decoder_channels, head_channels, 2)
        for head in (self.center_head, self.offset_head):  # start from "no centre, no offset"
            nn.init.zeros_(head[2].weight)
            nn.init.zeros_(head[2].bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        size = feats[0].shape[-2:]
        up = [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]]
        return self.fuse(torch.cat(up, 1))

    def heads(self, f: torch.Tensor, size: Sequence[int]) -> dict[str, torch.Tensor]:
        """The three heads on the fused features ``f``, upsampled to ``size``."""
        return {name: F.interpolate(head(f), size=tuple(size), mode="bilinear", align_corners=False)
                for name, head in (("semantic", self.semantic_head), ("center", self.center_head),
                                   ("offset", self.offset_head))}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.heads(self.features(x), x.shape[-2:])
