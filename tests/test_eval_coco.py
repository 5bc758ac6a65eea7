"""COCO AP via pycocotools COCOeval (unchanged), the results writer/validator, and bad input.

COCOeval is the reference itself, so the tests check that we hand it exactly what the
protocol says (and agree with calling it directly), plus the cases where we must step in:
empty results, -1 stats, detections past maxDets, and input validation.
"""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from bench.evaluation import COCOEvaluator, EvaluationError, evaluate_files, write_coco_results
from bench.evaluation.rle import encode, rle_totals
from bench.evaluation.synth import default_categories, make_gt, write_json, write_split

CATS = default_categories(n_things=2, n_stuff=0)


def rect(r0, r1, c0, c1, shape=(128, 128)):
    m = np.zeros(shape, bool)
    m[r0:r1, c0:c1] = True
    return m


# small (100 px < 32²), medium (1600 px), large (10000 px ≥ 96²) objects
SMALL, MEDIUM, LARGE = rect(0, 10, 0, 10), rect(20, 60, 20, 60), rect(0, 100, 0, 100)


def three_sizes_gt():
    return make_gt(CATS, [(1, 128, 128), (2, 128, 128)], [
        {"image_id": 1, "category_id": 1, "mask": SMALL}, {"image_id": 1, "category_id": 2, "mask": MEDIUM},
        {"image_id": 2, "category_id": 1, "mask": LARGE}])


def gt_as_results(gt, score=1.0):
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"],
             "score": score} for a in gt.instances["annotations"]]


def run(gt, results, **kw):
    ev = COCOEvaluator(gt, **kw)
    by_image = {}
    for r in results:
        by_image.setdefault(r["image_id"], []).append(r)
    for iid, recs in by_image.items():
        ev.process(iid, recs)
    return ev.summarize(), ev


def test_ground_truth_as_prediction_reads_100_for_segm_and_bbox():
    m, ev = run(three_sizes_gt(), gt_as_results(three_sizes_gt()))
    for t in ("segm", "bbox"):
        for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
            assert m[f"coco.{t}.{k}"] == pytest.approx(100.0), k
    assert ev.per_class()["coco.segm.AP"] == {"thing1": pytest.approx(100.0), "thing2": pytest.approx(100.0)}


def test_agrees_with_calling_cocoeval_directly():
    # shifted / shrunk masks, a duplicate and a wrong class: stats must be COCOeval's, untouched
    gt = three_sizes_gt()
    results = [
        {"image_id": 1, "category_id": 1, "segmentation": encode(rect(1, 10, 0, 10)), "score": 0.9},
        {"image_id": 1, "category_id": 1, "segmentation": encode(rect(1, 10, 0, 10)), "score": 0.3},
        {"image_id": 1, "category_id": 2, "segmentation": encode(rect(25, 60, 20, 55)), "score": 0.8},
        {"image_id": 2, "category_id": 1, "segmentation": encode(rect(10, 100, 0, 90)), "score": 0.7},
        {"image_id": 2, "category_id": 2, "segmentation": encode(rect(10, 100, 0, 90)), "score": 0.6},
    ]
    m, _ = run(gt, results)
    coco = COCO()
    coco.dataset = json.loads(json.dumps(gt.instances))
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        for iou_type in ("segm", "bbox"):
            res = [dict(r) for r in results]
            if iou_type == "bbox":
                for r in res:
                    r["bbox"] = list(mask_utils.toBbox(r["segmentation"]))
            ev = COCOeval(coco, coco.loadRes(res), iou_type)
            ev.evaluate(), ev.accumulate(), ev.summarize()
            for k, v in zip(("AP", "AP50", "AP75", "APs", "APm", "APl"), ev.stats[:6]):
                assert m[f"coco.{iou_type}.{k}"] == pytest.approx(100 * v, abs=1e-12)


def test_segm_area_uses_mask_area_by_default_and_box_area_on_request():
    # One medium GT; a TP (score .5) and an unmatched L-shaped FP (score .9) whose MASK area is
    # 700 px (small, < 32²) but whose BOX is 40x40 = 1600 px (medium). COCOeval counts an unmatched
    # detection only in the area range its 'area' falls in, and loadRes takes that area from the box
    # when the result has one.
    gt = make_gt(CATS, [(1, 128, 128)], [{"image_id": 1, "category_id": 1, "mask": MEDIUM}])
    l_shape = rect(70, 110, 70, 80) | rect(100, 110, 70, 110)  # 400 + 300 = 700 px, box 40x40
    results = [{"image_id": 1, "category_id": 1, "segmentation": encode(MEDIUM), "score": 0.5},
               {"image_id": 1, "category_id": 1, "segmentation": encode(l_shape), "score": 0.9}]
    m_mask, _ = run(gt, results, iou_types=("segm",))
    m_box, _ = run(gt, results, iou_types=("segm",), segm_area="bbox")
    # mask area: the FP is "small" and ignored for the medium range → APm = 100 (1 TP, no FP)
    assert m_mask["coco.segm.APm"] == pytest.approx(100.0)
    # box area: the FP is medium and ranks first: (rec, prec) = (0, 0), (1, .5); the envelope is .5 at
    # every one of COCO's 101 recall points → APm = 50
    assert m_box["coco.segm.APm"] == pytest.approx(50.0)
    assert m_mask["coco.segm.AP"] == m_box["coco.segm.AP"]


