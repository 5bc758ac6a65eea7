"""Semantic mIoU from a confusion matrix with ignore label 255, as a specification."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.evaluation import EvaluationError, SemanticEvaluator, evaluate_files
from bench.evaluation.gt import CanonicalGT
from bench.evaluation.synth import write_semantic_predictions, write_split

# semantic indices: 0 = sky (stuff, id 3), 1 = thing1 (id 1), 2 = thing2 (id 2)
CATS = [{"id": 1, "name": "thing1", "isthing": 1}, {"id": 2, "name": "thing2", "isthing": 1},
        {"id": 3, "name": "sky", "isthing": 0}]


def dataset(tmp_path, sem_maps):
    """One image per semantic map (index 0 → a sky segment, 1 → thing1, 2 → thing2, 255 → void)."""
    images = []
    for i, sem in enumerate(sem_maps, start=1):
        sem = np.asarray(sem)
        ids = np.zeros(sem.shape, np.int64)
        seg_cat = {1000 * i: 3, 1000 * i + 1: 1, 1000 * i + 2: 2}  # ids unique across the split
        for index, seg in ((0, 1000 * i), (1, 1000 * i + 1), (2, 1000 * i + 2)):
            ids[sem == index] = seg
        segs = [{"id": s, "category_id": c} for s, c in seg_cat.items() if (ids == s).any()]
        images.append({"id": i, "ids": ids, "segments": segs})
    write_split(tmp_path / "ds", "val", CATS, images)
    return CanonicalGT.load(tmp_path / "ds", "val")


def test_miou_with_ignore_by_hand(tmp_path):
    gt_map = [[0, 0, 1, 1],
              [0, 255, 1, 1]]
    pred = np.array([[0, 1, 1, 1],
                     [1, 0, 255, 1]])
    # (1,1) is GT-ignore: excluded whatever is predicted there.
    # sky (0):    TP 1 [(0,0)], FP 0, FN 2 [(0,1), (1,0) predicted 1]           → 1/3
    # thing1 (1): TP 3, FP 2 [(0,1), (1,0)], FN 1 [(1,2) predicted 255]         → 3/6
    # thing2 (2): absent from GT and prediction                                 → NaN, left out
    ev = SemanticEvaluator(dataset(tmp_path, [gt_map]))
    ev.process(1, pred)
    m = ev.summarize()
    assert m["semantic.mIoU"] == pytest.approx(100 * (1 / 3 + 1 / 2) / 2)
    per = ev.per_class()["semantic.IoU"]
    assert per["sky"] == pytest.approx(100 / 3) and per["thing1"] == 50.0 and math.isnan(per["thing2"])
    c = ev.counts()
    assert (c["semantic.pixels"], c["semantic.pixels_ignored"], c["semantic.pixels_predicted_void"]) == (7, 1, 1)


def test_ground_truth_as_prediction_reads_100_and_files_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    maps = [rng.choice([0, 1, 2, 255], size=(12, 9)) for _ in range(3)]
    dataset(tmp_path, maps)
    write_semantic_predictions(tmp_path / "pred", {f"{i:06d}": np.where(m == 255, 0, m) for i, m in
                                                   enumerate(maps, start=1)})
    res = evaluate_files("semantic", gt_root=tmp_path / "ds", split="val", predictions=tmp_path / "pred")
    assert res.metrics == {"semantic.mIoU": 100.0}
    assert res.counts["semantic.images"] == 3


def test_prediction_values_outside_the_classes_are_errors_naming_the_file(tmp_path):
    dataset(tmp_path, [[[0, 1], [1, 0]]])
    write_semantic_predictions(tmp_path / "pred", {"000001": np.array([[0, 7], [1, 0]])})
    with pytest.raises(EvaluationError, match=r"000001\.png: image 1: predicted value 7 outside \[0, 3\)"):
        evaluate_files("semantic", gt_root=tmp_path / "ds", split="val", predictions=tmp_path / "pred")


def test_missing_file_and_size_mismatch_are_errors(tmp_path):
    gt = dataset(tmp_path, [[[0, 1], [1, 0]]])
    (tmp_path / "pred").mkdir()
    with pytest.raises(EvaluationError, match=r"000001\.png: image 1: PNG file is missing"):
        evaluate_files("semantic", gt_root=tmp_path / "ds", split="val", predictions=tmp_path / "pred")
    with pytest.raises(EvaluationError, match="prediction is"):
        SemanticEvaluator(gt).process(1, np.zeros((3, 3), np.uint8))
    with pytest.raises(EvaluationError, match="no prediction for the image with id: 1"):
        SemanticEvaluator(gt).summarize()


def test_merge_adds_confusion_matrices(tmp_path):
    gt = dataset(tmp_path, [[[0, 1]], [[1, 1]]])
    a, b, one = SemanticEvaluator(gt), SemanticEvaluator(gt), SemanticEvaluator(gt)
    a.process(1, np.array([[0, 0]]))
    b.process(2, np.array([[1, 0]]))
    one.process(1, np.array([[0, 0]]))
    one.process(2, np.array([[1, 0]]))
    # sky: TP 1, FP 2, FN 0 → 1/3; thing1: TP 1, FP 0, FN 2 → 1/3; mIoU = 1/3
    assert a.merge(b).summarize() == one.summarize() == {"semantic.mIoU": pytest.approx(100 / 3)}
