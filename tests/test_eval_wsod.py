"""WSOD: VOC box AP@0.5 (all-point and 11-point, py-faster-rcnn ``voc_eval``) and CorLoc.

The last test compares with the reference code itself: py-faster-rcnn's ``voc_eval``/``voc_ap``
and the JTSM release's ``voc_eval_corloc`` (detectron2/evaluation/pascal_voc_evaluation.py),
run verbatim (only ``np.bool`` → ``bool``) on result files written as detectron2 writes them;
their outputs on seeded random cases are stored here as literals.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bench.evaluation import EvaluationError, WSODEvaluator, evaluate_files
from bench.evaluation.synth import default_categories, make_gt, write_json, write_split
from bench.evaluation.wsod import box_iou, xywh_to_xyxy

CATS = default_categories(n_things=3, n_stuff=0)
EMPTY = np.zeros((60, 60), bool)


def gt_boxes(boxes):
    """boxes: (image_id, category_id, [x, y, w, h], difficult)."""
    images = sorted({b[0] for b in boxes} | {1, 2, 3})
    return make_gt(CATS, [(i, 60, 60) for i in images],
                   [{"image_id": i, "category_id": c, "mask": EMPTY, "bbox": list(b), "difficult": d}
                    for i, c, b, d in boxes])


def det(box, score, category_id=1):
    return {"category_id": category_id, "bbox": list(box), "score": score}


def run(gt, dets_by_image, **kw):
    ev = WSODEvaluator(gt, **kw)
    for iid, recs in dets_by_image.items():
        ev.process(iid, recs)
    return ev.summarize(), ev


def devkit_iou(bb, gt):
    """py-faster-rcnn voc_eval's overlap, on inclusive 1-based coordinates (+1 widths)."""
    ixmin, iymin = np.maximum(gt[:, 0], bb[0]), np.maximum(gt[:, 1], bb[1])
    ixmax, iymax = np.minimum(gt[:, 2], bb[2]), np.minimum(gt[:, 3], bb[3])
    iw, ih = np.maximum(ixmax - ixmin + 1.0, 0.0), np.maximum(iymax - iymin + 1.0, 0.0)
    inters = iw * ih
    uni = ((bb[2] - bb[0] + 1.0) * (bb[3] - bb[1] + 1.0)
           + (gt[:, 2] - gt[:, 0] + 1.0) * (gt[:, 3] - gt[:, 1] + 1.0) - inters)
    return inters / uni


def test_box_iou_without_plus_one_equals_the_devkit_on_shifted_coordinates():
    rng = np.random.default_rng(0)
    for kind in ("int", "float"):
        a = rng.integers(0, 50, (40, 4)).astype(float) if kind == "int" else rng.random((40, 4)) * 50
        b = rng.integers(0, 50, (30, 4)).astype(float) if kind == "int" else rng.random((30, 4)) * 50
        a[:, 2:] += 1  # positive widths/heights
        b[:, 2:] += 1
        ours = box_iou(xywh_to_xyxy(a), xywh_to_xyxy(b))
        # devkit coordinates of a COCO box [x, y, w, h]: (x + 1, y + 1, x + w, y + h)
        dev = lambda z: np.stack([z[:, 0] + 1, z[:, 1] + 1, z[:, 0] + z[:, 2], z[:, 1] + z[:, 3]], 1)  # noqa: E731
        ref = np.stack([devkit_iou(bb, dev(b)) for bb in dev(a)])
        if kind == "int":
            np.testing.assert_array_equal(ours, ref)  # same integers, same divisions: bit-identical
        else:
            np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_ap_and_corloc_by_hand():
    # image 1: g1 [0,0,10,10]; g2 [20,20,10,10] difficult.  image 2: g3 [0,0,10,10].  npos = 2.
    g = gt_boxes([(1, 1, (0, 0, 10, 10), 0), (1, 1, (20, 20, 10, 10), 1), (2, 1, (0, 0, 10, 10), 0)])
    dets = {1: [det((0, 0, 10, 10), 0.9),     # d1 → g1: TP
                det((20, 20, 10, 10), 0.8),   # d2 → difficult g2: neither TP nor FP
                det((0, 0, 10, 10), 0.7)],    # d3 → g1 again: FP
            2: [det((50, 50, 5, 5), 0.6),     # d4 → no overlap: FP
                det((0, 0, 10, 10), 0.5)]}    # d5 → g3: TP
    m, ev = run(g, dets)
    # tp = [1,0,0,0,1], fp = [0,0,1,1,0] → cum tp [1,1,1,1,2], cum fp [0,0,1,2,2]
    # rec = [.5,.5,.5,.5,1], prec = [1, 1, .5, 1/3, .5]
    # all-point: .5 · 1 (recall 0→.5) + .5 · .5 (recall .5→1) = .75
    # 11-point: t = 0,.1,...,.5 (6 points) → 1; t = .6,...,1 (5 points) → .5; (6 + 2.5) / 11
    # CorLoc: images with a non-difficult g of the class: 1 and 2. Top det of image 1 = d1 (IoU 1) ✓,
    # of image 2 = d4 (score .6 > .5, IoU 0) ✗ → 1/2.  Classes 2 and 3 have no GT: NaN, left out.
    per = ev.per_class()
    assert per["wsod.AP50"]["thing1"] == pytest.approx(75.0)
    assert per["wsod.AP50_07"]["thing1"] == pytest.approx(100 * 8.5 / 11)
    assert per["wsod.CorLoc"]["thing1"] == 50.0 and math.isnan(per["wsod.CorLoc"]["thing2"])
    assert m == {"wsod.AP50": pytest.approx(75.0), "wsod.AP50_07": pytest.approx(100 * 8.5 / 11), "wsod.CorLoc": 50.0}
    assert ev.counts()["wsod.dets_on_difficult_ignored"] == 1 and ev.counts()["wsod.classes_nan"] == 2


