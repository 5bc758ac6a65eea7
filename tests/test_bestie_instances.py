"""BESTIE instance extraction per semantic component (the release's ``get_instance_segmentation``):
peaks of the component-masked centre map, clustered centres with the 0.05 gate, the ``> 5 centres``
rule of the refinement, and the inference (centre × class, class) / refinement scores."""

from __future__ import annotations

import numpy as np
import pytest

from methods.bestie import ClusterConfig, segment_instances
from methods.bestie.instances import component_instances
from methods.bestie.transfer import component_labels, offset_field

CLS = 1
FAR = np.full((2, 1, 1), 50.0, np.float32)  # offsets far from 0: no offset cluster anywhere


def _segment(semantic, prob, center, offset, *, threshold=0.1, cluster=None, max_per_component=None,
             keep_centerless=True, score_rule="center-class"):
    class_prob = np.stack([1.0 - prob, prob]).astype(np.float32)
    return segment_instances(semantic, class_prob, center[None].astype(np.float32), offset.astype(np.float32),
                             np.array([CLS]), threshold=threshold, nms_kernel=5, min_area=1, cluster=cluster,
                             max_per_component=max_per_component, keep_centerless=keep_centerless,
                             score_rule=score_rule)


def test_a_higher_value_outside_the_component_does_not_suppress_its_peak():
    # two components of class 1 one column apart (x 0-2 and x 4-6); centre 0.4 at x = 2 and 0.9 at x = 4
    # lie in one 5-px NMS window. Masked to its own component (release), x = 2 is a peak of the left one.
    semantic = np.zeros((1, 7), np.uint8)
    semantic[0, 0:3] = semantic[0, 4:7] = CLS
    center = np.zeros((1, 7))
    center[0, 2], center[0, 4] = 0.4, 0.9
    found = _segment(semantic, np.full((1, 7), 0.5), center, np.zeros((2, 1, 7)))
    assert [(f.center, f.score) for f in found] == [((0.0, 2.0), pytest.approx(0.4 * 0.5)),
                                                     ((0.0, 4.0), pytest.approx(0.9 * 0.5))]


def test_a_peak_just_outside_the_component_leaves_its_border_pixel_as_the_centre():
    # the predicted peak (0.8) sits on background next to the component; inside, the highest value is 0.3
    # on the border pixel — a centre there, score 0.3 × the mean class probability 0.6
    semantic = np.zeros((1, 6), np.uint8)
    semantic[0, 0:4] = CLS
    center = np.array([[0.0, 0.1, 0.2, 0.3, 0.8, 0.1]])
    found = _segment(semantic, np.full((1, 6), 0.6), center, np.zeros((2, 1, 6)))
    assert len(found) == 1 and found[0].center == (0.0, 3.0) and found[0].score == pytest.approx(0.3 * 0.6)


def _two_blobs():
    """Two 13×13 squares of class 1 in one component (joined by a bridge row), offsets to (8, 8) and
    (8, 26): the offset clustering finds exactly the two 21-px cores."""
    inst = np.zeros((20, 36), np.int32)
    inst[2:15, 2:15], inst[2:15, 20:33] = 1, 2
    offset = offset_field(inst, [(8.0, 8.0), (8.0, 26.0)])
    semantic = (inst > 0).astype(np.uint8)
    semantic[8, 15:20] = CLS  # the bridge: one component
    return semantic, offset


@pytest.mark.parametrize("value,expected_instances", [(0.05, 1), (0.06, 2)])
def test_clustered_centres_need_a_centre_value_above_0_05(value, expected_instances):
    semantic, offset = _two_blobs()
    center = np.full(semantic.shape, value)  # below the 0.1 threshold: no detected peak
    found = _segment(semantic, np.full(semantic.shape, 0.8), center, offset, cluster=ClusterConfig())
    assert len(found) == expected_instances


def test_a_clustered_centre_scores_the_square_of_the_mean_class_probability_at_inference():
    semantic, offset = _two_blobs()
    found = _segment(semantic, np.full(semantic.shape, 0.8), np.full(semantic.shape, 0.06), offset,
                     cluster=ClusterConfig())
    assert [f.center for f in found] == [(8.0, 8.0), (8.0, 26.0)]
    assert [f.score for f in found] == pytest.approx([0.64, 0.64])  # centre counts as seg: 0.8 × 0.8


