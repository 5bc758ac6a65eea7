"""Point2Mask boundary maps: L_bou (Eq. 6-7), the boundary head's detach switch, the low-level map,
and the semantic loss of Eq. 5 built from methods.wsss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from methods.point2mask import (BoundaryHead, Point2MaskConfig, boundary_loss, boundary_maps, low_level_boundary,
                                semantic_loss)
from methods.wsss import expand_points, partial_cross_entropy


def test_boundary_loss_value_and_signs_on_3x3():
    """Centre pixel: a one-pixel thing (segment 1) with boundary 0.6; the ring: stuff (segment 2) with
    boundary 0.1. The 8 centre pairs are negative pairs with A = 0.4; the 12 ring pairs are stuff pairs
    with A = 0.9; there is no thing pair. L = -log(0.9) / 2 - log(1 - 0.4)."""
    boundary = torch.full((3, 3), 0.1)
    boundary[1, 1] = 0.6
    boundary.requires_grad_(True)
    segments = torch.full((3, 3), 2)
    segments[1, 1] = 1
    thing = segments == 1
    loss = boundary_loss(boundary, segments, thing)
    assert float(loss.detach()) == pytest.approx(-math.log(0.9) / 2 - math.log(0.6), abs=1e-4)
    loss.backward()
    grad = boundary.grad
    assert grad[1, 1] < 0  # raising the boundary between different pseudo labels lowers L_bou
    assert (grad.flatten()[[0, 1, 2, 3, 5, 6, 7, 8]] > 0).all()  # raising it inside a segment raises L_bou


def test_boundary_head_detach_switch():
    feats = [torch.randn(1, 4, 8, 8, requires_grad=True), torch.randn(1, 4, 4, 4, requires_grad=True)]
    for detach in (False, True):
        head = BoundaryHead(4, detach_inputs=detach)
        out = head(feats)
        assert out.shape == (1, 8, 8) and ((out > 0) & (out < 1)).all()
        grads = torch.autograd.grad(out.sum(), feats, allow_unused=True)
        assert all(g is None for g in grads) == detach


def test_low_level_boundary_peaks_on_the_edge_and_is_zero_on_flat_areas():
    image = np.zeros((12, 12, 3), dtype=np.uint8)
    image[:, 6:] = (200, 30, 30)
    edge = low_level_boundary(image)
    assert edge.shape == (12, 12) and edge.dtype == np.float32
    assert edge.max() == 1.0 and (edge[:, 5:7] == 1.0).all()
    assert (edge[:, :4] < 1e-6).all() and (edge[:, 8:] < 1e-6).all()


def test_semantic_loss_is_eq5_of_the_wsss_terms():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 3, 16, 16, generator=gen)
    images = torch.randint(0, 256, (1, 3, 16, 16), generator=gen, dtype=torch.uint8)
    points = torch.full((1, 16, 16), 255)
    points[0, 4, 4], points[0, 12, 10] = 1, 2
    config = Point2MaskConfig(point_square=3)
    out = semantic_loss(logits, images, points, config)
    torch.testing.assert_close(out["partial"], partial_cross_entropy(logits, expand_points(points, 3)))
    torch.testing.assert_close(out["loss"], out["partial"] + 3.0 * out["lab"] + 3.0 * out["rgb"])
    only_partial = semantic_loss(logits, images, points, Point2MaskConfig(point_square=3, use_lab=False, use_rgb=False))
    assert set(only_partial) == {"loss", "partial"}


def test_boundary_maps_follow_the_table3_switches():
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    image[:, 4:] = 255
    high = torch.rand(4, 4)
    assert boundary_maps(Point2MaskConfig(use_high_boundary=False, use_low_boundary=False)) is None
    assert torch.equal(boundary_maps(Point2MaskConfig.release(), high=high)[0], high)
    both = boundary_maps(Point2MaskConfig(), high=high, image=image)
    assert both.shape == (2, 8, 8) and torch.equal(both[1], torch.from_numpy(low_level_boundary(image)))
