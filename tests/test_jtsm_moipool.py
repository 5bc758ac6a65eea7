"""JTSM proposal pooling (Sec. 3.3, Table 1): shape-invariant MoIPool against RoIPool, Ω, ψ, gradients,
the TPS of shape-interpolation MoIPool, and the pooling switch."""

import numpy as np
import pytest
import torch
from torchvision.ops import roi_pool

from methods.jtsm.config import JtsmConfig
from methods.jtsm.moipool import moi_pool, pool_proposals, psi
from methods.jtsm.segments import SegmentBatch, superpixels_from_masks
from methods.jtsm.tps import apply_tps, control_points, fit_tps

S = 8  # stride


def _segments(masks, boxes, scores=None):
    sp, members = superpixels_from_masks(np.stack(masks))
    scores = np.ones(len(masks)) if scores is None else np.asarray(scores)
    return SegmentBatch.from_arrays([(sp, members, np.asarray(boxes, np.float32), scores)])


def _rect(x0, y0, x1, y1, size=64):
    m = np.zeros((size, size), bool)
    m[y0:y1, x0:x1] = True
    return m


def _roi_pool(features, seg, size):
    return roi_pool(features, torch.cat([seg.batch_index[:, None].float(), seg.boxes], 1), (size, size), 1 / S)


def test_moipool_equals_roipool_when_the_mask_fills_its_box():
    # x1 = 41: round(41/8) = 5 and cell 5 (pixels 40-47) holds mask pixel 40, so every cell RoIPool reads is in Ω
    boxes = [(8, 8, 41, 41), (0, 0, 64, 64), (3, 17, 50, 58)]
    seg = _segments([_rect(*b) for b in boxes], boxes)
    features = torch.rand(1, 5, 8, 8, generator=torch.Generator().manual_seed(0))
    for size in (2, 3, 7):
        pooled, valid = moi_pool(features, seg, output_size=size, stride=S)
        assert torch.equal(pooled, _roi_pool(features, seg, size))
        assert valid.all()


def test_the_release_rounding_reads_one_more_cell_than_the_mask_touches():
    # box ends 40 (exclusive): RoIPool's rule reads cells 1..round(40/8)=5, but cell 5 (pixels 40-47) is outside
    # the mask, so MoIPool never takes its (large) values while RoIPool does
    seg = _segments([_rect(8, 8, 40, 40)], [(8, 8, 40, 40)])
    features = torch.zeros(1, 1, 8, 8)
    features[0, 0, 1:5, 1:5] = torch.arange(16.0).view(4, 4)
    features[0, 0, 5, :] = 100.0
    features[0, 0, :, 5] = 100.0
    pooled, _ = moi_pool(features, seg, output_size=5, stride=S)
    assert _roi_pool(features, seg, 5)[0, 0, 4].tolist() == [100.0] * 5
    assert pooled.max() == 15.0
    assert pooled[0, 0, :4, :4].flatten().tolist() == list(np.arange(16.0))


def test_a_bin_whose_window_misses_the_mask_outputs_zero():
    mask = _rect(0, 0, 64, 64)
    mask[32:, 32:] = False  # an L: the bottom-right quarter is not the proposal's
    seg = _segments([mask], [(0, 0, 64, 64)])
    features = torch.full((1, 2, 8, 8), 3.0)
    pooled, valid = moi_pool(features, seg, output_size=3, stride=S)
    # 9 cells (0..round(64/8)=8, clipped to 8) in bins [0,3) [3,6) [6,8): bin (2, 2) reads cells 6-7 × 6-7, all outside
    assert pooled[0, :, 2, 2].tolist() == [0.0, 0.0]
    assert valid[0].tolist() == [[True, True, True], [True, True, True], [True, True, False]]
    assert (pooled[0][:, valid[0]] == 3.0).all()
    assert (_roi_pool(features, seg, 3) == 3.0).all()


def test_psi_on_a_hand_case():
    seg = _segments([_rect(0, 0, 16, 16)], [(0, 0, 64, 64)])  # only cells 0-1 × 0-1: one of 9 bins
    _, valid = moi_pool(torch.ones(1, 1, 8, 8), seg, output_size=3, stride=S)
    assert int(valid.sum()) == 1
    assert psi(valid, "paper").item() == pytest.approx(9.0)   # h^p·w^p / Σ = 9 / 1
    assert psi(valid, "release").item() == pytest.approx(4.5)  # 9 / (1 + 1)
    assert psi(valid, "none").item() == 1.0


def test_gradients_reach_only_the_cells_that_gave_a_maximum():
    seg = _segments([_rect(8, 8, 41, 41)], [(8, 8, 41, 41)])
    features = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
    reference = features.detach().clone().requires_grad_(True)
    moi_pool(features, seg, output_size=2, stride=S)[0].sum().backward()
    _roi_pool(reference, seg, 2).sum().backward()
    assert torch.equal(features.grad, reference.grad)
    assert features.grad.sum() == 3 * 4  # one unit per output (2×2 bins × 3 channels), at its argmax cell


def test_a_rectangle_needs_no_warp():
    masks = torch.zeros(1, 32, 32)
    masks[0] = 1.0  # the mask fills its box: contour points land on the box border
    box_pts, mask_pts = control_points(masks, 16)
    assert torch.allclose(box_pts, mask_pts, atol=0.07)
    grid = torch.rand(1, 50, 2) * 2 - 1
    warped = apply_tps(fit_tps(box_pts, mask_pts), box_pts, grid)
    assert torch.allclose(warped, grid, atol=0.07)


@pytest.mark.parametrize("pooling", ["moipool", "moipool-interp", "roipool", "roialign"])
def test_every_pooling_gives_fixed_size_features_with_gradients(pooling):
    seg = _segments([_rect(0, 0, 30, 20), _rect(10, 10, 60, 60)], [(0, 0, 30, 20), (10, 10, 60, 60)], [0.5, 0.0])
    features = torch.rand(1, 4, 8, 8, generator=torch.Generator().manual_seed(2), requires_grad=True)
    plain = pool_proposals(features, seg, JtsmConfig(pooling=pooling, pooled_size=3))
    scaled = pool_proposals(features, seg, JtsmConfig(pooling=pooling, pooled_size=3, score_scaling=True))
    assert plain.shape == (2, 4, 3, 3)
    assert torch.allclose(scaled[0], 1.5 * plain[0]) and torch.allclose(scaled[1], plain[1])  # × (score + 1)
    plain.sum().backward()
    assert features.grad.abs().sum() > 0


def test_bin_samples_cap_reads_a_subset_and_agrees_when_bins_are_small():
    seg = _segments([_rect(0, 0, 64, 64)], [(0, 0, 64, 64)])
    features = torch.rand(1, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    exact, _ = moi_pool(features, seg, output_size=7, stride=S)          # 9 cells in 7 bins: at most 3 per bin
    capped, _ = moi_pool(features, seg, output_size=7, stride=S, bin_samples=3)
    assert torch.equal(exact, capped)
    coarse, _ = moi_pool(features, seg, output_size=1, stride=S, bin_samples=2)  # 2×2 of the 8×8 cells
    assert (coarse <= exact.amax((2, 3), keepdim=True)).all()
