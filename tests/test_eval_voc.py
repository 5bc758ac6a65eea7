"""VOC instance mAP — the chainercv protocol (BESTIE / P2Seg), as a specification.

Every expected value is derived by hand in a comment (AP = all-point VOC AP on the monotone
precision envelope: sum over recall steps of Δrecall × max precision at recall ≥ that step).
The last tests compare with chainercv 0.13.1 itself: its outputs on seeded random cases were
computed once in a throw-away environment and are stored here as literals.
"""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.evaluation import EVALUATORS, EvaluationError, Evaluator, VOCInstanceEvaluator, evaluate_files
from bench.evaluation.base import register_evaluator
from bench.evaluation.rle import encode
from bench.evaluation.synth import default_categories, make_gt, write_json, write_split
from bench.evaluation.voc import greedy_match, rle_iou_f32

CATS = default_categories(n_things=3, n_stuff=0)  # thing1, thing2, thing3 (ids 1..3)


def rect(r0, r1, c0, c1, shape=(10, 10)):
    """Boolean mask with rows r0..r1-1 and columns c0..c1-1 set."""
    m = np.zeros(shape, bool)
    m[r0:r1, c0:c1] = True
    return m


def pred(mask, score, category_id=1):
    return {"category_id": category_id, "segmentation": encode(mask), "score": score}


def evaluate(gt, preds_by_image, **kw):
    ev = VOCInstanceEvaluator(gt, **kw)
    for image_id, recs in preds_by_image.items():
        ev.process(image_id, recs)
    return ev.summarize(), ev


# --- IoU ------------------------------------------------------------------------------------

def test_rle_iou_equals_chainercv_pixel_iou_on_random_masks():
    rng = np.random.default_rng(0)
    a = rng.random((6, 17, 23)) < rng.random((6, 1, 1))
    b = rng.random((5, 17, 23)) < rng.random((5, 1, 1))
    a[0] = False  # an empty prediction: IoU 0 with everything (chainercv: 0 / |B| = 0)
    ours = rle_iou_f32([encode(m) for m in a], [encode(m) for m in b])
    # chainercv.utils.mask_iou: bitwise_and.sum() / bitwise_or.sum(), stored in a float32 array
    ref = np.empty((6, 5), np.float32)
    for i in range(6):
        for j in range(5):
            ref[i, j] = np.bitwise_and(a[i], b[j]).sum() / np.bitwise_or(a[i], b[j]).sum()
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, ref)


def test_iou_of_exactly_half_is_a_hit_at_0_5_but_not_at_0_7():
    # GT: 4 columns x 10 rows = 40 px; prediction: 2 of those columns = 20 px → IoU = 20/40 = 0.5.
    gt = make_gt(CATS, [(1, 10, 10)], [{"image_id": 1, "category_id": 1, "mask": rect(0, 10, 0, 4)}])
    m, _ = evaluate(gt, {1: [pred(rect(0, 10, 0, 2), 0.9)]})
    # IoU >= t is a hit: TP at 0.25 and 0.5 (AP 100), FP at 0.7 and 0.75 (AP 0).
    assert m == {"voc.mAP25": 100.0, "voc.mAP50": 100.0, "voc.mAP70": 0.0, "voc.mAP75": 0.0}


# --- matching -------------------------------------------------------------------------------

def test_second_detection_of_one_gt_is_a_false_positive():
    # GT A (cols 0-4) and B (cols 5-9) of class 1. p1 = A (0.9), p2 = A again (0.8), p3 = B (0.7).
    # Sorted: p1 TP (A), p2 FP (A already taken), p3 TP (B); n_pos = 2.
    # tp = [1,1,2], fp = [0,1,1] → prec = [1, 1/2, 2/3], rec = [1/2, 1/2, 1].
    # envelope over recall steps 0→.5 (max prec 1) and .5→1 (max prec 2/3): AP = .5·1 + .5·2/3 = 5/6.
    A, B = rect(0, 10, 0, 5), rect(0, 10, 5, 10)
    gt = make_gt(CATS, [(1, 10, 10)], [{"image_id": 1, "category_id": 1, "mask": A},
                                       {"image_id": 1, "category_id": 1, "mask": B}])
    m, _ = evaluate(gt, {1: [pred(A, 0.9), pred(A, 0.8), pred(B, 0.7)]}, iou_thresholds=(0.5,))
    assert m["voc.mAP50"] == pytest.approx(100 * 5 / 6, abs=1e-12)


