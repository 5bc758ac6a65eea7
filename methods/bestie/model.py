"""BESTIE's network (Sec. 3.2): Panoptic-DeepLab-style heads on a timm backbone.

Three heads on decoder features at stride 4, all outputs bilinearly upsampled to the input size:

- semantic: S logits (background/stuff + things, the canonical semantic index order);
- centre: one heatmap per thing class (class-wise, appendix: +1.0 mAP50 over class-agnostic);
- offset: 2 channels [dy, dx] in input pixels.

The decoder (``decoder``, :data:`DECODERS`) is the release's choice per backbone family:

- ``fuse`` — the release's HRNet-W48 path: every backbone level bilinearly resized to the finest
  level, concatenated and reduced by a 1×1 conv-BN-ReLU to ``decoder_channels`` (release 48); one
  feature map feeds all heads, each conv3×3(→ ``head_channels``, release 256)+ReLU+conv1×1. Use
  ``hrnet_w48`` with ``out_indices=(1, 2, 3, 4)``.
- ``panoptic-deeplab`` — the release's ResNet path (Panoptic-DeepLab's decoder): a semantic and an
  instance decoder, each ASPP (rates 3, 6, 9, image pooling, dropout 0.5) on the coarsest level,
  then top-down per finer level: upsample, concatenate the level's 1×1-projected features, fuse by
  a 5×5 depthwise-separable conv. Heads: 5×5 depthwise-separable conv + conv1×1. Release widths
  (ResNet, ``head_channels`` = 256): semantic decoder and ASPP 256 with projections 32 / 64 / 128 at
  strides 4 / 8 / 16, instance decoder 128 (ASPP 256) with projections 16 / 32 / 64; heads:
  semantic 256, centre 128, offset 32. Another ``head_channels`` scales every one of these widths
  by ``head_channels / 256`` (at least 8 channels); ``decoder_channels`` is the ``fuse`` width only.
  Decoder and head convs start from N(0, 0.001), BatchNorm from (1, 0) (the release's
  ``_init_params``).

With either decoder the last convs of the centre and offset heads start at zero (a harness choice
for training from random weights: with PyTorch's default init the ×200 centre term starts ~100×
above its minimum and, through Adam's second-moment memory, keeps the head from learning in a
short schedule — docs/bestie.md; val mAP50 6.5 → 16.8).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from methods.backbones import feature_extractor, load_backbone_weights

__all__ = ["BestieNet", "DECODERS", "DecoderFeatures", "FuseDecoder", "PanopticDeepLabDecoder", "Head",
           "SeparableHead"]

RELEASE_WIDTH = 256  # the release's ResNet decoder / head width, the unit the PD widths scale from


class DecoderFeatures(NamedTuple):
    """Stride-``stride`` decoder outputs: the semantic head's input and the centre/offset heads' input
    (the same tensor for a single-decoder network)."""

    semantic: torch.Tensor
    instance: torch.Tensor


def _scaled(release_channels: int, scale: float) -> int:
    return max(8, round(release_channels * scale))


def _upsample(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int = 1, *, dilation: int = 1,
                  groups: int = 1) -> nn.Sequential:
    padding = dilation * (kernel // 2)
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, padding=padding, dilation=dilation,
                                   groups=groups, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


def separable_conv(in_channels: int, out_channels: int, kernel: int = 5) -> nn.Sequential:
    """Depthwise k×k conv-BN-ReLU, then pointwise 1×1 conv-BN-ReLU (Panoptic-DeepLab's fuse conv)."""
    return nn.Sequential(_conv_bn_relu(in_channels, in_channels, kernel, groups=in_channels),
                         _conv_bn_relu(in_channels, out_channels, 1))


class Head(nn.Sequential):
    """conv3×3 → ReLU → conv1×1 (the release's HRNet head)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int) -> None:
        super().__init__(nn.Conv2d(in_channels, mid_channels, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(mid_channels, out_channels, 1))


class SeparableHead(nn.Sequential):
    """5×5 depthwise-separable conv → conv1×1 (the release's Panoptic-DeepLab head)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int) -> None:
        super().__init__(separable_conv(in_channels, mid_channels), nn.Conv2d(mid_channels, out_channels, 1))


class FuseDecoder(nn.Module):
    """All levels resized to the finest and concatenated, 1×1 conv-BN-ReLU (the HRNet-W48 path)."""

    head = Head

    def __init__(self, level_channels: Sequence[int], level_strides: Sequence[int], decoder_channels: int,
                 head_channels: int) -> None:
        super().__init__()
        self.reduce = _conv_bn_relu(sum(level_channels), decoder_channels)
        self.semantic_channels = self.instance_channels = decoder_channels
        self.head_widths = {"semantic": head_channels, "center": head_channels, "offset": head_channels}

    def forward(self, levels: Sequence[torch.Tensor]) -> DecoderFeatures:
        size = levels[0].shape[-2:]
        fused = self.reduce(torch.cat([levels[0]] + [_upsample(f, size) for f in levels[1:]], 1))
        return DecoderFeatures(fused, fused)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1×1, three dilated 3×3 and image-pooling branches, projected
    by 1×1 conv-BN-ReLU and dropout (the release's Panoptic-DeepLab ASPP)."""

    def __init__(self, in_channels: int, out_channels: int, rates: Sequence[int] = (3, 6, 9),
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.branches = nn.ModuleList([_conv_bn_relu(in_channels, out_channels)]
                                      + [_conv_bn_relu(in_channels, out_channels, 3, dilation=r) for r in rates])
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                        nn.ReLU(inplace=True))
        self.project = nn.Sequential(_conv_bn_relu((len(rates) + 2) * out_channels, out_channels),
                                     nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.image_pool(x).expand(-1, -1, *x.shape[-2:])
        return self.project(torch.cat([branch(x) for branch in self.branches] + [pooled], 1))


class SingleDecoder(nn.Module):
    """ASPP on the coarsest level, then top-down fusion with each finer level's projection."""

    def __init__(self, level_channels: Sequence[int], project_channels: Sequence[int], aspp_channels: int,
                 decoder_channels: int) -> None:
        super().__init__()
        self.aspp = ASPP(level_channels[-1], aspp_channels)
        finer = list(range(len(level_channels) - 2, -1, -1))  # coarse → fine, the coarsest excluded
        self.project = nn.ModuleList(_conv_bn_relu(level_channels[i], project_channels[i]) for i in finer)
        self.fuse = nn.ModuleList(separable_conv((aspp_channels if k == 0 else decoder_channels) + project_channels[i],
                                                 decoder_channels) for k, i in enumerate(finer))
        self.finer = finer

    def forward(self, levels: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self.aspp(levels[-1])
        for project, fuse, i in zip(self.project, self.fuse, self.finer):
            low = project(levels[i])
            x = fuse(torch.cat([_upsample(x, low.shape[-2:]), low], 1))
        return x


class PanopticDeepLabDecoder(nn.Module):
    """Semantic + instance decoders of Panoptic-DeepLab (the release's ResNet path), every width the
    release's × ``head_channels / 256``; ``decoder_channels`` (the ``fuse`` width) is not used."""

    head = SeparableHead

    def __init__(self, level_channels: Sequence[int], level_strides: Sequence[int], decoder_channels: int,
                 head_channels: int) -> None:
        super().__init__()
        if len(level_channels) < 2:
            raise ValueError("the panoptic-deeplab decoder needs at least two backbone levels (out_indices)")
        scale = head_channels / RELEASE_WIDTH
        width = _scaled(RELEASE_WIDTH, scale)
        self.semantic_channels, self.instance_channels = width, _scaled(128, scale)
        self.semantic = SingleDecoder(level_channels, [_scaled(8 * s, scale) for s in level_strides],
                                      aspp_channels=width, decoder_channels=self.semantic_channels)
        self.instance = SingleDecoder(level_channels, [_scaled(4 * s, scale) for s in level_strides],
                                      aspp_channels=width, decoder_channels=self.instance_channels)
        self.head_widths = {"semantic": width, "center": _scaled(128, scale), "offset": _scaled(32, scale)}

    def forward(self, levels: Sequence[torch.Tensor]) -> DecoderFeatures:
        return DecoderFeatures(self.semantic(levels), self.instance(levels))


DECODERS: dict[str, Callable[..., nn.Module]] = {"fuse": FuseDecoder, "panoptic-deeplab": PanopticDeepLabDecoder}


def _init_release(modules: Sequence[nn.Module]) -> None:
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, mean=0.0, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


class BestieNet(nn.Module):
    """timm backbone + decoder + semantic / centre / offset heads.

    The backbone starts from random weights, or from ``backbone_weights`` (a local checkpoint of the same
    timm model: ImageNet weights, or the pretrain stage's, :mod:`methods.backbones`); decoder and heads
    always start from their own init. ``forward`` returns
    ``{"semantic": (B, S, H, W), "center": (B, C, H, W), "offset": (B, 2, H, W)}``
    at the input resolution; :meth:`features` gives the decoder's stride-4 maps (for methods that add
    heads, e.g. P2Seg's affinity on the semantic features).
    """

    def __init__(
        self,
        num_semantic: int,
        num_center: int,
        *,
        backbone: str = "resnet18",
        out_indices: Sequence[int] = (1, 2, 3),
        decoder: str = "fuse",
        decoder_channels: int = 64,
        head_channels: int = 64,
        backbone_weights: str | Path | None = None,
    ) -> None:
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; choose one of {sorted(DECODERS)}")
        self.backbone = feature_extractor(backbone, out_indices)
        if backbone_weights is not None:
            load_backbone_weights(self.backbone, backbone_weights)
        info = self.backbone.feature_info
        self.stride = int(info.reduction()[0])
        self.decoder = DECODERS[decoder](info.channels(), info.reduction(), decoder_channels, head_channels)
        widths, head = self.decoder.head_widths, self.decoder.head
        self.semantic_head = head(self.decoder.semantic_channels, widths["semantic"], num_semantic)
        self.center_head = head(self.decoder.instance_channels, widths["center"], num_center)
        self.offset_head = head(self.decoder.instance_channels, widths["offset"], 2)
        if decoder == "panoptic-deeplab":
            _init_release([self.decoder, self.semantic_head, self.center_head, self.offset_head])
        for h in (self.center_head, self.offset_head):  # start from "no centre, no offset"
            nn.init.zeros_(h[-1].weight)
            nn.init.zeros_(h[-1].bias)

    def features(self, x: torch.Tensor) -> DecoderFeatures:
        return self.decoder(self.backbone(x))

    def heads(self, f: DecoderFeatures, size: Sequence[int]) -> dict[str, torch.Tensor]:
        """The three heads on the decoder features ``f``, upsampled to ``size``."""
        return {"semantic": _upsample(self.semantic_head(f.semantic), size), **self.instance_heads(f, size)}

    def instance_heads(self, f: DecoderFeatures, size: Sequence[int]) -> dict[str, torch.Tensor]:
        """The centre and offset heads on the decoder's instance features, upsampled to ``size``."""
        return {"center": _upsample(self.center_head(f.instance), size),
                "offset": _upsample(self.offset_head(f.instance), size)}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.heads(self.features(x), x.shape[-2:])
