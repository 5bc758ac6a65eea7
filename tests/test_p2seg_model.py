"""P2Seg's network: with ``semantic_from_affinity`` the semantic branch outputs the I2S map
S = A^∘β · C (paper Sec. 3.2–3.3; release ``BaseSegmentationModel.forward``), so the segmentation
loss reaches the affinity head; without it the semantic output is the semantic head's alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from methods.p2seg.model import P2SegNet

pytestmark = pytest.mark.usefixtures("one_thread")

NET = dict(backbone="regnetx_002", decoder_channels=16, head_channels=16, embed_dim=8)


def _net(**kwargs: object) -> P2SegNet:
    torch.manual_seed(0)
    return P2SegNet(3, 2, **NET, **kwargs).eval()  # type: ignore[arg-type]


def test_with_an_uninformative_affinity_every_pixel_gets_the_image_average_of_the_class_map() -> None:
    """F = 0 ⇒ σ(FᵀF) = 1/2 for every pair ⇒ each row of the row-normalised A^∘β is uniform, so S at
    every pixel is the mean of C over the grid (and so is its bilinear upsampling)."""
    net = _net(semantic_from_affinity=True, beta=8.0, normalize="row")
    torch.nn.init.zeros_(net.affinity_head.conv.weight)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        c, _ = net.grid_outputs(x)
        s = net(x)["semantic"].softmax(1)
    expected = c.mean((2, 3), keepdim=True).expand_as(s)
    torch.testing.assert_close(s, expected, atol=1e-5, rtol=1e-5)


def test_the_semantic_output_is_log_s_of_the_grid_outputs() -> None:
    net = _net(semantic_from_affinity=True, beta=2.0, normalize="row")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        c, emb = net.grid_outputs(x)
        a = torch.sigmoid(emb.flatten(2).transpose(1, 2) @ emb.flatten(2)) ** 2.0
        s = (a / a.sum(2, keepdim=True)) @ c.flatten(2).transpose(1, 2)  # (B, hw, S)
        s = s.transpose(1, 2).reshape(c.shape)
        expected = F.interpolate(s.log(), size=(32, 32), mode="bilinear", align_corners=False)
        torch.testing.assert_close(net(x)["semantic"], expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("through_affinity", [True, False])
def test_only_the_affinity_branch_lets_the_segmentation_loss_reach_the_affinity_head(through_affinity: bool) -> None:
    net = _net(semantic_from_affinity=through_affinity).train()
    x, target = torch.rand(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    F.cross_entropy(net(x)["semantic"], target).backward()
    grad = net.affinity_head.conv.weight.grad
    assert (grad is not None and grad.abs().sum() > 0) == through_affinity


def test_without_the_affinity_branch_the_semantic_output_is_the_semantic_heads() -> None:
    net = _net(semantic_from_affinity=False)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        f = net.features(x)
        expected = F.interpolate(net.semantic_head(f.semantic), size=(32, 32), mode="bilinear", align_corners=False)
        torch.testing.assert_close(net(x)["semantic"], expected)


@pytest.mark.parametrize("normalize", ["row", "release", None])
def test_the_chunked_branch_equals_the_dense_one_on_the_pooled_grid(normalize) -> None:
    """Chunking is a memory bound only; with ``affinity_pool`` 2 the class map is pooled like F."""
    dense = _net(semantic_from_affinity=True, normalize=normalize, affinity_pool=2)
    chunked = _net(semantic_from_affinity=True, normalize=normalize, affinity_pool=2, chunk_size=7)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        c, emb = dense.grid_outputs(x)
        assert c.shape[-2:] == emb.shape[-2:] == (4, 4)
        torch.testing.assert_close(chunked(x)["semantic"], dense(x)["semantic"], atol=1e-5, rtol=1e-4)