def test_corloc_excludes_difficult_only_images_and_accepts_a_difficult_match():
    # image 1: only a difficult box → excluded from CorLoc (its detection is not judged).
    # image 2: a non-difficult box g and a difficult box h; the top detection hits h → correct
    #          (the release compares with every GT box of the class, difficult ones included).
    # image 3: one non-difficult box, no detection of the class → failure.   CorLoc = 1/2.
    g = gt_boxes([(1, 1, (0, 0, 10, 10), 1), (2, 1, (0, 0, 10, 10), 0), (2, 1, (30, 30, 10, 10), 1),
                  (3, 1, (0, 0, 10, 10), 0)])
    m, _ = run(g, {1: [det((40, 40, 5, 5), 0.99)], 2: [det((30, 30, 10, 10), 0.9), det((0, 0, 10, 10), 0.1)]})
    assert m["wsod.CorLoc"] == 50.0


def test_corloc_threshold_and_comparison_are_parameters():
    # one GT [0,0,10,10]; top detection [0,0,10,5] has IoU exactly .5
    g = gt_boxes([(1, 1, (0, 0, 10, 10), 0)])
    dets = {1: [det((0, 0, 10, 5), 0.9)]}
    assert run(g, dets)[0]["wsod.CorLoc"] == 0.0                             # .5 > .5 is false
    assert run(g, dets, corloc_comparison=">=")[0]["wsod.CorLoc"] == 100.0
    assert run(g, dets, corloc_threshold=0.4)[0]["wsod.CorLoc"] == 100.0


def test_scores_are_rounded_to_three_decimals_like_the_result_files():
    # file order: a TP scored .9001, then an FP scored .9004. Raw scores: the FP ranks first →
    # prec [0, .5] at rec [0, 1] → AP .5. Rounded ("{:.3f}" → .900 both): tie, argsort(-s) keeps file
    # order for two elements → TP first → AP 1.
    g = gt_boxes([(1, 1, (0, 0, 10, 10), 0)])
    dets = {1: [det((0, 0, 10, 10), 0.9001), det((40, 40, 10, 10), 0.9004)]}
    assert run(g, dets)[0]["wsod.AP50"] == 100.0
    assert run(g, dets, score_decimals=None)[0]["wsod.AP50"] == 50.0


def test_ground_truth_as_prediction_reads_100(tmp_path):
    rng = np.random.default_rng(5)
    images = []
    for i in range(1, 5):
        ids = np.zeros((30, 40), np.int64)
        for k in range(3):
            y, x = rng.integers(0, 24), rng.integers(0, 34)
            ids[y:y + 6, x:x + 6] = 10 * i + k + 1
        images.append({"id": i, "ids": ids, "segments": [{"id": int(s), "category_id": int(s % 3) + 1}
                                                         for s in np.unique(ids[ids > 0])]})
    write_split(tmp_path / "ds", "val", CATS, images)
    inst = json.loads((tmp_path / "ds/val/instances.json").read_text())
    write_json(tmp_path / "dets.json", [{"image_id": a["image_id"], "category_id": a["category_id"],
                                         "bbox": a["bbox"], "score": 1.0} for a in inst["annotations"]])
    res = evaluate_files("wsod", gt_root=tmp_path / "ds", split="val", predictions=tmp_path / "dets.json")
    # (the 11-point AP adds 11 × 1/11: 100 up to rounding)
    assert res.metrics == pytest.approx({"wsod.AP50": 100.0, "wsod.AP50_07": 100.0, "wsod.CorLoc": 100.0},
                                        rel=0, abs=1e-12)


