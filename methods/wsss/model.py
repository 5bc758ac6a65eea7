"""A small semantic-segmentation network for point-supervised training (:mod:`.point_train`).

A timm backbone (``pretrained=False``; ``features_only``) and a light FPN decoder: 1x1 lateral
convs on every returned level, top-down nearest upsampling + add, one 3x3 conv-BN-ReLU on the
finest level, a 1x1 classifier, and bilinear upsampling of the logits to the input size.
With ``resnet18`` and ``out_indices=(1, 2, 3)`` the levels are strides 4, 8, 16 (layer1-3; layer4
is not built), so the decoder predicts at stride 4. Inputs are float images already normalised
by the caller (:func:`normalize_images`).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from methods.backbones import IMAGENET_MEAN, IMAGENET_STD, normalize_images

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "PointSegNet", "normalize_images"]



class PointSegNet(nn.Module):
    """timm backbone + FPN decoder -> (B, C, H, W) logits at the input resolution.

    Args:
        num_classes: C, the number of semantic classes.
        backbone: any timm model name supporting ``features_only`` (created ``pretrained=False``).
        out_indices: the backbone levels fed to the decoder (finest first).
        decoder_channels: width of the FPN.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        backbone: str = "resnet18",
        out_indices: Sequence[int] = (1, 2, 3),
        decoder_channels: int = 64,
    ) -> None:
        super().__init__()
        import timm

        self.backbone = timm.create_model(
            backbone, pretrained=False, features_only=True, out_indices=tuple(out_indices)
        )
        chans = self.backbone.feature_info.channels()
        self.strides = tuple(self.backbone.feature_info.reduction())
        self.lateral = nn.ModuleList(nn.Conv2d(c, decoder_channels, 1) for c in chans)
        self.fuse = nn.Sequential(
            nn.Conv2d(decoder_channels, decoder_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(decoder_channels),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)
        self.num_classes = num_classes

    def forward_lowres(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at the finest decoder stride (``self.strides[0]``)."""
        feats = self.backbone(x)
        y = self.lateral[-1](feats[-1])
        for lat, f in zip(reversed(self.lateral[:-1]), reversed(feats[:-1])):
            y = F.interpolate(y, size=f.shape[-2:], mode="nearest") + lat(f)
        return self.classifier(self.fuse(y))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.forward_lowres(x)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
