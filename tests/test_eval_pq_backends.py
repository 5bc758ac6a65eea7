"""The hotcoco PQ backend against the native one (itself checked against panopticapi in
test_eval_panoptic.py): the same per-category tp/fp/fn (exactly), Σiou, PQ/SQ/RQ and per-class values to
1e-12, on random cases and on the edge cases of the protocol — crowd regions (several per category: the
last one wins), void in the GT and in predictions, predictions mostly on void (ignored), stuff predicted
on void, empty images, GT PNG ids absent from the GT JSON — and the same errors. hotcoco is the default
backend and a locked dependency: these tests do not skip.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.evaluation import EvaluationError, evaluate_files
from bench.evaluation.panoptic import DEFAULT_PQ_BACKEND, PQ_BACKENDS, pq_backend
from bench.evaluation.synth import write_panoptic_predictions, write_split
from test_eval_panoptic import REF_CATS, random_panoptic_case

TOL = 1e-12  # metrics in percent


def run_both(tmp_path, gt_images, preds, **options):
    write_split(tmp_path / "ds", "val", REF_CATS, gt_images)
    write_panoptic_predictions(tmp_path / "pred.json", preds, REF_CATS)
    out = {}
    for backend in ("native", "hotcoco"):
        out[backend] = evaluate_files("pq", gt_root=tmp_path / "ds", split="val", predictions=tmp_path / "pred.json",
                                      backend=backend, **options)
    return out["native"], out["hotcoco"]


def assert_agree(native, hot):
    assert native.metrics.keys() == hot.metrics.keys()
    for k, v in native.metrics.items():
        assert (math.isnan(v) and math.isnan(hot.metrics[k])) or hot.metrics[k] == pytest.approx(v, abs=TOL), k
    assert native.per_class.keys() == hot.per_class.keys()
    for key, per in native.per_class.items():
        assert per.keys() == hot.per_class[key].keys()
        for c, v in per.items():
            w = hot.per_class[key][c]
            assert (math.isnan(v) and math.isnan(w)) or w == pytest.approx(v, abs=TOL), (key, c)
    for k in ("pq.images", "pq.pred_segments", "pq.gt_segments", "pq.gt_crowd_segments", "pq.categories_all",
              "pq.categories_th", "pq.categories_st"):
        assert native.counts.get(k, 0) == hot.counts.get(k, 0), k


def stats_of(tmp_path, backend):
    """Per-category (Σiou, tp, fp, fn) of the evaluator a backend filled."""
    from bench.evaluation.gt import CanonicalGT, read_json
    from bench.evaluation.panoptic import PanopticEvaluator

    gt = CanonicalGT.load(tmp_path / "ds", "val")
    ev = PanopticEvaluator(gt)
    pred = read_json(tmp_path / "pred.json")
    PQ_BACKENDS[backend](ev, [(a["image_id"], a) for a in pred["annotations"]], tmp_path / "pred.json", pred, None,
                         1)
    return ev.stats()


@pytest.mark.parametrize("seed", range(10))
def test_hotcoco_agrees_with_native_on_random_cases(tmp_path, seed):
    gt_images, preds = random_panoptic_case(seed, n_images=6, h=40, w=56)
    assert_agree(*run_both(tmp_path, gt_images, preds))
    native, hot = stats_of(tmp_path, "native"), stats_of(tmp_path, "hotcoco")
    assert native.keys() == hot.keys()
    for c in native:
        assert native[c][1:] == hot[c][1:], c  # tp, fp, fn exactly
        assert hot[c][0] == pytest.approx(native[c][0], abs=1e-12)


def edge_case_images():
    """Four images, 12×16: each one of the protocol's corner cases."""
    h, w = 12, 16
    gt_images, preds = [], []
    # 1: two crowd regions of category 1 (#7 then #8: #8 wins), a prediction on #7 (FP) and one on #8
    #    (ignored); sky with a void band; a sky prediction spilling onto the void
    ids = np.full((h, w), 40)
    ids[0:4, 0:4], ids[4:8, 0:4], ids[:, 15] = 7, 8, 0
    segs = [{"id": 7, "category_id": 1, "iscrowd": 1}, {"id": 8, "category_id": 1, "iscrowd": 1},
            {"id": 40, "category_id": 4, "iscrowd": 0}]
    pr = np.full((h, w), 40)
    pr[0:4, 0:4], pr[4:8, 0:4] = 1, 2
    preds.append((1, pr, [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 1}, {"id": 40, "category_id": 4}]))
    gt_images.append({"id": 1, "ids": ids, "segments": segs})
    # 2: GT all void; predictions: stuff mostly on void (ignored) — an all-void image has no GT to match
    ids = np.zeros((h, w), int)
    pr = np.zeros((h, w), int)
    pr[0:6] = 41
    preds.append((2, pr, [{"id": 41, "category_id": 5}]))
    gt_images.append({"id": 2, "ids": ids, "segments": []})
    # 3: prediction all void (every GT segment a FN); a thing next to grass
    ids = np.full((h, w), 50)
    ids[2:6, 2:8] = 51
    preds.append((3, np.zeros((h, w), int), []))
    gt_images.append({"id": 3, "ids": ids, "segments": [{"id": 50, "category_id": 5, "iscrowd": 0},
                                                        {"id": 51, "category_id": 2, "iscrowd": 0}]})
    # 4: IoU exactly 0.5 (not a match) and just above; a stuff prediction half on void (a FP, not ignored)
    ids = np.full((h, w), 60)
    ids[0:2, 0:8] = 61  # 16 px thing 3
    ids[10:12, :] = 0
    pr = np.full((h, w), 60)
    pr[0:2, 4:12] = 62  # inter 8, union 16 + 16 - 8 = 24 → 1/3: no match
    pr[10:12, 0:8] = 63  # 16 px: 16 on void → ignored
    pr[8:10, 0:8], pr[10:12, 8:16] = 64, 64  # 32 px, 16 on void (= .5, not > .5) → FP of its category
    preds.append((4, pr, [{"id": 60, "category_id": 4}, {"id": 62, "category_id": 3}, {"id": 63, "category_id": 3},
                          {"id": 64, "category_id": 5}]))
    gt_images.append({"id": 4, "ids": ids, "segments": [{"id": 60, "category_id": 4, "iscrowd": 0},
                                                        {"id": 61, "category_id": 3, "iscrowd": 0}]})
    return gt_images, preds


