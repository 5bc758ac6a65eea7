"""BESTIE inference: the release's ``val_clean`` (image-label cleaning; grouping to the val points) and flip TTA."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from method_configs import bestie_config
from methods.bestie.train import annotated_instances, clean_probabilities, infer_instances, predict_outputs

THINGS = [1, 2]  # semantic indices of the thing classes; 0 = background
CONFIG = bestie_config(supervision="points", flip_tta=False, min_area=1, nms_kernel=3, cluster=None, val_clean=True)


def _outputs(prob: np.ndarray) -> dict[str, np.ndarray]:
    """Zero centres and zero offsets: every pixel votes for itself (Eq. 1 = nearest point)."""
    _, h, w = prob.shape
    return {"prob": prob.astype(np.float32), "center": np.zeros((len(THINGS), h, w), np.float32),
            "offset": np.zeros((2, h, w), np.float32)}


def test_cleaning_zeroes_only_the_thing_classes_absent_from_the_image_labels():
    prob = np.stack([np.full((2, 2), 0.2), np.full((2, 2), 0.3), np.full((2, 2), 0.5)])
    cleaned = clean_probabilities(prob, THINGS, present=[1])
    assert np.array_equal(cleaned[2], np.zeros((2, 2))) and np.array_equal(cleaned[:2], prob[:2])
    assert np.array_equal(prob[2], np.full((2, 2), 0.5))  # the input is left alone


def test_points_split_a_class_strip_between_them_by_eq1_with_mean_probability_scores():
    # a 1×6 strip of class 1 (prob .9, background .1); points at x = 0 and x = 5: with zero offsets the
    # left three pixels join the first point, the right three the second; score = mean class prob = .9
    prob = np.zeros((3, 1, 6))
    prob[0], prob[1] = 0.1, 0.9
    points = (np.array([[0, 0], [0, 5]]), np.array([1, 1]))
    found = infer_instances(_outputs(prob), THINGS, CONFIG, present=[1], points=points)
    assert [f.mask[0].nonzero()[0].tolist() for f in found] == [[0, 1, 2], [3, 4, 5]]
    assert [f.cls for f in found] == [1, 1] and [f.score for f in found] == pytest.approx([0.9, 0.9])


def test_cleaning_moves_pixels_of_an_absent_class_to_the_next_best():
    # the right half argmaxes to class 2 (.6 vs .3), which the image labels do not list: cleaned, it is
    # class 1 (.3 > background .1) and joins class 1's single point; the absent class gets no instance
    prob = np.zeros((3, 1, 4))
    prob[0] = 0.1
    prob[1] = [0.9, 0.9, 0.3, 0.3]
    prob[2] = [0.0, 0.0, 0.6, 0.6]
    points = (np.array([[0, 0]]), np.array([1]))
    found = infer_instances(_outputs(prob), THINGS, CONFIG, present=[1], points=points)
    assert len(found) == 1 and found[0].mask[0].tolist() == [True] * 4
    assert found[0].score == pytest.approx((0.9 + 0.9 + 0.3 + 0.3) / 4)


def test_without_val_clean_the_centres_decide_and_the_points_are_not_needed():
    prob = np.zeros((3, 1, 6))
    prob[0], prob[1] = 0.1, 0.9
    found = infer_instances(_outputs(prob), THINGS, replace(CONFIG, val_clean=False))
    assert len(found) == 1 and found[0].mask.sum() == 6  # no centre: the component is one instance


@pytest.mark.parametrize("score, expected", [("center-class", 0.5 * 0.9), ("class", 0.9)])
def test_the_inference_score_follows_config_score(score, expected):
    # one class-1 strip (prob .9) with one centre peak .5: the release's centre × class score, or the
    # mean class probability alone
    prob = np.zeros((3, 1, 6))
    prob[0], prob[1] = 0.1, 0.9
    outputs = _outputs(prob)
    outputs["center"][0, 0, 2] = 0.5
    [found] = infer_instances(outputs, THINGS, replace(CONFIG, val_clean=False, score=score))
    assert found.score == pytest.approx(expected)


def test_an_unknown_inference_score_is_an_error():
    with pytest.raises(ValueError, match="score must be one of"):
        replace(CONFIG, score="centre")


def test_image_setting_cleans_then_detects_centres():
    # class 2 wins the argmax on the right half but is absent from the labels: cleaned, the whole strip is
    # class 1, one component; a centre peak (.5 > .1) at x = 1 makes it one instance scored .5 × mean prob
    prob = np.zeros((3, 1, 4))
    prob[0] = 0.1
    prob[1] = [0.9, 0.9, 0.3, 0.3]
    prob[2] = [0.0, 0.0, 0.6, 0.6]
    outputs = _outputs(prob)
    outputs["center"][0, 0, 1] = 0.5
    found = infer_instances(outputs, THINGS, replace(CONFIG, supervision="image"), present=[1])
    assert len(found) == 1 and found[0].cls == 1 and found[0].mask[0].tolist() == [True] * 4
    assert found[0].score == pytest.approx(0.5 * 0.6)


@pytest.mark.parametrize("supervision, present, points", [("points", [1], None), ("points", None, "given"),
                                                          ("image", None, None)])
def test_val_clean_without_the_image_annotations_is_an_error(supervision, present, points):
    prob = np.zeros((3, 1, 2))
    given = (np.array([[0, 0]]), np.array([1])) if points else None
    with pytest.raises(ValueError, match="val_clean inference needs"):
        infer_instances(_outputs(prob), THINGS, replace(CONFIG, supervision=supervision), present=present,
                        points=given)


def _split_with_labels(labels: dict[int, list[int]]):
    from pathlib import Path
    from types import SimpleNamespace

    dataset = SimpleNamespace(semantic_index=lambda category_id: {0: 0, 12: 1, 15: 2}[category_id])
    images = [SimpleNamespace(id=1), SimpleNamespace(id=2)]
    return SimpleNamespace(dataset=dataset, images=images, image_labels=labels, root=Path("val"), name="val")


def test_image_labels_become_semantic_indices_per_image():
    from bench.inputs import image_label_classes

    assert image_label_classes(_split_with_labels({1: [15], 2: [12, 15]})) == {1: [2], 2: [1, 2]}



class _ColumnNet(torch.nn.Module):
    """Outputs that depend on the pixel column x = 0..3 (not flip-equivariant, so the flipped pass
    differs): semantic logits (x, -x), centre x, offsets (dy, dx) = (0, x)."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # predict_outputs reads the device from a parameter

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        column = torch.arange(x.shape[-1], dtype=torch.float32).expand(x.shape[0], 1, *x.shape[-2:])
        return {"semantic": torch.cat([column, -column], 1), "center": column,
                "offset": torch.cat([torch.zeros_like(column), column], 1)}


