"""PQ / SQ / RQ with panopticapi ``pq_compute`` semantics, as a specification.

Hand-checked 4×10 images (40 px) show each rule: strict IoU > 0.5, void pixels removed from
the union, predictions mostly on void or on a crowd region of their category ignored, the
crowd "last one wins" rule, the thing/stuff split. The last test compares with panopticapi
itself (the ``panopticapi-lite`` 0.2.0 package, same code): its outputs on seeded random cases
were computed once in a throw-away environment and are stored here as literals.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.evaluation import EvaluationError, PanopticEvaluator, evaluate_files
from bench.evaluation.gt import CanonicalGT
from bench.evaluation.panoptic import OFFSET, intersection_table
from bench.evaluation.synth import write_panoptic_predictions, write_split

# thing1 (1), thing2 (2), stuff "sky" (3)
CATS = [{"id": 1, "name": "thing1", "isthing": 1}, {"id": 2, "name": "thing2", "isthing": 1},
        {"id": 3, "name": "sky", "isthing": 0}]
STUFF = 9  # segment id used for the sky


def grid(fill=0):
    return np.full((4, 10), fill, np.int64)


def run(tmp_path, gt_ids, gt_segments, pred_ids, pred_segments):
    write_split(tmp_path / "ds", "val", CATS, [{"id": 1, "ids": gt_ids, "segments": gt_segments}])
    ev = PanopticEvaluator(CanonicalGT.load(tmp_path / "ds", "val"))
    ev.process(1, pred_ids, pred_segments)
    return ev.summarize(), ev


def test_iou_of_exactly_half_is_not_a_match(tmp_path):
    # GT thing1 = row 0 cols 0-5 (6 px); sky = the other 34 px.
    gt = grid(STUFF)
    gt[0, 0:6] = 1
    # pred thing1 = row 0 cols 2-5 (4 px on GT) + row 1 cols 0-1 (2 px): inter 4, union 6+6-4 = 8 → .5
    pr = grid(STUFF)
    pr[0, 2:6] = 1
    pr[1, 0:2] = 1
    # sky: pred 34 px, inter 32 (GT sky minus row 1 cols 0-1), union 34+34-32 = 36 → 8/9, a TP.
    m, ev = run(tmp_path, gt, [{"id": 1, "category_id": 1}, {"id": STUFF, "category_id": 3}],
                pr, [{"id": 1, "category_id": 1}, {"id": STUFF, "category_id": 3}])
    # thing1: tp 0, fp 1, fn 1 → PQ = SQ = RQ = 0.  sky: PQ = SQ = 8/9, RQ = 1.
    assert ev.stats()[1] == (0.0, 0, 1, 1)
    assert m["pq.PQ_th"] == 0.0 and m["pq.PQ_st"] == pytest.approx(800 / 9)
    assert m["pq.PQ"] == pytest.approx(400 / 9) and m["pq.RQ"] == 50.0


def test_void_pixels_are_removed_from_the_union(tmp_path):
    # GT thing1 = row 0 (10 px); void = row 1; sky = rows 2-3 (20 px).
    gt = grid(STUFF)
    gt[0] = 1
    gt[1] = 0
    # pred thing1 = row 0 cols 0-5 (6 px) + row 1 cols 0-3 (4 px on void) = 10 px.
    # union = 10 + 10 - 6 - 4 (void) = 10 → IoU .6: TP (6/14 = .43 without the void rule).
    # pred sky = 30 px: inter 20, pred ∩ void = 6 → union = 30 + 20 - 20 - 6 = 24 → IoU 20/24.
    pr = grid(STUFF)
    pr[0, 0:6] = 1
    pr[1, 0:4] = 1
    m, _ = run(tmp_path, gt, [{"id": 1, "category_id": 1}, {"id": STUFF, "category_id": 3}],
               pr, [{"id": 1, "category_id": 1}, {"id": STUFF, "category_id": 3}])
    assert m["pq.PQ_th"] == pytest.approx(60.0) and m["pq.PQ_st"] == pytest.approx(100 * 20 / 24)
    assert m["pq.PQ"] == pytest.approx((60.0 + 100 * 20 / 24) / 2) and m["pq.RQ"] == 100.0


def test_prediction_mostly_on_void_is_ignored_but_half_is_a_false_positive(tmp_path):
    # GT: sky = rows 0-1 (20 px), void = rows 2-3.
    gt = grid(0)
    gt[0:2] = STUFF
    pr = grid(0)
    pr[0:2] = STUFF
    # thing2 #5: 5 px on void (row 2 cols 0-4) + 3 px on sky (row 1 cols 0-2): 5/8 > .5 → ignored
    pr[2, 0:5] = 5
    pr[1, 0:3] = 5
    # thing2 #6: 4 px on void (row 3 cols 0-3) + 4 px on sky (row 1 cols 4-7): 4/8 = .5, not > .5 → FP
    pr[3, 0:4] = 6
    pr[1, 4:8] = 6
    # sky: pred 13 px, inter 13, union 13 + 20 - 13 = 20 → .65 TP
    m, ev = run(tmp_path, gt, [{"id": STUFF, "category_id": 3}],
                pr, [{"id": STUFF, "category_id": 3}, {"id": 5, "category_id": 2}, {"id": 6, "category_id": 2}])
    # thing2: fp 1 → PQ 0 (counted: tp+fp+fn > 0); thing1: nothing → left out; sky: .65
    assert ev.stats()[2] == (0.0, 0, 1, 0) and 1 not in ev.stats()
    assert m["pq.PQ"] == pytest.approx(32.5) and m["pq.PQ_th"] == 0.0 and m["pq.PQ_st"] == pytest.approx(65.0)
    assert ev.counts()["pq.fp_ignored"] == 1 and ev.counts()["pq.categories_th"] == 1


def test_prediction_on_a_crowd_region_of_its_own_category_is_ignored(tmp_path):
    # GT: thing1 crowd #7 = rows 0-1 cols 0-5 (12 px); sky = the other 28 px.
    gt = grid(STUFF)
    gt[0:2, 0:6] = 7
    pr = grid(STUFF)
    pr[0:2, 3:8] = 1  # thing1, 10 px: 6 in the thing1 crowd + 4 on sky → 6/10 > .5 → ignored
    pr[0:2, 0:3] = 2  # thing2, 6 px all inside the thing1 crowd: not its category's crowd → FP
    # sky: pred 24 px, inter 24, union 24 + 28 - 24 = 28 → 24/28
    m, ev = run(tmp_path, gt, [{"id": 7, "category_id": 1, "iscrowd": 1}, {"id": STUFF, "category_id": 3}],
                pr, [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 2}, {"id": STUFF, "category_id": 3}])
    # the crowd GT is never a FN; thing1 has no tp/fp/fn → left out; thing2 PQ 0; sky 24/28
    assert 1 not in ev.stats() and ev.stats()[2] == (0.0, 0, 1, 0)
    assert m["pq.PQ_st"] == pytest.approx(100 * 24 / 28) and m["pq.PQ"] == pytest.approx(50 * 24 / 28)
    assert ev.counts()["pq.fp_ignored"] == 1 and ev.counts()["pq.gt_crowd_segments"] == 1


@pytest.mark.parametrize("order, expected_pq", [((7, 8), 50.0), ((8, 7), 100.0)])
def test_only_the_last_crowd_region_of_a_category_counts(tmp_path, order, expected_pq):
    # Two thing1 crowd regions: #7 rows 0-1 cols 0-3, #8 rows 2-3 cols 0-3; sky elsewhere.
    gt = grid(STUFF)
    gt[0:2, 0:4] = 7
    gt[2:4, 0:4] = 8
    pr = grid(STUFF)
    pr[2:4, 0:4] = 0
    pr[0:2, 0:4] = 1  # thing1 prediction exactly on crowd #7
    # panopticapi keeps crowd_labels_dict[1] = the LAST crowd segment in the JSON.
    # Last = #8: the prediction covers none of it → FP → thing1 PQ 0, sky PQ 100 → PQ 50.
    # Last = #7: the prediction is ignored → thing1 left out → PQ = sky = 100.
    segs = [{"id": k, "category_id": 1, "iscrowd": 1} for k in order] + [{"id": STUFF, "category_id": 3}]
    m, _ = run(tmp_path, gt, segs, pr, [{"id": 1, "category_id": 1}, {"id": STUFF, "category_id": 3}])
    assert m["pq.PQ"] == expected_pq


def test_no_category_evaluated_gives_nan_with_a_note(tmp_path):
    m, ev = run(tmp_path, grid(0), [], grid(0), [])
    assert all(math.isnan(v) for v in m.values())
    assert any("divide by zero" in n for n in ev.notes())


@pytest.mark.parametrize("pred_segments, message", [
    ([{"id": 1, "category_id": 1}], "segment with ID 9 is presented in PNG and not presented in JSON"),
    ([{"id": 1, "category_id": 1}, {"id": 9, "category_id": 3}, {"id": 4, "category_id": 1}],
     r"segment IDs \[4\] are presented in JSON and not presented in PNG"),
    ([{"id": 1, "category_id": 1}, {"id": 9, "category_id": 77}], "segment with ID 9 has unknown category_id 77"),
    ([{"id": 1, "category_id": 1}, {"id": 1, "category_id": 1}, {"id": 9, "category_id": 3}], "duplicate segment id 1"),
])
def test_inconsistent_predictions_are_errors_naming_image_and_segment(tmp_path, pred_segments, message):
    gt = grid(STUFF)
    gt[0, 0:3] = 1
    with pytest.raises(EvaluationError, match=message) as err:
        run(tmp_path, gt, [{"id": 1, "category_id": 1}, {"id": STUFF, "category_id": 3}], gt, pred_segments)
    assert "image 1" in str(err.value)


def test_missing_or_unknown_images_are_errors(tmp_path):
    gt = grid(STUFF)
    write_split(tmp_path / "ds", "val", CATS, [{"id": i, "ids": gt, "segments": [{"id": STUFF, "category_id": 3}]}
                                              for i in (1, 2)])
    write_panoptic_predictions(tmp_path / "p.json", [(1, gt, [{"id": STUFF, "category_id": 3}])])
    with pytest.raises(EvaluationError, match="no prediction for the image with id: 2"):
        evaluate_files("pq", gt_root=tmp_path / "ds", split="val", predictions=tmp_path / "p.json")
    write_panoptic_predictions(tmp_path / "q.json", [(i, gt, [{"id": STUFF, "category_id": 3}]) for i in (1, 2, 3)])
    with pytest.raises(EvaluationError, match="image_id 3 is not an image"):
        evaluate_files("pq", gt_root=tmp_path / "ds", split="val", predictions=tmp_path / "q.json")


def test_ground_truth_as_prediction_reads_100(tmp_path):
    gt_images, _ = random_panoptic_case(7)
    write_split(tmp_path / "ds", "val", REF_CATS, gt_images)
    preds = []
    for im in gt_images:  # a prediction is the GT without its crowd regions (those pixels: void)
        crowd = [s["id"] for s in im["segments"] if s["iscrowd"]]
        ids = np.where(np.isin(im["ids"], crowd), 0, im["ids"])
        preds.append((im["id"], ids, [{"id": s["id"], "category_id": s["category_id"]}
                                      for s in im["segments"] if not s["iscrowd"]]))
    write_panoptic_predictions(tmp_path / "gt_pred.json", preds)
    res = evaluate_files("pq", gt_root=tmp_path / "ds", split="val", predictions=tmp_path / "gt_pred.json")
    assert {k: round(v, 10) for k, v in res.metrics.items()} == {f"pq.{m}{s}": 100.0 for m in ("PQ", "SQ", "RQ")
                                                                for s in ("", "_th", "_st")}
    assert res.counts["pq.gt_crowd_segments"] > 0 and res.counts.get("pq.fp_ignored", 0) == 0


def test_intersection_table_equals_panopticapi_unique_over_offset_ids():
    rng = np.random.default_rng(0)
    gt = rng.choice([0, 5, 70000, 123456], size=(30, 40)).astype(np.uint32)
    gt[0, 0] = 999  # an id missing from the GT JSON
    pred = rng.choice([0, 3, 4, 16777215], size=(30, 40)).astype(np.uint32)
    gt_ids, pred_ids = np.array([5, 70000, 123456], np.uint32), np.array([3, 4, 16777215], np.uint32)
    table, stray = intersection_table(gt, pred, gt_ids, pred_ids)
    labels, counts = np.unique(gt.astype(np.uint64) * OFFSET + pred.astype(np.uint64), return_counts=True)
    rows = {int(g): k for k, g in enumerate(gt_ids)} | {0: 3, 999: 4}
    cols = {int(p): k for k, p in enumerate(pred_ids)} | {0: 3}
    expected = np.zeros_like(table)
    for label, n in zip(labels, counts):
        expected[rows[int(label // OFFSET)], cols[int(label % OFFSET)]] = n
    np.testing.assert_array_equal(table, expected)
    assert stray == 1


# --- panopticapi itself -------------------------------------------------------------------------

REF_CATS = [{"id": 1, "name": "a", "isthing": 1}, {"id": 2, "name": "b", "isthing": 1},
            {"id": 3, "name": "c", "isthing": 1}, {"id": 4, "name": "sky", "isthing": 0},
            {"id": 5, "name": "grass", "isthing": 0}]


def random_panoptic_case(seed, n_images=8, h=24, w=32):
    """Seeded GT images (for write_split) and predictions: shifted, re-labelled and split segments,
    extra segments, void noise, crowd regions."""
    rng = np.random.RandomState(seed)
    gt_images, preds = [], []
    for image_id in range(1, n_images + 1):
        ids = np.zeros((h, w), np.int64)
        cats, crowd = {}, set()
        nxt = 1000 + 50 * image_id
        split = rng.randint(4, h - 4)
        ids[:split], cats[nxt] = nxt, 4
        ids[split:], cats[nxt + 1] = nxt + 1, 5 if rng.rand() < 0.8 else 4
        nxt += 2
        for _ in range(rng.randint(1, 6)):
            y, x = rng.randint(0, h - 4), rng.randint(0, w - 4)
            ids[y:y + rng.randint(3, 12), x:x + rng.randint(3, 14)] = nxt
            cats[nxt] = rng.randint(1, 4)
            if rng.rand() < 0.2:
                crowd.add(nxt)
            nxt += 1
        ids[rng.rand(h, w) < 0.04] = 0
        ids[rng.randint(0, h):, :rng.randint(0, 5)] = 0
        present = [int(s) for s in np.unique(ids) if s]
        gt_images.append({"id": image_id, "ids": ids,
                          "segments": [{"id": s, "category_id": cats[s], "iscrowd": int(s in crowd)} for s in present]})
        pids, pcats = ids.copy(), dict(cats)
        for s in present:
            r, m = rng.rand(), ids == s
            if r < 0.15:
                pids[m] = 0
                pids[np.roll(m, rng.randint(-4, 5), axis=1)] = s
            elif r < 0.25:
                pcats[s] = rng.randint(1, 6)
            elif r < 0.35:
                xs = np.nonzero(m)[1]
                pids[m & (np.arange(w)[None, :] < xs.mean())] = s + 500
                pcats[s + 500] = pcats[s]
        for k in range(rng.randint(0, 3)):
            y, x = rng.randint(0, h - 4), rng.randint(0, w - 4)
            pids[y:y + rng.randint(2, 8), x:x + rng.randint(2, 8)] = 90000 + k
            pcats[90000 + k] = rng.randint(1, 6)
        noise = rng.rand(h, w) < 0.05
        pids[noise] = 0
        segs = [{"id": int(s), "category_id": int(pcats[s])} for s in np.unique(pids) if s]
        rng.shuffle(segs)
        preds.append((image_id, pids, segs))
    return gt_images, preds


# panopticapi.evaluation.pq_compute on random_panoptic_case(seed) written with write_split /
# write_panoptic_predictions, run on a 2-core machine: [PQ, SQ, RQ] × 100 for All, Things, Stuff.
PANOPTICAPI = {
    0: {"": [67.396700850133, 93.86062714352012, 71.65007541478128],
        "_th": [66.79827097532765, 95.40571852252815, 69.74358974358975],
        "_st": [68.29434566234103, 91.5429900750081, 74.50980392156863]},
    1: {"": [58.73947026406974, 87.28991809995527, 67.47990500548046],
        "_th": [54.807344679589974, 88.09867310833924, 62.570028011204485],
        "_st": [64.63765864078938, 86.07678558737932, 74.84472049689441]},
    2: {"": [61.99978730279112, 85.02571192962594, 73.07219251336899],
        "_th": [53.45704859769596, 82.25472896805277, 65.9536541889483],
        "_st": [74.81389536043386, 89.18218637198572, 83.75]},
    3: {"": [50.02173714995093, 83.47766719022646, 58.96756150626119],
        "_th": [53.54333391444038, 82.62701992871104, 63.519910888331935],
        "_st": [44.739342003216755, 84.75363808249959, 52.139037433155075]},
}


@pytest.mark.parametrize("seed", sorted(PANOPTICAPI))
def test_matches_panopticapi_on_random_cases(tmp_path, seed):
    gt_images, preds = random_panoptic_case(seed)
    write_split(tmp_path / "ds", "val", REF_CATS, gt_images)
    write_panoptic_predictions(tmp_path / "pred.json", preds, REF_CATS)
    # native: the 2-process pool sums in panopticapi's order, bit-identical; hotcoco: the default backend
    for options in ({"backend": "native", "workers": 1}, {"backend": "native", "workers": 2}, {}):
        res = evaluate_files("pq", gt_root=tmp_path / "ds", split="val", predictions=tmp_path / "pred.json",
                             **options)
        for suffix, (pq, sq, rq) in PANOPTICAPI[seed].items():
            assert res.metrics[f"pq.PQ{suffix}"] == pytest.approx(pq, abs=1e-12)
            assert res.metrics[f"pq.SQ{suffix}"] == pytest.approx(sq, abs=1e-12)
            assert res.metrics[f"pq.RQ{suffix}"] == pytest.approx(rq, abs=1e-12)