def test_empty_predictions_give_ap_zero_for_categories_with_gt(tmp_path):
    write_split(tmp_path / "ds", "val", CATS, [
        {"id": 1, "ids": np.pad(np.ones((4, 4), int), 2), "segments": [{"id": 1, "category_id": 1}]}])
    write_json(tmp_path / "empty.json", [])
    res = evaluate_files("coco", gt_root=tmp_path / "ds", split="val", predictions=tmp_path / "empty.json")
    for t in ("segm", "bbox"):
        assert res.metrics[f"coco.{t}.AP"] == 0.0 and res.metrics[f"coco.{t}.AP50"] == 0.0
        # the only object is small (16 px): no medium/large GT → COCOeval says -1 → NaN, counted
        assert math.isnan(res.metrics[f"coco.{t}.APm"]) and res.counts[f"coco.{t}.APm.nan"] == 1
    assert res.counts["coco.predictions"] == 0 and any("-1" in n for n in res.notes)


def test_detections_past_max_dets_are_counted():
    gt = make_gt(CATS, [(1, 128, 128)], [{"image_id": 1, "category_id": 1, "mask": MEDIUM}])
    results = [{"image_id": 1, "category_id": 1, "segmentation": encode(rect(0, 10, k, k + 5)), "score": k / 200}
               for k in range(105)]  # 105 detections of one category in one image: 5 past maxDets=100
    _, ev = run(gt, results, iou_types=("bbox",))
    assert ev.counts()["coco.dets_beyond_maxdets"] == 5


# --- writer / validator ---------------------------------------------------------------------

def test_writer_writes_str_counts_and_derives_bbox_from_the_mask(tmp_path):
    m = rect(3, 9, 2, 7)
    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))  # counts as bytes
    n = write_coco_results(tmp_path / "r.json", [{"image_id": 1, "category_id": 1, "segmentation": rle,
                                                  "score": np.float32(0.5)}], gt=three_sizes_gt())
    (rec,) = json.loads((tmp_path / "r.json").read_text())
    assert n == 1 and isinstance(rec["segmentation"]["counts"], str)
    assert rec["bbox"] == [2.0, 3.0, 5.0, 6.0] == list(mask_utils.toBbox(rle))
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # atomic: no temp file left behind


def test_rle_run_decoder_agrees_with_pycocotools_area():
    rng = np.random.default_rng(3)
    rles = [encode(rng.random((int(h), int(w))) < rng.random()) for h, w in rng.integers(1, 50, (200, 2))]
    rles.append(encode(np.ones((480, 640), bool)))
    total, area, ok = rle_totals([r["counts"].encode() for r in rles])
    assert ok.all()
    assert total.tolist() == [r["size"][0] * r["size"][1] for r in rles]
    assert area.tolist() == [int(mask_utils.area(r)) for r in rles]


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.update(image_id=99), "image_id 99 is not an image"),
    (lambda r: r.update(category_id=7), "unknown category_id 7"),
    (lambda r: r.update(score=float("nan")), "score must be a finite number"),
    (lambda r: r.pop("score"), "missing 'score'"),
    (lambda r: r.update(segmentation=encode(np.zeros((5, 5), bool))), r"RLE size \[5, 5\] differs"),
    (lambda r: r["segmentation"].update(counts=r["segmentation"]["counts"][:-1] + "1"), "RLE runs add up to"),
    (lambda r: r["segmentation"].update(counts="\x7f"), "malformed RLE counts"),
    (lambda r: r.update(segmentation=[[0, 0, 1, 0, 1, 1]]), "polygons are not accepted"),
])
def test_bad_records_are_errors_naming_file_and_record(tmp_path, mutate, message):
    gt = three_sizes_gt()
    results = gt_as_results(gt)
    mutate(results[1])
    write_json(tmp_path / "bad.json", results)
    write_split(tmp_path / "ds", "val", CATS, [
        {"id": 1, "ids": np.zeros((128, 128), int), "segments": []},
        {"id": 2, "ids": np.zeros((128, 128), int), "segments": []}])
    with pytest.raises(EvaluationError, match=message) as err:
        evaluate_files("coco", gt_root=tmp_path / "ds", split="val", predictions=tmp_path / "bad.json")
    assert "bad.json" in str(err.value) and "record 1" in str(err.value)


def test_malformed_json_and_duplicate_ids_are_errors(tmp_path):
    write_split(tmp_path / "ds", "val", CATS, [{"id": 1, "ids": np.zeros((8, 8), int), "segments": []}])
    (tmp_path / "broken.json").write_text('[{"image_id": 1,')
    with pytest.raises(EvaluationError, match="broken.json: malformed JSON"):
        evaluate_files("voc", gt_root=tmp_path / "ds", split="val", predictions=tmp_path / "broken.json")
    seg = encode(np.ones((8, 8), bool))
    write_json(tmp_path / "dup.json", [{"id": 5, "image_id": 1, "category_id": 1, "segmentation": seg, "score": 1},
                                       {"id": 5, "image_id": 1, "category_id": 1, "segmentation": seg, "score": 1}])
    with pytest.raises(EvaluationError, match=r"record 1 .*duplicate id 5"):
        evaluate_files("voc", gt_root=tmp_path / "ds", split="val", predictions=tmp_path / "dup.json")