def test_no_fall_back_to_the_second_best_gt():
    # GT A = cols 0-4 (50 px), B = cols 5-9 (50 px). p1 = A (0.9) takes A.
    # p2 = cols 0-7 (80 px, 0.8): IoU with A = 50/80 = .625 (its argmax), with B = 30/100 = .3.
    # At t = 0.25 both overlaps are hits, but p2 only looks at A, already taken → FP (B stays free).
    # tp = [1,1], fp = [0,1], rec = [.5,.5] → AP = .5·1 = 0.5 (a fall-back would give 1.0).
    A, B = rect(0, 10, 0, 5), rect(0, 10, 5, 10)
    gt = make_gt(CATS, [(1, 10, 10)], [{"image_id": 1, "category_id": 1, "mask": A},
                                       {"image_id": 1, "category_id": 1, "mask": B}])
    m, _ = evaluate(gt, {1: [pred(A, 0.9), pred(rect(0, 10, 0, 8), 0.8)]}, iou_thresholds=(0.25,))
    assert m["voc.mAP25"] == 50.0


def test_greedy_match_takes_the_first_gt_on_equal_iou_and_marks_it():
    iou = np.array([[0.6, 0.6], [0.6, 0.6], [0.2, 0.7]], np.float32)
    # row 0 → argmax GT 0 (first on ties) TP; row 1 → GT 0 again FP (no fall-back to GT 1);
    # row 2 → GT 1 TP at 0.5, miss at 0.75.
    np.testing.assert_array_equal(greedy_match(iou, (0.5, 0.75)), [[1, 0, 1], [0, 0, 0]])


def test_ties_in_scores_follow_numpy_argsort_reversed():
    # (numpy's default sort keeps ties of <= 16 elements in input order on the tested machines,
    # numpy 1.26 and 2.4 on AVX2; numpy does not promise it — see docs/evaluation.md.)
    # One GT A; two predictions with the SAME score 0.5: one is A (TP), one is elsewhere (FP).
    # Per image, order = argsort()[::-1] of [.5, .5] = [1, 0]: the later record first. The global
    # sort reverses the tie again, so the record that comes FIRST in the file ranks first.
    A = rect(0, 5, 0, 5)
    gt = make_gt(CATS, [(1, 10, 10)], [{"image_id": 1, "category_id": 1, "mask": A}])
    fp_mask = rect(6, 10, 6, 10)
    # TP first in the file: tp=[1,1], fp=[0,1], rec=[1,1] → AP = 1·1 = 1.
    m1, _ = evaluate(gt, {1: [pred(A, 0.5), pred(fp_mask, 0.5)]}, iou_thresholds=(0.5,))
    # FP first in the file: prec=[0, .5], rec=[0, 1] → AP = (1-0)·.5 = 0.5.
    m2, _ = evaluate(gt, {1: [pred(fp_mask, 0.5), pred(A, 0.5)]}, iou_thresholds=(0.5,))
    assert (m1["voc.mAP50"], m2["voc.mAP50"]) == (100.0, 50.0)


# --- classes --------------------------------------------------------------------------------

def test_class_without_gt_is_nan_and_left_out_of_the_mean():
    # class 1: perfect (AP 100). class 2: predictions but no GT anywhere → rec None → NaN.
    # class 3: neither → NaN. mAP = nanmean = 100.
    A = rect(0, 5, 0, 5)
    gt = make_gt(CATS, [(1, 10, 10)], [{"image_id": 1, "category_id": 1, "mask": A}])
    m, ev = evaluate(gt, {1: [pred(A, 0.9), pred(rect(5, 10, 5, 10), 0.8, category_id=2)]}, iou_thresholds=(0.5,))
    assert m["voc.mAP50"] == 100.0
    per = ev.per_class()["voc.AP50"]
    assert per["thing1"] == 100.0 and math.isnan(per["thing2"]) and math.isnan(per["thing3"])
    assert ev.counts()["voc.mAP50.classes_nan"] == 2


def test_class_with_gt_and_no_prediction_has_ap_zero():
    # class 1 perfect (100); class 2 has GT, no prediction: prec = rec = [] → AP 0. mAP = 50.
    gt = make_gt(CATS, [(1, 10, 10)], [{"image_id": 1, "category_id": 1, "mask": rect(0, 5, 0, 5)},
                                       {"image_id": 1, "category_id": 2, "mask": rect(5, 10, 5, 10)}])
    m, ev = evaluate(gt, {1: [pred(rect(0, 5, 0, 5), 0.9)]}, iou_thresholds=(0.5,))
    assert m["voc.mAP50"] == 50.0
    assert ev.per_class()["voc.AP50"]["thing2"] == 0.0


