"""timm backbone + torchvision FPN: the feature pyramid every segmentor of the harness shares.

``TimmFPN`` wraps ``timm.create_model(name, features_only=True)`` (no weights are downloaded;
``weights`` loads a local checkpoint) and :class:`torchvision.ops.FeaturePyramidNetwork`. Its
forward returns an ``OrderedDict`` of ``out_channels``-wide maps named ``"0"``, ``"1"``, ... from
the finest level up, plus ``"pool"`` (a stride-2 max-pool of the coarsest, torchvision's
``LastLevelMaxPool``) when ``extra_pool`` is set — the interface torchvision's Mask R-CNN
expects of ``backbone`` (``out_channels`` attribute), and the one SOLOv2 reads.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from methods.backbones import load_backbone_weights

__all__ = ["TimmFPN"]


class TimmFPN(nn.Module):
    """A timm feature extractor followed by an FPN.

    Args:
        name: timm model name supporting ``features_only`` (``resnet18``, ``resnet50``, ``hrnet_w48`` ...).
        out_indices: backbone levels fed to the FPN, finest first (ResNets: ``(1, 2, 3, 4)`` =
            strides 4, 8, 16, 32, as in torchvision's ``resnet_fpn_backbone``).
        out_channels: FPN width (torchvision / detectron2: 256).
        extra_pool: append the ``"pool"`` level (Mask R-CNN's RPN uses it; SOLOv2 does not).
        weights: optional local checkpoint of the timm model (a ``state_dict``, or a dict with
            ``"state_dict"`` / ``"model"``); keys the feature extractor lacks (its classifier) are
            ignored, missing ones raise.
    """

    def __init__(
        self,
        name: str = "resnet18",
        *,
        out_indices: Sequence[int] = (1, 2, 3, 4),
        out_channels: int = 256,
        extra_pool: bool = True,
        weights: str | Path | None = None,
    ) -> None:
        super().__init__()
        import timm

        self.body = timm.create_model(name, pretrained=False, features_only=True, out_indices=tuple(out_indices))
        if weights is not None:
            load_backbone_weights(self.body, weights, param="segmentor.backbone_init")
        in_channels = list(self.body.feature_info.channels())
        self.strides = tuple(int(s) for s in self.body.feature_info.reduction())
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels,
                                         extra_blocks=LastLevelMaxPool() if extra_pool else None)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        features = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))