def test_hotcoco_agrees_with_native_on_crowd_void_and_empty_edge_cases(tmp_path):
    gt_images, preds = edge_case_images()
    native, hot = run_both(tmp_path, gt_images, preds)
    assert_agree(native, hot)
    assert native.counts["pq.fp_ignored"] >= 2 and native.counts["pq.gt_crowd_segments"] == 2
    assert stats_of(tmp_path, "native") == stats_of(tmp_path, "hotcoco")
    assert any("fp_ignored" in n for n in hot.notes)


def test_hotcoco_agrees_when_the_gt_png_has_ids_missing_from_its_json(tmp_path):
    gt_images, preds = random_panoptic_case(3, n_images=3, h=40, w=56)
    for im in gt_images:  # drop one non-crowd GT segment from the JSON; its pixels stay in the PNG
        im["segments"] = im["segments"][1:]
    native, hot = run_both(tmp_path, gt_images, preds)
    assert native.counts["pq.gt_png_ids_not_in_json"] == 3
    assert_agree(native, hot)


@pytest.mark.parametrize("pred_segments, message", [
    ([{"id": 40, "category_id": 4}], "segment 7 is in the PNG but not in segments_info"),
    ([{"id": 40, "category_id": 4}, {"id": 7, "category_id": 1}, {"id": 8, "category_id": 1}],
     "segment 8 is in segments_info but not in the mask"),
    ([{"id": 40, "category_id": 4}, {"id": 7, "category_id": 77}], "segment with ID 7 has unknown category_id 77"),
    ([{"id": 40, "category_id": 4}, {"id": 7, "category_id": 1}, {"id": 7, "category_id": 1}],
     "duplicate segment id 7"),
])
def test_hotcoco_errors_name_the_file_and_the_image(tmp_path, pred_segments, message):
    ids = np.full((8, 8), 40)
    ids[0:3, 0:3] = 7
    write_split(tmp_path / "ds", "val", REF_CATS, [{"id": 1, "ids": ids, "segments": [
        {"id": 7, "category_id": 1}, {"id": 40, "category_id": 4}]}])
    write_panoptic_predictions(tmp_path / "p.json", [(1, ids, pred_segments)], REF_CATS)
    with pytest.raises(EvaluationError, match=message) as err:
        evaluate_files("pq", gt_root=tmp_path / "ds", split="val", predictions=tmp_path / "p.json", backend="hotcoco")
    assert "p.json" in str(err.value) and "image 1" in str(err.value)


def test_missing_prediction_png_is_an_error(tmp_path):
    gt_images, preds = random_panoptic_case(1, n_images=2)
    write_split(tmp_path / "ds", "val", REF_CATS, gt_images)
    write_panoptic_predictions(tmp_path / "pred.json", preds, REF_CATS)
    (tmp_path / "pred" / "000002.png").unlink()
    with pytest.raises(EvaluationError, match="000002.png: image 2: panoptic PNG is missing"):
        evaluate_files("pq", gt_root=tmp_path / "ds", split="val", predictions=tmp_path / "pred.json",
                       backend="hotcoco")


def test_backend_names_follow_the_coco_switch():
    assert DEFAULT_PQ_BACKEND == "hotcoco" and pq_backend("hotcoco") == "hotcoco"
    assert pq_backend("pycocotools") == pq_backend("faster-coco-eval") == "native"
    with pytest.raises(EvaluationError, match="unknown backend 'x'"):
        pq_backend("x")
