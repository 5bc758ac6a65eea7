"""Point2Mask pseudo masks (Alg. 1): hand cases through :func:`pseudo_masks`, and bad input."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from methods.point2mask import Point2MaskConfig, point_probabilities, pseudo_masks, transport_cost

VOC_IS_THING = np.arange(21) != 0  # VOC semantic indices: 0 = background (stuff), 1..20 things


def test_touching_same_class_blobs_split_along_the_boundary_ridge():
    """Both blobs are class 1 everywhere; only the boundary ridge (column 8) separates them. The left
    point sits next to the ridge, so the Euclidean bisector (column 11) would cut the right blob."""
    probs = torch.stack([torch.zeros(10, 16), torch.ones(10, 16)])
    ridge = torch.zeros(10, 16)
    ridge[:, 8] = 1.0
    out = pseudo_masks(probs, ridge, np.array([[7, 5], [15, 5]]), np.array([1, 1]), np.array([False, True]),
                       Point2MaskConfig(point_square=1))
    assert (out[:, :8] == 1).all() and (out[:, 9:] == 2).all()


def test_minimum_cost_decoding_equals_the_argmin_of_the_costs():
    rng = np.random.default_rng(0)
    probs = torch.softmax(torch.from_numpy(rng.normal(0, 2, (3, 20, 24)).astype(np.float32)), 0)
    bound = torch.from_numpy(rng.random((20, 24)).astype(np.float32))
    points, classes = np.array([[3, 4], [20, 5], [12, 15], [1, 18]]), np.array([1, 2, 1, 0])
    is_thing = np.array([False, True, True])
    config = Point2MaskConfig(decode="min-cost", point_square=3)
    out = pseudo_masks(probs, bound, points, classes, is_thing, config)

    p = point_probabilities(probs, points[:, 1], points[:, 0], classes, 3)
    thing_pixel = torch.from_numpy(is_thing)[p.argmax(0)].numpy()
    cost = transport_cost(p, bound[None], None, points[:3, 1], points[:3, 0], classes[:3], config).image
    assert thing_pixel.any() and (out[thing_pixel] == cost.argmin(0).numpy()[thing_pixel] + 1).all()


def test_stuff_point_of_a_voc_image_becomes_the_background_segment():
    probs = np.full((21, 16, 16), 0.1 / 20, dtype=np.float32)
    probs[0] = 0.9
    probs[0, 4:12, 4:12], probs[7, 4:12, 4:12] = 0.1 / 20, 0.9  # a class-7 object on background
    points, classes = np.array([[8, 8], [1, 1]]), np.array([7, 0])
    out = pseudo_masks(probs, None, points, classes, VOC_IS_THING, Point2MaskConfig(point_square=3))
    expected = np.full((16, 16), 2)
    expected[4:12, 4:12] = 1
    np.testing.assert_array_equal(out, expected)


def test_unsure_stuff_pixels_are_void():
    probs = np.full((21, 8, 8), 0.6 / 20, dtype=np.float32)
    probs[0] = 0.4  # background on top, but below stuff_min_prob = 0.5
    out = pseudo_masks(probs, None, np.array([[0, 0]]), np.array([0]), VOC_IS_THING, Point2MaskConfig(point_square=1))
    assert out[0, 0] == 1 and (out.ravel()[1:] == 0).all()


@pytest.mark.parametrize("points, classes, message", [
    ([[3, 3], [16, 2]], [7, 0], r"record 7: point 1 at \(x=16, y=2\) is outside the 16x12 image"),
    ([[3, 3], [5, 2]], [25, 0], r"record 7: point 0 has class 25, absent from the label set \[0, 21\)"),
], ids=["outside", "unknown-class"])
def test_bad_input_names_the_record(points, classes, message):
    probs = np.full((21, 12, 16), 1 / 21, dtype=np.float32)
    with pytest.raises(ValueError, match=message):
        pseudo_masks(probs, None, np.array(points), np.array(classes), VOC_IS_THING, Point2MaskConfig(), record=7)


def test_release_config_takes_every_documented_release_value():
    release = Point2MaskConfig.release()
    assert (release.grid_stride, release.diagonal_sqrt2, release.embedding_term, release.k_assignment,
            release.use_low_boundary, release.detach_boundary_inputs) == (16, False, True, "likelihood", False, True)
    assert replace(release, ot_mode="converged").ot_mode == "converged"
    with pytest.raises(ValueError, match=r"point2mask.unit_number = 'median'"):
        Point2MaskConfig(unit_number="median")
