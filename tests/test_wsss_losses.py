"""Point2Mask Eq. 5 terms: partial CE, 17x17 point squares, RGB->LAB, the LAB pairwise prior."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.color import rgb2lab

from methods.wsss.losses import (
    IGNORE_INDEX,
    expand_points,
    lab_pairwise_loss,
    partial_cross_entropy,
    rgb_to_lab,
)

U = IGNORE_INDEX

# ---------------------------------------------------------------------------------------------
# L_partial
# ---------------------------------------------------------------------------------------------


def test_partial_ce_is_the_mean_ce_over_labelled_pixels_only():
    logits = torch.randn(2, 3, 4, 5)
    labels = torch.full((2, 4, 5), U)
    labels[0, 1, 2] = 2
    labels[1, 3, 0] = 0
    labels[1, 0, 4] = 1
    expected = (
        -F.log_softmax(logits[0, :, 1, 2], 0)[2]
        - F.log_softmax(logits[1, :, 3, 0], 0)[0]
        - F.log_softmax(logits[1, :, 0, 4], 0)[1]
    ) / 3
    assert partial_cross_entropy(logits, labels).item() == pytest.approx(expected.item(), abs=1e-6)


def test_partial_ce_without_labelled_pixels_is_zero_not_nan():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = partial_cross_entropy(logits, torch.full((1, 4, 4), U))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logits.grad == 0)


def test_partial_ce_rejects_labels_outside_the_classes():
    with pytest.raises(ValueError):
        partial_cross_entropy(torch.randn(1, 3, 2, 2), torch.tensor([[[3, U], [U, U]]]))


def test_expand_points_makes_17x17_squares_clipped_at_the_border():
    labels = torch.full((40, 40), U)
    labels[20, 20] = 4
    labels[2, 39] = 7
    out = expand_points(labels)  # default size 17
    assert out.shape == labels.shape and out.dtype == labels.dtype
    assert torch.all(out[12:29, 12:29] == 4) and (out == 4).sum() == 17 * 17
    assert torch.all(out[0:11, 31:40] == 7) and (out == 7).sum() == 11 * 9  # rows 0..10, cols 31..39


def test_expand_points_overlap_rule_lowest_class_wins():
    labels = torch.full((1, 12, 12), U)
    labels[0, 5, 3] = 6  # class 6 square: rows 4..6, cols 2..4
    labels[0, 5, 5] = 1  # class 1 square: rows 4..6, cols 4..6
    out = expand_points(labels, size=3)[0]
    assert torch.all(out[4:7, 4] == 1)  # the shared column goes to class 1
    assert torch.all(out[4:7, 2:4] == 6) and torch.all(out[4:7, 5:7] == 1)
    labels[0, 5, 4] = 6  # even a class-6 point pixel inside a class-1 square becomes class 1
    assert expand_points(labels, size=3)[0, 5, 4] == 1


def test_expand_points_merges_same_class_and_size_1_is_identity():
    labels = torch.full((1, 10, 10), U)
    labels[0, 4, 3] = labels[0, 4, 5] = 2
    out = expand_points(labels, size=3)
    assert (out == 2).sum() == 3 * 5
    assert torch.equal(expand_points(labels, size=1), labels)
    with pytest.raises(ValueError):
        expand_points(labels, size=4)


# ---------------------------------------------------------------------------------------------
# RGB -> LAB
# ---------------------------------------------------------------------------------------------


def test_rgb_to_lab_matches_skimage():
    rng = np.random.default_rng(0)
    img = rng.random((16, 16, 3))
    img[0, :8] = np.array([[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0],
                           [0.02, 0.02, 0.02], [0.5, 0.5, 0.5]])  # extremes and the linear sRGB segment
    ours = rgb_to_lab(torch.from_numpy(img).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    assert np.abs(ours - rgb2lab(img)).max() < 1e-6
    ours32 = rgb_to_lab(torch.from_numpy(img).float().permute(2, 0, 1))  # (3, H, W), float32
    assert np.abs(ours32.permute(1, 2, 0).numpy() - rgb2lab(img)).max() < 1e-3


def test_rgb_to_lab_reads_uint8_as_unit_range():
    img8 = torch.randint(0, 256, (1, 3, 5, 5), dtype=torch.uint8)
    assert torch.allclose(rgb_to_lab(img8), rgb_to_lab(img8.float() / 255))


# ---------------------------------------------------------------------------------------------
# L_LAB
# ---------------------------------------------------------------------------------------------


def test_lab_loss_is_zero_for_constant_colour_and_constant_one_hot():
    img = torch.full((2, 3, 8, 8), 0.4)
    probs = torch.zeros(2, 5, 8, 8)
    probs[:, 3] = 1.0
    assert lab_pairwise_loss(probs, img).item() == pytest.approx(0.0, abs=1e-7)


def test_lab_loss_ignores_pairs_across_a_colour_edge():
    img = torch.zeros(1, 3, 6, 8)
    img[..., 4:] = 1.0  # black | white: similarity exp(-0.5 * 100) << 0.3
    probs = torch.empty(1, 2, 6, 8)
    probs[:, :, :, :4] = torch.tensor([0.9, 0.1]).view(1, 2, 1, 1)
    probs[:, :, :, 4:] = torch.tensor([0.1, 0.9]).view(1, 2, 1, 1)
    # only same-region pairs count, each -log(0.9*0.9 + 0.1*0.1); kernel weights sum to 1
    expected = -math.log(0.82) * (0.35 + 0.65)
    assert lab_pairwise_loss(probs, img).item() == pytest.approx(expected, abs=1e-6)


def test_lab_loss_two_pixels_by_hand():
    img = torch.full((1, 3, 1, 2), 0.5)
    probs = torch.tensor([[0.8, 0.6], [0.2, 0.4]]).view(1, 2, 1, 2)
    # one 3x3 kernel, dilation 1, weight 1: the pairs (0 -> 1) and (1 -> 0), both -log(0.56)
    loss = lab_pairwise_loss(probs, img, kernels=((3, 1, 1.0),))
    assert loss.item() == pytest.approx(-math.log(0.8 * 0.6 + 0.2 * 0.4), abs=1e-6)
    # the release kernels have dilation 2: a 1x2 image has no pair at all
    assert lab_pairwise_loss(probs, img).item() == 0.0


def test_lab_similarity_threshold_at_0_3():
    # grey with L* = 2 vs black: sim = exp(-1) = 0.37 counts; L* = 2.5: exp(-1.25) = 0.29 does not
    probs = torch.tensor([[1.0, 0.5], [0.0, 0.5]]).view(1, 2, 1, 2)
    for lightness, counts in ((2.0, True), (2.5, False)):
        grey = 12.92 * lightness / 903.3  # L* = 903.3 Y on the linear segments of LAB and sRGB
        img = torch.tensor([0.0, grey], dtype=torch.float64).view(1, 1, 1, 2).expand(1, 3, 1, 2)
        assert rgb_to_lab(img)[0, 0, 0, 1].item() == pytest.approx(lightness, abs=1e-3)
        loss = lab_pairwise_loss(probs.double(), img, kernels=((3, 1, 1.0),))
        assert loss.item() == pytest.approx(-math.log(0.5) if counts else 0.0, abs=1e-6)


def test_lab_loss_from_logits_equals_probability_form():
    logits = torch.randn(2, 4, 9, 7, dtype=torch.float64)
    img = torch.rand(2, 3, 9, 7, dtype=torch.float64) * 0.05 + 0.5  # similar colours: many pairs
    a = lab_pairwise_loss(torch.softmax(logits, 1), img)
    b = lab_pairwise_loss(logits, img, from_logits=True)
    assert a.item() == pytest.approx(b.item(), abs=1e-10) and a.item() > 0


def test_lab_loss_is_the_mean_per_image_then_over_the_batch():
    # image 0: constant colour, uniform 2-class prediction -> every pair costs log 2
    # image 1: black | white checkerboard of 1-pixel cells -> with dilation 2 the pairs still match
    #          colours; a one-hot prediction costs 0
    img = torch.full((2, 3, 6, 6), 0.5)
    img[1] = ((torch.arange(6)[:, None] + torch.arange(6)[None]) % 2).float()
    probs = torch.full((2, 2, 6, 6), 0.5)
    probs[1, 0], probs[1, 1] = 1.0, 0.0
    assert lab_pairwise_loss(probs, img).item() == pytest.approx(math.log(2) / 2, abs=1e-6)


def test_lab_loss_valid_mask_excludes_pairs_touching_invalid_pixels():
    img = torch.full((1, 3, 1, 3), 0.5)
    probs = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]).view(1, 2, 1, 3)
    valid = torch.tensor([[[True, True, False]]])
    loss = lab_pairwise_loss(probs, img, kernels=((3, 1, 1.0),), valid_mask=valid)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)  # the costly pair (1, 2) is masked
    assert lab_pairwise_loss(probs, img, kernels=((3, 1, 1.0),)).item() > 1.0


def test_lab_loss_gradient_flows_to_the_prediction():
    logits = torch.randn(1, 3, 6, 6, requires_grad=True)
    lab_pairwise_loss(torch.softmax(logits, 1), torch.full((1, 3, 6, 6), 0.3)).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
