"""The COCOeval backends (``eval.coco_backend``) against pycocotools, the reference, on random cases with
crowd ground truth, tied scores, boxes present or absent, detections past maxDets and empty results.

hotcoco must be bit-identical: the 12 stats, the whole precision array, every metric and per-class AP
(``==``). faster-coco-eval 1.8 is not: its accumulate computes precision as ``tp / (tp + fp)`` where
pycocotools adds ``np.spacing(1)`` to the denominator, so a precision of 1 reads 1.0 instead of
0.9999999999999998 — a difference of at most 2.3e-16 per precision value (ULP_TOL), up to ~1e-14 on a
metric in percent; it is held to that bound. A backend whose package is absent is skipped with the
reason; the default backend is a locked dependency, so its test never skips.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.evaluation import COCOEvaluator, EvaluationError
from bench.evaluation.coco_backends import COCO_BACKENDS, DEFAULT_COCO_BACKEND, available_backends
from bench.evaluation.rle import encode
from bench.evaluation.synth import default_categories, make_gt

CATS = default_categories(n_things=4, n_stuff=0)
OTHERS = [b for b in COCO_BACKENDS if b != "pycocotools"]
#: largest difference to pycocotools allowed on a precision value / summary stat (fraction, not percent)
ULP_TOL = 2.5e-16
TOLERANCE = {"hotcoco": 0.0, "faster-coco-eval": ULP_TOL}


def _ellipse(shape, cy, cx, ry, rx):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def random_case(seed: int, *, n_images: int = 6, crowd: float = 0.15, ties: bool = True):
    """Ground truth with crowd regions and predictions: jittered GT (some with the wrong class), false
    positives of every size, optional boxes, scores with ties."""
    rng = np.random.default_rng(seed)
    images, anns, results = [], [], []
    for iid in range(1, n_images + 1):
        h, w = (int(v) for v in rng.integers(60, 200, 2))
        images.append((iid, h, w))
        for _ in range(int(rng.integers(0, 8))):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            ry, rx = rng.uniform(2, h / 2), rng.uniform(2, w / 2)
            m = _ellipse((h, w), cy, cx, ry, rx)
            if not m.any():
                continue
            cat = int(rng.integers(1, 5))
            anns.append({"image_id": iid, "category_id": cat, "mask": m, "iscrowd": int(rng.random() < crowd)})
            for _ in range(int(rng.integers(0, 3))):
                j = rng.normal(0, 0.15, 4)
                pm = _ellipse((h, w), cy + j[0] * ry, cx + j[1] * rx, ry * (1 + j[2]), rx * (1 + j[3]))
                if pm.any():
                    results.append((iid, cat if rng.random() > 0.15 else int(rng.integers(1, 5)), pm))
        for _ in range(int(rng.integers(0, 6))):
            pm = _ellipse((h, w), rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1, h / 3), rng.uniform(1, w / 3))
            if pm.any():
                results.append((iid, int(rng.integers(1, 5)), pm))
    if anns and not any(a["iscrowd"] for a in anns):
        anns[0]["iscrowd"] = 1  # every case has a crowd region
    recs = []
    for iid, cat, pm in results:
        score = float(np.round(rng.random(), 1)) if ties else float(rng.random())
        r = {"image_id": iid, "category_id": cat, "segmentation": encode(pm), "score": score}
        if rng.random() < 0.5:  # a box that is not the mask's: loose by a few pixels
            ys, xs = np.nonzero(pm)
            r["bbox"] = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1 + rng.integers(0, 4)),
                         float(ys.max() - ys.min() + 1)]
        recs.append(r)
    return make_gt(CATS, images, anns), recs


def evaluate(gt, records, backend, **kw):
    ev = COCOEvaluator(gt, backend=backend, **kw)
    by_image: dict[int, list] = {}
    for r in records:
        by_image.setdefault(r["image_id"], []).append(r)
    for iid, recs in sorted(by_image.items()):
        ev.process(iid, recs)
    return ev


def _same(actual, desired, tol: float) -> None:
    actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    if tol == 0:
        np.testing.assert_array_equal(actual, desired)
    else:  # NaN where NaN, −1 where −1, else within tol
        np.testing.assert_allclose(actual, desired, rtol=0, atol=tol)


def assert_agree(ev, ref, tol: float) -> None:
    for iou_type in ev.iou_types:
        run, run_ref = ev.run_cocoeval(iou_type), ref.run_cocoeval(iou_type)
        assert run.cat_ids == run_ref.cat_ids and run.max_dets == run_ref.max_dets
        assert run.precision.shape == run_ref.precision.shape
        _same(run.stats, run_ref.stats, tol)  # all 12 values (−1 where undefined)
        _same(run.precision, run_ref.precision, tol)
    m, m_ref = ev.summarize(), ref.summarize()
    assert m.keys() == m_ref.keys()
    _same(list(m.values()), list(m_ref.values()), 100 * 60 * tol)  # percent; a mean of ≤ 60 values per point
    assert ev.per_class().keys() == ref.per_class().keys()
    for key, per in ev.per_class().items():
        assert per.keys() == ref.per_class()[key].keys()
        _same(list(per.values()), list(ref.per_class()[key].values()), 100 * 60 * tol)
    assert ev.counts() == ref.counts() and ev.notes() == ref.notes()


def _need(backend: str) -> None:
    if backend not in available_backends():
        pytest.skip(f"optional package {COCO_BACKENDS[backend].package!r} is not installed")


@pytest.mark.parametrize("backend", OTHERS)
@pytest.mark.parametrize("seed", range(8))
def test_backend_equals_pycocotools_on_random_cases_with_crowd(backend, seed):
    _need(backend)
    gt, recs = random_case(seed, ties=seed % 2 == 0)
    assert any(a["iscrowd"] for a in gt.instances["annotations"])
    assert_agree(evaluate(gt, recs, backend), evaluate(gt, recs, "pycocotools"), TOLERANCE[backend])


@pytest.mark.parametrize("backend", OTHERS)
def test_backend_equals_pycocotools_with_box_areas_for_segm(backend):
    _need(backend)
    gt, recs = random_case(11, crowd=0.3)
    kw = {"iou_types": ("segm",), "segm_area": "bbox"}
    assert_agree(evaluate(gt, recs, backend, **kw), evaluate(gt, recs, "pycocotools", **kw), TOLERANCE[backend])


@pytest.mark.parametrize("backend", OTHERS)
def test_backend_equals_pycocotools_past_max_dets_and_with_empty_results(backend):
    _need(backend)
    gt, _ = random_case(5)
    h, w = gt.image_by_id[1]["height"], gt.image_by_id[1]["width"]
    rng = np.random.default_rng(0)
    many = [{"image_id": 1, "category_id": 1, "score": float(rng.random()),
             "segmentation": encode(_ellipse((h, w), rng.uniform(0, h), rng.uniform(0, w), 10, 10))}
            for _ in range(130)]  # 130 detections of one (image, category): 30 past maxDets
    many = [r for r in many if r["segmentation"]["counts"] != encode(np.zeros((h, w), bool))["counts"]]
    ev = evaluate(gt, many, backend)
    assert_agree(ev, evaluate(gt, many, "pycocotools"), TOLERANCE[backend])
    assert ev.counts()["coco.dets_beyond_maxdets"] == len(many) - 100
    assert_agree(evaluate(gt, [], backend), evaluate(gt, [], "pycocotools"), TOLERANCE[backend])


def test_default_backend_is_installed_and_bit_identical():
    # a locked dependency: CI has it; an environment without it fails here instead of skipping
    assert TOLERANCE[DEFAULT_COCO_BACKEND] == 0.0
    assert DEFAULT_COCO_BACKEND in available_backends()
    assert COCOEvaluator(random_case(0)[0]).backend == DEFAULT_COCO_BACKEND


def test_unknown_or_missing_backend_is_an_error(monkeypatch):
    gt, _ = random_case(0)
    with pytest.raises(EvaluationError, match="unknown backend 'detectron2'.*registered"):
        COCOEvaluator(gt, backend="detectron2")
    monkeypatch.setattr(type(COCO_BACKENDS["faster-coco-eval"]), "available", lambda self: self.name != "hotcoco")
    with pytest.raises(EvaluationError, match="needs the package 'hotcoco'"):
        COCOEvaluator(gt, backend="hotcoco")


def test_evaluators_on_different_backends_do_not_merge():
    gt, recs = random_case(2)
    a = COCOEvaluator(gt, backend="pycocotools")
    b = COCOEvaluator(gt, backend=DEFAULT_COCO_BACKEND)
    if a.backend == b.backend:
        pytest.skip("the default backend is pycocotools")
    with pytest.raises(EvaluationError, match="different ground truth or options"):
        a.merge(b)