def test_the_class_score_is_the_mean_class_probability_whatever_the_centre():
    # the two components of the first test (peaks 0.4 and 0.9), class probability 0.2 / 0.4 / 0.6 on the
    # left one (mean 0.4) and 0.5 on the right one: the release's centre-class rule gives 0.4 × 0.4 and
    # 0.9 × 0.5, the class rule the mean probabilities 0.4 and 0.5
    semantic = np.zeros((1, 7), np.uint8)
    semantic[0, 0:3] = semantic[0, 4:7] = CLS
    center = np.zeros((1, 7))
    center[0, 2], center[0, 4] = 0.4, 0.9
    prob = np.array([[0.2, 0.4, 0.6, 0.0, 0.5, 0.5, 0.5]])
    found = _segment(semantic, prob, center, np.zeros((2, 1, 7)), score_rule="class")
    assert [f.score for f in found] == pytest.approx([0.4, 0.5])
    assert [f.score for f in _segment(semantic, prob, center, np.zeros((2, 1, 7)))] == pytest.approx([0.16, 0.45])


def test_a_clustered_centre_scores_the_mean_class_probability_with_the_class_score():
    semantic, offset = _two_blobs()
    found = _segment(semantic, np.full(semantic.shape, 0.8), np.full(semantic.shape, 0.06), offset,
                     cluster=ClusterConfig(), score_rule="class")
    assert [f.score for f in found] == pytest.approx([0.8, 0.8])


def test_a_centreless_component_scores_its_highest_centre_value_times_its_probability():
    semantic, offset = _two_blobs()
    center = np.zeros(semantic.shape)
    center[3, 3] = 0.04  # below every threshold
    found = _segment(semantic, np.full(semantic.shape, 0.8), center, offset, cluster=ClusterConfig())
    assert len(found) == 1 and found[0].mask.sum() == (semantic > 0).sum()
    assert found[0].score == pytest.approx(0.04 * 0.8)
    assert _segment(semantic, np.full(semantic.shape, 0.8), center, offset, cluster=ClusterConfig(),
                    keep_centerless=False) == []


def _peaks_in_a_row(n: int):
    """One 1×(6n) component with n isolated centre peaks 0.9 (6 px apart) and zero offsets."""
    semantic = np.full((1, 6 * n), CLS, np.uint8)
    center = np.zeros((1, 6 * n))
    center[0, 3::6] = 0.9
    return semantic, center, np.zeros((2, 1, 6 * n))


@pytest.mark.parametrize("n,expected", [(5, 5), (6, 0)])
def test_refinement_leaves_out_a_component_with_more_than_five_centres(n, expected):
    semantic, center, offset = _peaks_in_a_row(n)
    found = _segment(semantic, np.full(semantic.shape, 0.5), center, offset, threshold=0.3, max_per_component=5,
                     keep_centerless=False, score_rule="refinement")
    assert len(found) == expected


def test_refinement_weight_is_centre_times_probability_clipped_to_one():
    semantic, center, offset = _peaks_in_a_row(1)
    center[0, 3] = 1.5  # a linear head may overshoot 1
    [low] = _segment(semantic, np.full(semantic.shape, 0.5), center * 0.5, offset, threshold=0.3,
                     keep_centerless=False, score_rule="refinement")
    [high] = _segment(semantic, np.full(semantic.shape, 0.9), center, offset, threshold=0.3,
                      keep_centerless=False, score_rule="refinement")
    assert low.score == pytest.approx(0.75 * 0.5) and high.score == pytest.approx(1.0)


def test_refined_centre_is_the_highest_centre_value_its_mask_received():
    # one 12-px row, NMS kernel 5: peaks at x = 2 (0.5) and x = 9 (0.9); x = 8 (0.8) is no peak (x = 9 is
    # higher) but its offset sends it to x = 2. The release's refined centre of that mask is its argmax,
    # x = 8 (and the weight 0.8 × 0.5), not the peak it was grouped to.
    semantic = np.full((1, 12), CLS, np.uint8)
    center = np.zeros((1, 12))
    center[0, 2], center[0, 8], center[0, 9] = 0.5, 0.8, 0.9
    offset = np.zeros((2, 1, 12))
    offset[1, 0, :9] = 2.0 - np.arange(9)  # x 0-8 point at x = 2, x 9-11 stay on themselves (nearest x = 9)
    found = _segment(semantic, np.full((1, 12), 0.5), center, offset, threshold=0.3, keep_centerless=False,
                     score_rule="refinement")
    assert [(f.center, f.score) for f in found] == [((0.0, 9.0), pytest.approx(0.9 * 0.5)),
                                                     ((0.0, 8.0), pytest.approx(0.8 * 0.5))]