def _flip_tta(offsets: str) -> dict[str, np.ndarray]:
    return next(predict_outputs(_ColumnNet(), [np.zeros((1, 4, 3), np.uint8)], flip_tta=True,
                                flip_tta_offsets=offsets))


def test_flip_tta_averages_the_centres_but_keeps_the_unflipped_offsets_as_the_release():
    tta = _flip_tta("unflipped")
    assert np.allclose(tta["center"][0, 0], [1.5, 1.5, 1.5, 1.5])  # (x + (3 - x)) / 2
    assert np.allclose(tta["prob"][0, 0], tta["prob"][0, 0][::-1])  # averaged with its mirror: symmetric
    assert np.array_equal(tta["offset"][1, 0], [0.0, 1.0, 2.0, 3.0])  # the unflipped pass's dx


def test_flip_tta_can_average_the_offsets_with_dx_negated_back():
    tta = _flip_tta("average")
    assert np.allclose(tta["offset"][1, 0], [-1.5, -0.5, 0.5, 1.5])  # (x - (3 - x)) / 2
    assert np.array_equal(tta["offset"][0, 0], [0.0, 0.0, 0.0, 0.0])


def test_annotated_instances_keep_the_index_of_the_point_each_mask_was_grouped_to():
    # the exported train labels (bestie.export = network): a 1×6 strip of class 1 and points at x = 5 and
    # x = 0 (in that order): the right half joins point 0, the left half point 1
    prob = np.zeros((3, 1, 6))
    prob[0], prob[1] = 0.1, 0.9
    points = (np.array([[0, 5], [0, 0]]), np.array([1, 1]))
    found = annotated_instances(_outputs(prob), THINGS, CONFIG, present=[1], points=points)
    assert [(f.mask[0].nonzero()[0].tolist(), k) for f, k in found] == [([3, 4, 5], 0), ([0, 1, 2], 1)]


def test_annotated_instances_in_the_image_setting_keep_a_centreless_component_without_a_point():
    prob = np.zeros((3, 1, 6))
    prob[0], prob[2] = 0.1, 0.9  # class 2, absent from the image labels: cleaned away, nothing is left
    assert annotated_instances(_outputs(prob), THINGS, replace(CONFIG, supervision="image"), present=[1]) == []
    prob[1], prob[2] = 0.9, 0.0  # class 1, listed: no centre, so the whole component, no point index
    [(found, point)] = annotated_instances(_outputs(prob), THINGS, replace(CONFIG, supervision="image"), present=[1])
    assert found.mask.sum() == 6 and found.cls == 1 and point is None
