"""BESTIE's network: the two release decoders (HRNet fuse path, ResNet Panoptic-DeepLab path)."""

from __future__ import annotations

import typing

import pytest
import torch

from bench.config.schema import Decoder
from methods.bestie.model import DECODERS, BestieNet, PanopticDeepLabDecoder
from methods.p2seg.model import P2SegNet

SMALL = {"backbone": "resnet10t", "out_indices": (1, 2, 3), "decoder_channels": 8, "head_channels": 16}


@pytest.mark.parametrize("decoder", sorted(DECODERS))
def test_every_decoder_gives_the_three_heads_at_the_input_size(decoder: str) -> None:
    torch.manual_seed(0)
    net = BestieNet(4, 3, decoder=decoder, **SMALL).eval()
    out = net(torch.randn(2, 3, 48, 40))
    assert out["semantic"].shape == (2, 4, 48, 40)
    assert out["center"].shape == (2, 3, 48, 40)
    assert out["offset"].shape == (2, 2, 48, 40)


@pytest.mark.parametrize("decoder", sorted(DECODERS))
def test_centre_and_offset_heads_start_at_zero_with_every_decoder(decoder: str) -> None:
    torch.manual_seed(0)
    out = BestieNet(3, 2, decoder=decoder, **SMALL).eval()(torch.randn(1, 3, 32, 32))
    assert torch.count_nonzero(out["center"]) == 0 and torch.count_nonzero(out["offset"]) == 0
    assert torch.count_nonzero(out["semantic"]) > 0


def test_panoptic_deeplab_widths_are_the_releases_at_head_channels_256() -> None:
    """Release (ResNet): semantic decoder 256 with projections 32/64/128 at strides 4/8/16, instance
    decoder 128 with 16/32/64, heads 256 / 128 / 32."""
    d = PanopticDeepLabDecoder([64, 128, 256, 512], [4, 8, 16, 32], decoder_channels=48, head_channels=256)
    assert (d.semantic_channels, d.instance_channels) == (256, 128)
    assert [p[0].out_channels for p in d.semantic.project] == [128, 64, 32]  # top-down: strides 16, 8, 4
    assert [p[0].out_channels for p in d.instance.project] == [64, 32, 16]
    assert d.semantic.aspp.project[0][0].out_channels == d.instance.aspp.project[0][0].out_channels == 256
    assert d.head_widths == {"semantic": 256, "center": 128, "offset": 32}


def test_panoptic_deeplab_widths_scale_with_head_channels_down_to_8() -> None:
    d = PanopticDeepLabDecoder([16, 32, 64], [4, 8, 16], decoder_channels=48, head_channels=64)
    assert (d.semantic_channels, d.instance_channels) == (64, 32)
    assert [p[0].out_channels for p in d.semantic.project] == [16, 8]
    assert [p[0].out_channels for p in d.instance.project] == [8, 8]  # 8 and 4 → at least 8
    assert d.head_widths == {"semantic": 64, "center": 32, "offset": 8}


def test_panoptic_deeplab_decoder_needs_two_levels() -> None:
    with pytest.raises(ValueError, match="at least two backbone levels"):
        BestieNet(3, 2, decoder="panoptic-deeplab", **{**SMALL, "out_indices": (2,)})


def test_an_unknown_decoder_is_an_error_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="fuse"):
        BestieNet(3, 2, decoder="fpn", **SMALL)


def test_the_params_schema_offers_exactly_the_registered_decoders() -> None:
    assert set(typing.get_args(Decoder)) == set(DECODERS)


def test_p2seg_affinity_head_reads_the_semantic_decoder_features() -> None:
    torch.manual_seed(0)
    net = P2SegNet(3, 2, embed_dim=8, decoder="panoptic-deeplab", **SMALL).eval()
    out = net(torch.randn(1, 3, 32, 32))
    prob, embedding = net.grid_outputs(torch.randn(1, 3, 32, 32))
    assert out["embedding"].shape == (1, 8, 8, 8) and embedding.shape == (1, 8, 8, 8)
    assert prob.shape == (1, 3, 8, 8)
