"""`bench point-filter`: the training-free baseline's one-point rule applied to predicted val masks."""

import numpy as np

from bench.cli import main
from bench.commands.bestie import Cues
from bench.commands.point_filter import one_point_instances, points_held
from bench.evaluation.records import InstancePredictions
from bench.evaluation.rle import encode

A, B = 1, 2  # two thing classes (semantic index = category id here)


def _mask(rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros((8, 8), dtype=bool)
    mask[rows, cols] = True
    return mask


def _record(index: int, image_id: int, category: int, mask: np.ndarray) -> dict:
    return {"index": index, "image_id": image_id, "category_id": category, "score": 0.5,
            "segmentation": encode(mask)}


def _cues(points: list[tuple[int, int, int]]) -> Cues:
    return Cues(np.array([(y, x) for y, x, _ in points], dtype=np.int64).reshape(-1, 2),
                np.array([c for *_, c in points], dtype=np.int64), [None] * len(points))


def test_points_held_counts_the_points_on_the_mask():
    mask = _mask(slice(0, 4), slice(0, 4))
    assert points_held(mask, np.array([[0, 0], [3, 3], [4, 4], [7, 0]])) == 2
    assert points_held(mask, np.zeros((0, 2), dtype=np.int64)) == 0


def test_only_masks_holding_exactly_one_point_of_their_class_are_kept():
    left, right, bottom = _mask(slice(0, 4), slice(0, 4)), _mask(slice(0, 4), slice(4, 8)), _mask(slice(4, 8), slice(0, 8))
    predictions = InstancePredictions(by_image={
        10: [_record(0, 10, A, left),     # one A point: kept
             _record(1, 10, A, right),    # two A points (two touching objects merged): dropped
             _record(2, 10, B, bottom)],  # only an A point on it: no point of its class, dropped
        11: [_record(3, 11, A, left)],    # an image without points: dropped
    }, n_records=4)
    points = {10: _cues([(1, 1, A), (1, 5, A), (2, 6, A), (6, 3, A)])}
    kept, held = one_point_instances(predictions, points, semantic_index=lambda category: category)
    assert kept == [0]
    assert held == {"none": 2, "one": 1, "several": 1}


def test_kept_positions_follow_the_file_order_across_images():
    mask = _mask(slice(0, 4), slice(0, 4))
    predictions = InstancePredictions(by_image={
        20: [_record(2, 20, A, mask)],
        10: [_record(0, 10, A, mask), _record(1, 10, B, mask)],
    }, n_records=3)
    points = {10: _cues([(0, 0, A), (1, 1, B)]), 20: _cues([(3, 3, A)])}
    kept, _ = one_point_instances(predictions, points, semantic_index=lambda category: category)
    assert kept == [0, 1, 2]


def test_a_row_that_would_overwrite_its_source_is_refused(capsys):
    code = main(["point-filter", "--dataset", "voc", "--source", "bestie/points", "--row", "bestie/points"])
    assert code == 2
    assert "would overwrite its --source" in capsys.readouterr().err