def test_empty_predictions_give_zero_not_a_crash():
    gt = make_gt(CATS, [(1, 10, 10), (2, 10, 10)], [{"image_id": 1, "category_id": 1, "mask": rect(0, 5, 0, 5)}])
    m, ev = evaluate(gt, {})  # nothing processed: images count as without predictions, GT still counts
    assert m == {"voc.mAP25": 0.0, "voc.mAP50": 0.0, "voc.mAP70": 0.0, "voc.mAP75": 0.0}
    assert ev.counts()["voc.images_not_processed"] == 2


def test_crowd_gt_is_left_out_and_a_prediction_on_it_is_a_false_positive():
    # GT: crowd region C (class 1) and instance B (class 1). p_c on C (0.9) → FP (crowd is not GT);
    # p_b = B (0.8) → TP. n_pos = 1: prec = [0, .5], rec = [0, 1] → AP = 0.5.
    C, B = rect(0, 5, 0, 5), rect(5, 10, 5, 10)
    gt = make_gt(CATS, [(1, 10, 10)], [{"image_id": 1, "category_id": 1, "mask": C, "iscrowd": 1},
                                       {"image_id": 1, "category_id": 1, "mask": B}])
    m, ev = evaluate(gt, {1: [pred(C, 0.9), pred(B, 0.8)]}, iou_thresholds=(0.5,))
    assert m["voc.mAP50"] == 50.0
    assert ev.counts()["voc.gt_crowd_excluded"] == 1


def test_ground_truth_as_prediction_reads_100_at_every_threshold(tmp_path):
    rng = np.random.default_rng(1)
    images = []
    for i in range(1, 4):
        ids = np.zeros((20, 30), np.int64)
        segs = []
        for k in range(4):
            y, x = rng.integers(0, 15), rng.integers(0, 25)
            ids[y:y + 5, x:x + 5] = 10 * i + k + 1
        for s in np.unique(ids[ids > 0]):
            segs.append({"id": int(s), "category_id": int(s % 3) + 1})
        images.append({"id": i, "ids": ids, "segments": segs})
    write_split(tmp_path / "ds", "val", CATS, images)
    gt = json.loads((tmp_path / "ds/val/instances.json").read_text())
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"],
                "score": 1.0} for a in gt["annotations"]]
    write_json(tmp_path / "pred.json", results)
    res = evaluate_files("voc", gt_root=tmp_path / "ds", split="val", predictions=tmp_path / "pred.json",
                         iou_thresholds=(0.25, 0.5, 0.7, 0.75, 0.9))
    assert res.metrics == {"voc.mAP25": 100.0, "voc.mAP50": 100.0, "voc.mAP70": 100.0, "voc.mAP75": 100.0,
                           "voc.mAP90": 100.0}
    assert res.counts["voc.predictions"] == len(results) and res.counts["voc.images"] == 3


# --- contract -------------------------------------------------------------------------------

def test_merge_of_shards_equals_one_pass_and_image_order_does_not_matter():
    cases = random_case(5)
    gt, preds = build(cases)
    one, _ = evaluate(gt, preds)
    a, b = VOCInstanceEvaluator(gt), VOCInstanceEvaluator(gt)
    for iid in reversed(list(preds)):  # processed out of order, in two shards
        (a if iid % 2 else b).process(iid, preds[iid])
    assert a.merge(b).summarize() == one
    # across a process boundary only the state travels (no ground truth); it merges the same way
    c, d = VOCInstanceEvaluator(gt), VOCInstanceEvaluator(gt)
    for iid in preds:
        (c if iid <= 2 else d).process(iid, preds[iid])
    shipped = pickle.loads(pickle.dumps(d))
    assert "gt" not in shipped.__dict__
    assert c.merge(shipped).summarize() == one
    with pytest.raises(EvaluationError, match="different ground truth or options"):
        a.merge(VOCInstanceEvaluator(gt, iou_thresholds=(0.5,)))


def test_registry_rejects_duplicate_names():
    assert EVALUATORS["voc"] is VOCInstanceEvaluator
    with pytest.raises(KeyError, match="already registered"):
        register_evaluator("voc")(type("Other", (VOCInstanceEvaluator,), {}))
    assert issubclass(EvaluationError, ValueError) and issubclass(VOCInstanceEvaluator, Evaluator)