def test_detection_without_bbox_is_an_error(tmp_path):
    g = gt_boxes([(1, 1, (0, 0, 10, 10), 0)])
    with pytest.raises(EvaluationError, match="missing 'bbox'"):
        WSODEvaluator(g).process(1, [{"category_id": 1, "score": 0.5}])
    with pytest.raises(EvaluationError, match="negative width"):
        WSODEvaluator(g).process(1, [det((0, 0, -1, 3), 0.5)])


# --- the reference code itself ------------------------------------------------------------------

def random_case(seed, n_images=15, n_cls=3):
    rng = np.random.RandomState(seed)
    imgs = []
    for i in range(1, n_images + 1):
        gts = []
        for _ in range(rng.randint(0, 4)):
            x, y = rng.randint(0, 60), rng.randint(0, 40)
            w, h = rng.randint(3, 30), rng.randint(3, 30)
            gts.append(dict(cat=rng.randint(1, n_cls + 1), bbox=[x, y, w, h], difficult=int(rng.rand() < 0.2)))
        dets = []
        for g in gts:
            for _ in range(rng.randint(0, 3)):
                x, y, w, h = g["bbox"]
                jit = rng.randint(-4, 5, 4)
                dets.append(dict(cat=g["cat"] if rng.rand() > 0.15 else rng.randint(1, n_cls + 1),
                                 bbox=[int(x + jit[0]), int(y + jit[1]), int(max(1, w + jit[2])),
                                       int(max(1, h + jit[3]))], score=float(rng.rand())))
        for _ in range(rng.randint(0, 3)):
            dets.append(dict(cat=rng.randint(1, n_cls + 1), bbox=[rng.randint(0, 60), rng.randint(0, 40),
                                                                   rng.randint(2, 20), rng.randint(2, 20)],
                             score=float(rng.rand())))
        imgs.append(dict(id=i, gts=gts, dets=dets))
    return imgs


# voc_eval(...)[2] (all-point), voc_eval(..., use_07_metric=True)[2], voc_eval_corloc(...) per class 1..3
REFERENCE = {
    0: {"ap": [0.14285714285714285, 0.05625, 0.16666666666666666],
        "ap07": [0.13636363636363635, 0.06363636363636364, 0.18181818181818182],
        "corloc": [0.2857142857142857, 0.4, 0.3333333333333333]},
    1: {"ap": [0.2, 0.1611111111111111, 0.44999999999999996],
        "ap07": [0.21818181818181823, 0.17575757575757575, 0.4363636363636364], "corloc": [0.25, 0.25, 0.75]},
    2: {"ap": [0.2222222222222222, 0.0, 0.2722222222222222],
        "ap07": [0.22222222222222215, 0.0, 0.296969696969697], "corloc": [0.5, 0.0, 0.6]},
    3: {"ap": [0.10317460317460317, 0.03571428571428571, 0.625],
        "ap07": [0.11255411255411255, 0.03896103896103896, 0.6363636363636364],
        "corloc": [0.2, 0.0, 0.6666666666666666]},
    4: {"ap": [0.16666666666666666, 0.0, 0.1111111111111111],
        "ap07": [0.15909090909090912, 0.0, 0.18181818181818182], "corloc": [0.0, 0.0, 0.125]},
}


@pytest.mark.parametrize("seed", sorted(REFERENCE))
def test_matches_voc_eval_and_jtsm_corloc_on_random_cases(seed):
    imgs = random_case(seed)
    boxes = [(im["id"], g["cat"], g["bbox"], g["difficult"]) for im in imgs for g in im["gts"]]
    g = make_gt(CATS, [(im["id"], 100, 100) for im in imgs],
                [{"image_id": i, "category_id": c, "mask": np.zeros((100, 100), bool), "bbox": b, "difficult": d}
                 for i, c, b, d in boxes])
    _, ev = run(g, {im["id"]: [det(d["bbox"], d["score"], d["cat"]) for d in im["dets"]] for im in imgs})
    per = ev.per_class()
    for key, ref in (("wsod.AP50", "ap"), ("wsod.AP50_07", "ap07"), ("wsod.CorLoc", "corloc")):
        ours = [per[key][f"thing{c}"] / 100 for c in (1, 2, 3)]
        np.testing.assert_allclose(ours, REFERENCE[seed][ref], rtol=0, atol=1e-12)