def test_a_mask_below_the_refinement_threshold_is_centred_on_the_contour_integer_centroid():
    # peaks at x = 2 (0.5) and x = 9 (0.9) of one 12-px row; only x 0-1 are grouped to x = 2 (the rest,
    # the peak itself included, to x = 9), so that mask's highest centre value is 0 < 0.3: the release
    # labels it at the contour's int-truncated centroid (x 5.5 → 5) with weight = its class probability
    semantic = np.full((1, 12), CLS, np.uint8)
    center = np.zeros((1, 12))
    center[0, 2], center[0, 9] = 0.5, 0.9
    offset = np.zeros((2, 1, 12))
    offset[1, 0, :2] = 2.0 - np.arange(2)
    offset[1, 0, 2:] = 9.0 - np.arange(2, 12)
    found = _segment(semantic, np.full((1, 12), 0.6), center, offset, threshold=0.3, keep_centerless=False,
                     score_rule="refinement")
    assert [(f.center, f.score, int(f.mask.sum())) for f in found] == [
        ((0.0, 9.0), pytest.approx(0.9 * 0.6), 10), ((0.0, 5.0), pytest.approx(0.6), 2)]


def test_inference_treats_a_centre_value_of_one_or_more_as_a_clustered_centre():
    semantic, center, offset = _peaks_in_a_row(1)
    center[0, 3] = 1.2
    [found] = _segment(semantic, np.full(semantic.shape, 0.5), center, offset)
    assert found.score == pytest.approx(0.5 * 0.5)  # the release's `center_score >= 1` rule


def test_unknown_score_rule_is_an_error():
    semantic, center, offset = _peaks_in_a_row(1)
    with pytest.raises(ValueError, match="score rule"):
        _segment(semantic, np.full(semantic.shape, 0.5), center, offset, score_rule="mean")


@pytest.mark.parametrize("score_rule", ["center-class", "class", "refinement"])
def test_the_padded_box_of_a_component_gives_the_same_instances_as_the_whole_image(score_rule):
    """segment_instances splits each component on its bounding box padded by nms_kernel // 2; the result
    must equal component_instances run on the whole image, component by component."""
    rng = np.random.default_rng(0)
    h, w, nms = 40, 48, 7
    semantic = rng.integers(0, 3, (h, w)).astype(np.uint8)
    semantic = np.kron(semantic[::4, ::4], np.ones((4, 4), np.uint8))  # blocky components of classes 1, 2
    prob = rng.uniform(0.2, 1.0, (3, h, w)).astype(np.float32)
    center = rng.uniform(0.0, 0.6, (2, h, w)).astype(np.float32)
    offset = rng.normal(0.0, 2.0, (2, h, w)).astype(np.float32)
    options = dict(threshold=0.3, nms_kernel=nms, cluster=ClusterConfig(magnitude_threshold=3.0),
                   max_per_component=5 if score_rule == "refinement" else None,
                   keep_centerless=score_rule != "refinement", score_rule=score_rule)
    found = segment_instances(semantic, prob, center, offset, np.array([1, 2]), min_area=3, **options)
    expected = []
    for c, cls in enumerate([1, 2]):
        labels, n = component_labels(semantic == cls, 8)
        for k in range(1, n + 1):
            if (labels == k).sum() >= 3:
                expected += component_instances(labels == k, cls, prob[cls], center[c], offset, **options)
    assert len(found) == len(expected) > 10
    for f, e in zip(found, expected):
        assert np.array_equal(f.mask, e.mask) and f.cls == e.cls
        assert f.score == pytest.approx(e.score) and f.center == pytest.approx(e.center)


def _two_clusters_and_a_bar():
    """One component: two 20-px zero-offset clusters, centroids (3.5, 3.0) (rows 2-5, cols 1-5) and
    (3.0, 17.5) (rows 1-5, cols 16-19), joined by a bar (row 3, cols 6-15) whose pixels all point to
    (3, 10.2): nearer (3.5, 3.0) than (3.0, 17.5) (52.09 vs 53.29 px²), but nearer (3, 17) than (3, 3)."""
    semantic = np.zeros((7, 21), np.uint8)
    semantic[2:6, 1:6] = semantic[1:6, 16:20] = semantic[3, 6:16] = CLS
    offset = np.zeros((2, 7, 21), np.float32)
    offset[1, 3, 6:16] = 10.2 - np.arange(6, 16)
    return semantic, offset


@pytest.mark.parametrize("rule,bar_joins", [("centroid", (3.5, 3.0)), ("centroid-int", (3.0, 17.0))])
def test_pixels_are_grouped_to_the_float_or_the_int_truncated_cluster_centroid(rule, bar_joins):
    semantic, offset = _two_clusters_and_a_bar()
    found = _segment(semantic, np.full(semantic.shape, 0.8), np.full(semantic.shape, 0.06), offset,
                     cluster=ClusterConfig(center=rule))  # 0.06: no peak above 0.1, clusters kept (> 0.05)
    assert len(found) == 2
    bar = next(f for f in found if f.mask[3, 10])
    assert bar.center == bar_joins and bar.mask[3, 6:16].all() and bar.mask.sum() == 30
