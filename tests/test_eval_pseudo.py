"""Pseudo-label quality (P2Seg Table 6 counts and mean IoU, BESTIE Fig. 6 true positives)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.evaluation import EvaluationError, PseudoLabelEvaluator, evaluate_files
from bench.evaluation.rle import encode
from bench.evaluation.synth import default_categories, make_gt, write_json, write_split

CATS = default_categories(n_things=2, n_stuff=0)


def rect(r0, r1, c0, c1, shape=(10, 10)):
    m = np.zeros(shape, bool)
    m[r0:r1, c0:c1] = True
    return m


A, B, C = rect(0, 10, 0, 4), rect(0, 5, 5, 10), rect(6, 10, 5, 10)   # 40, 25, 20 px
E, CROWD = rect(8, 10, 0, 4), rect(5, 6, 5, 10)


def gt():
    return make_gt(CATS, [(1, 10, 10)], [
        {"id": 11, "image_id": 1, "category_id": 1, "mask": A},
        {"id": 12, "image_id": 1, "category_id": 1, "mask": B},
        {"id": 13, "image_id": 1, "category_id": 2, "mask": C},          # no point
        {"id": 14, "image_id": 1, "category_id": 2, "mask": E},          # point, no pseudo mask
        {"id": 15, "image_id": 1, "category_id": 2, "mask": CROWD, "iscrowd": 1}])


def points(*ann_ids, image_id=1):
    return {"points": [{"id": k, "image_id": image_id, "annotation_id": a, "point_index": 0, "isthing": 1,
                        "x": 0 if a != 12 else 6, "y": 0 if a != 14 else 9} for k, a in enumerate(ann_ids)]}


def pseudo(mask, tag, category_id=1, **kw):
    return {"category_id": category_id, "segmentation": encode(mask), "point_annotation_id": tag, **kw}


def test_counts_and_mean_iou_by_hand():
    recs = [pseudo(rect(0, 10, 0, 3), 11),   # A: 30 px inside A (40) → IoU .75
            pseudo(rect(0, 5, 5, 8), 12),    # B: two masks tagged B, union = B → IoU 1.0
            pseudo(rect(0, 5, 8, 10), 12)]
    ev = PseudoLabelEvaluator(gt(), points=points(11, 12, 14))
    ev.process(1, recs)
    m = ev.summarize()
    # evaluated: A (.75), B (1.0), E (no mask → 0). > .5: A, B; > .7: A, B; > .9: B.
    assert (m["pseudo.n_iou50"], m["pseudo.n_iou70"], m["pseudo.n_iou90"]) == (2, 2, 1)
    assert m["pseudo.mean_iou"] == pytest.approx(100 * 1.75 / 3)
    # tp50 (VOC greedy, IoU >= .5, all scores 1.0): class 1 masks vs GT A, B: the A mask hits A (.75) → TP;
    # B-left (15 px) hits B with 15/25 = .6 → TP; B-right (10 px) has IoU .4 with B → FP.  tp50 = 2.
    assert m["pseudo.tp50"] == 2
    assert ev.counts()["pseudo.instances"] == 3 and ev.counts()["pseudo.instances_without_mask"] == 1


def test_iou_counts_are_strict():
    # A mask of 20 px inside A (40 px): IoU exactly .5 → not counted in n_iou50; still a tp50 (>= .5).
    ev = PseudoLabelEvaluator(gt(), points=points(11))
    ev.process(1, [pseudo(rect(0, 10, 0, 2), 11)])
    m = ev.summarize()
    assert m["pseudo.n_iou50"] == 0 and m["pseudo.mean_iou"] == 50.0 and m["pseudo.tp50"] == 1


def test_ground_truth_as_pseudo_labels(tmp_path):
    rng = np.random.default_rng(2)
    images = []
    for i in range(1, 4):
        ids = np.zeros((16, 20), np.int64)
        for k in range(3):
            y, x = rng.integers(0, 12), rng.integers(0, 16)
            ids[y:y + 4, x:x + 4] = 10 * i + k + 1
        images.append({"id": i, "ids": ids, "segments": [{"id": int(s), "category_id": int(s % 2) + 1}
                                                         for s in np.unique(ids[ids > 0])]})
    write_split(tmp_path / "ds", "train", CATS, images)
    inst = json.loads((tmp_path / "ds/train/instances.json").read_text())
    pts = []
    for a in inst["annotations"]:
        im = next(x for x in images if x["id"] == a["image_id"])
        ys, xs = np.nonzero(im["ids"] == a["id"])
        pts.append({"id": len(pts) + 1, "image_id": a["image_id"], "annotation_id": a["id"], "point_index": 0,
                    "category_id": a["category_id"], "isthing": 1, "x": int(xs[0]), "y": int(ys[0])})
    write_json(tmp_path / "points.json", {"info": {}, "categories": CATS, "points": pts})
    # pseudo labels as a COCO instance JSON (no scores), each tagged with its own annotation id
    pseudo_json = dict(inst, annotations=[dict(a, point_annotation_id=a["id"]) for a in inst["annotations"]])
    write_json(tmp_path / "pseudo.json", pseudo_json)
    res = evaluate_files("pseudo", gt_root=tmp_path / "ds", split="train", predictions=tmp_path / "pseudo.json",
                         points=tmp_path / "points.json")
    n = len(inst["annotations"])
    assert res.metrics == {"pseudo.n_iou50": n, "pseudo.n_iou70": n, "pseudo.n_iou90": n,
                           "pseudo.mean_iou": 100.0, "pseudo.tp50": n}


def test_untagged_masks_and_tags_without_point_are_counted():
    ev = PseudoLabelEvaluator(gt(), points=points(11))
    ev.process(1, [pseudo(A, None), pseudo(B, 12)])  # untagged; B has no point
    m = ev.summarize()
    c = ev.counts()
    assert c["pseudo.untagged_masks"] == 1 and c["pseudo.tags_without_point"] == 1
    # A (pointed) has no tagged mask → IoU 0; both masks are TPs for tp50 (exact copies of A and B)
    assert m["pseudo.mean_iou"] == 0.0 and m["pseudo.tp50"] == 2


def test_labels_without_any_tag_have_no_instance_counts_but_true_positives():
    # image-level labels (no point_annotation_id anywhere): A is an exact copy (TP), the B-half is 15/25 = .6
    # of B (TP); there is no pointed-instance correspondence, so n_iou* and mean_iou are NaN, not 0
    ev = PseudoLabelEvaluator(gt(), points=points(11, 12))
    ev.process(1, [pseudo(A, None), pseudo(rect(0, 5, 5, 8), None)])
    m = ev.summarize()
    assert all(np.isnan(m[k]) for k in ("pseudo.n_iou50", "pseudo.n_iou70", "pseudo.n_iou90", "pseudo.mean_iou"))
    assert m["pseudo.tp50"] == 2 and ev.counts()["pseudo.untagged_masks"] == 2
    assert any("point_annotation_id" in n for n in ev.notes())


@pytest.mark.parametrize("tag, message", [(99, "point_annotation_id 99 is not an annotation"),
                                          (21, "point_annotation_id 21 belongs to image 2")])
def test_tags_naming_no_or_another_images_instance_are_errors(tag, message):
    g = make_gt(CATS, [(1, 10, 10), (2, 10, 10)], [{"id": 11, "image_id": 1, "category_id": 1, "mask": A},
                                                    {"id": 21, "image_id": 2, "category_id": 1, "mask": A}])
    ev = PseudoLabelEvaluator(g, points=points(11))
    with pytest.raises(EvaluationError, match=message):
        ev.process(1, [pseudo(A, tag)])


def test_bad_points_are_errors():
    with pytest.raises(EvaluationError, match="crowd region"):
        PseudoLabelEvaluator(gt(), points=points(15))
    with pytest.raises(EvaluationError, match="belongs to image 1, not 2"):
        PseudoLabelEvaluator(gt(), points=points(11, image_id=2))


def _curve_run(tmp_path, monkeypatch, steps: dict[int, list[dict]]):
    """A canonical train split of one 10×10 image (instance 11 = A, class 1), its points file where
    `bench evaluate` looks (data/points/voc/train_center.json), and a run folder whose run.json lists
    one pseudo-label file per step."""
    ids = np.zeros((10, 10), np.int64)
    ids[A] = 11
    write_split(tmp_path / "ds", "train", CATS, [{"id": 1, "ids": ids, "segments": [{"id": 11, "category_id": 1}]}])
    monkeypatch.chdir(tmp_path)
    point = {"id": 1, "image_id": 1, "annotation_id": 11, "point_index": 0, "category_id": 1, "isthing": 1,
             "x": 1, "y": 1}
    write_json(tmp_path / "data/points/voc/train_center.json", {"info": {}, "categories": CATS, "points": [point]})
    run = tmp_path / "run"
    listed = {}
    for step, records in steps.items():
        listed[f"step {step}"] = f"train_pseudo_steps/step{step}.json"
        write_json(run / listed[f"step {step}"], [dict(r, image_id=1, score=1.0) for r in records])
    return run, {"train_split": "train", "points_mode": "center", "pseudo_curve": listed}


def test_the_pseudo_curve_scores_each_listed_step_in_step_order(tmp_path, monkeypatch):
    from bench.commands.evaluate import pseudo_curves

    # step 10: a 20-px mask inside A (IoU .5: a tp50, not an n_iou50); step 5: nothing; step 20: A itself
    run, info = _curve_run(tmp_path, monkeypatch, {20: [pseudo(A, 11)], 5: [], 10: [pseudo(rect(0, 10, 0, 2), 11)]})
    curves = pseudo_curves(run, tmp_path / "ds", info, params=None, slot="voc")
    assert curves["pseudo.tp50"] == [[5, 0.0], [10, 1.0], [20, 1.0]]
    assert curves["pseudo.n_iou50"] == [[5, 0.0], [10, 0.0], [20, 1.0]]
    assert curves["pseudo.mean_iou"] == [[5, 0.0], [10, 50.0], [20, 100.0]]


def test_a_listed_checkpoint_file_that_is_missing_is_named(tmp_path, monkeypatch):
    from bench.commands.evaluate import pseudo_curves

    run, info = _curve_run(tmp_path, monkeypatch, {10: [pseudo(A, 11)]})
    (run / "train_pseudo_steps/step10.json").unlink()
    with pytest.raises(FileNotFoundError, match="step10.json"):
        pseudo_curves(run, tmp_path / "ds", info, params=None, slot="voc")


def test_train_pseudo_labels_are_also_scored_under_the_voc_protocol_as_voc_train(tmp_path, monkeypatch):
    """P2Seg's release validates on the training images' point-guided maps: the same VOC protocol on
    the train pseudo labels, stored as voc.train.*. A 20-px mask inside the 40-px A has IoU .5 — a
    true positive at 0.5 (VOC: IoU ≥ threshold), not at 0.7."""
    from bench import predictions as P
    from bench.commands.evaluate import FAMILIES
    from bench.config.schema import Params

    family = next(f for f in FAMILIES if f.kind == "voc" and f.prediction == P.PSEUDO)
    run, info = _curve_run(tmp_path, monkeypatch, {10: [pseudo(rect(0, 10, 0, 2), 11)]})
    options = family.options(Params(), "voc", info)
    result = evaluate_files(family.kind, gt_root=tmp_path / "ds", split=info[family.split_key],
                            predictions=run / "train_pseudo_steps/step10.json", **options)
    assert (family.split_key, family.rename("voc.mAP50")) == ("train_split", "voc.train.mAP50")
    assert result.metrics["voc.mAP50"] == 100.0 and result.metrics["voc.mAP70"] == 0.0