def test_evaluation_never_imports_methods_datasets_or_the_pipeline():
    code = ("import sys, bench.evaluation; "
            "print([m for m in sys.modules if m.split('.')[0] in ('methods', 'datasets', 'torch') "
            "or m.startswith(('bench.stages', 'bench.cli', 'bench.commands'))])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


def test_unknown_option_and_duplicate_threshold_keys_are_errors(tmp_path):
    gt = make_gt(CATS, [(1, 10, 10)], [])
    with pytest.raises(EvaluationError, match="duplicate metric keys"):
        VOCInstanceEvaluator(gt, iou_thresholds=(0.5, 0.501))
    with pytest.raises(EvaluationError, match="unknown option"):
        evaluate_files("voc", gt_root=tmp_path, split="val", predictions=tmp_path / "p.json", iou_treshold=0.5)


# --- chainercv itself -------------------------------------------------------------------------

def random_case(seed, n_images=12, H=24, W=32, n_cls=4):
    """Seeded random images: GT rectangles, 0-2 noisy copies each (duplicates, wrong classes), FPs."""
    rng = np.random.RandomState(seed)
    images = []
    for _ in range(n_images):
        gt_masks, gt_labels = [], []
        for _ in range(rng.randint(0, 5)):
            m = np.zeros((H, W), bool)
            y0, x0 = rng.randint(0, H - 4), rng.randint(0, W - 4)
            m[y0:y0 + rng.randint(3, 12), x0:x0 + rng.randint(3, 14)] = True
            gt_masks.append(m)
            gt_labels.append(rng.randint(0, n_cls))
        pm, pl, ps = [], [], []
        for m, lab in zip(gt_masks, gt_labels):
            for _ in range(rng.randint(0, 3)):
                noise = rng.rand(H, W) < 0.15
                q = m ^ (noise & np.roll(m, rng.randint(-2, 3), axis=rng.randint(0, 2)))
                if rng.rand() < 0.3:
                    q = np.roll(q, rng.randint(-4, 5), axis=1)
                pm.append(q)
                pl.append(lab if rng.rand() > 0.1 else rng.randint(0, n_cls))
                ps.append(rng.rand())
        for _ in range(rng.randint(0, 3)):
            q = np.zeros((H, W), bool)
            y0, x0 = rng.randint(0, H - 4), rng.randint(0, W - 4)
            q[y0:y0 + rng.randint(2, 10), x0:x0 + rng.randint(2, 10)] = True
            pm.append(q)
            pl.append(rng.randint(0, n_cls))
            ps.append(rng.rand())
        images.append((gt_masks, gt_labels, pm, pl, ps))
    return images


def build(images, H=24, W=32):
    cats = default_categories(n_things=4, n_stuff=0)
    anns, preds = [], {}
    for i, (gm, gl, pm, pl, ps) in enumerate(images, start=1):
        anns += [{"image_id": i, "category_id": int(lab) + 1, "mask": m} for m, lab in zip(gm, gl)]
        preds[i] = [pred(m, float(s), int(lab) + 1) for m, lab, s in zip(pm, pl, ps)]
    return make_gt(cats, [(i, H, W) for i in range(1, len(images) + 1)], anns), preds


# chainercv.evaluations.eval_instance_segmentation_voc(..., iou_thresh=t)["map"] on random_case(seed),
# labels = category_id - 1, scores as float64 (the float32 runs gave the same numbers).
CHAINERCV_MAP = {
    0: {0.25: 0.3542487026862027, 0.5: 0.2413394764957265, 0.7: 0.2020232371794872, 0.75: 0.2020232371794872},
    1: {0.25: 0.3293371212121212, 0.5: 0.1356439393939394, 0.7: 0.10666666666666667, 0.75: 0.10666666666666667},
    2: {0.25: 0.3864087301587301, 0.5: 0.3864087301587301, 0.7: 0.36557539682539686, 0.75: 0.36557539682539686},
    3: {0.25: 0.4250541125541125, 0.5: 0.3732683982683983, 0.7: 0.290530303030303, 0.75: 0.290530303030303},
}


@pytest.mark.parametrize("seed", sorted(CHAINERCV_MAP))
@pytest.mark.parametrize("score_dtype", ["float64", "float32"])
def test_matches_chainercv_on_random_cases(seed, score_dtype):
    gt, preds = build(random_case(seed))
    m, _ = evaluate(gt, preds, score_dtype=score_dtype)
    for t, expected in CHAINERCV_MAP[seed].items():
        assert m[f"voc.mAP{round(100 * t)}"] == pytest.approx(100 * expected, abs=1e-12)
