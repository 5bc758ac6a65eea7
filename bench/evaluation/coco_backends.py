"""Interchangeable COCOeval implementations behind one call (the ``eval.coco_backend`` switch).

A backend takes the ground-truth dataset dict, the result records and an iou type, runs
``loadRes`` + ``COCOeval(evaluate, accumulate, summarize)`` with default parameters and returns a
:class:`COCORun`: the 12 summary statistics and the accumulated precision array
``[T, R, K, A, M]`` with its category ids. Registered:

- ``pycocotools`` — the reference (cocodataset/cocoapi, C mask API + Python COCOeval);
- ``faster-coco-eval`` — MiXaiLL76/faster_coco_eval (C++ evaluateImg/accumulate);
- ``hotcoco`` — a Rust re-implementation (PyPI ``hotcoco``), the default.

On the cases of tests/test_eval_coco_backends.py (random detections, crowd ground truth, empty
results, boxes present or absent) hotcoco is bit-identical to pycocotools (stats, precision array,
per-class AP); faster-coco-eval differs by at most one ulp per precision value (it leaves out
pycocotools' ``np.spacing(1)`` in ``tp / (tp + fp)``), ~1e-14 on a metric in percent.
A backend whose package is not installed is still registered: using it raises
:class:`~bench.evaluation.base.EvaluationError` naming the package (:func:`available_backends`).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from bench.evaluation.base import EvaluationError

log = logging.getLogger("bench.evaluation.coco")

#: the backend used when none is named: the fastest one, and bit-identical to pycocotools
DEFAULT_COCO_BACKEND = "hotcoco"


@dataclass(frozen=True)
class COCORun:
    """What the evaluator reads from a finished COCOeval."""

    stats: np.ndarray  # the 12 summary values of COCOeval.summarize (−1: no ground truth there)
    precision: np.ndarray  # eval["precision"], [iou thresholds, recall points, categories, areas, maxDets]
    cat_ids: list[int]  # the categories of axis 2 of ``precision``
    max_dets: list[int]  # params.maxDets


@dataclass(frozen=True)
class COCOBackend:
    name: str
    package: str  # the distribution that provides it (for the error message when absent)
    module: str  # the module whose presence makes it available
    run: Callable[[dict, list[dict], str], COCORun]

    def available(self) -> bool:
        return importlib.util.find_spec(self.module) is not None


#: name → backend
COCO_BACKENDS: dict[str, COCOBackend] = {}


def register_coco_backend(name: str, *, package: str, module: str):
    """Function decorator: ``@register_coco_backend("hotcoco", package=..., module=...)``."""

    def deco(fn: Callable[[dict, list[dict], str], COCORun]) -> Callable[[dict, list[dict], str], COCORun]:
        if name in COCO_BACKENDS:
            raise KeyError(f"a COCO backend named {name!r} is already registered")
        COCO_BACKENDS[name] = COCOBackend(name, package, module, fn)
        return fn

    return deco


def available_backends() -> list[str]:
    """The registered backends whose package is installed."""
    return [n for n, b in COCO_BACKENDS.items() if b.available()]


def get_backend(name: str) -> COCOBackend:
    """The backend ``name``; an :class:`EvaluationError` if it is unknown or its package is absent."""
    try:
        backend = COCO_BACKENDS[name]
    except KeyError:
        raise EvaluationError(f"coco: unknown backend {name!r}; registered: {sorted(COCO_BACKENDS)}") from None
    if not backend.available():
        raise EvaluationError(f"coco: backend {name!r} needs the package {backend.package!r}, which is not "
                              f"installed; installed backends: {available_backends()}")
    return backend


@contextlib.contextmanager
def quiet(what: str):
    """Send what COCO APIs print to the ``bench.evaluation.coco`` logger (DEBUG)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        yield
    text = buf.getvalue().strip()
    if text:
        log.debug("%s:\n%s", what, text)


def _gt_copy(gt_dataset: dict) -> dict:
    out = dict(gt_dataset)
    out["annotations"] = [dict(a) for a in gt_dataset["annotations"]]  # COCOeval adds 'ignore'
    return out


def _finish(ev: Any, iou_type: str) -> COCORun:
    with quiet(f"COCOeval({iou_type})"):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return COCORun(stats=np.asarray(ev.stats, dtype=np.float64), precision=np.asarray(ev.eval["precision"]),
                   cat_ids=[int(c) for c in ev.params.catIds], max_dets=[int(m) for m in ev.params.maxDets])


@register_coco_backend("pycocotools", package="pycocotools", module="pycocotools")
def _run_pycocotools(gt_dataset: dict, results: list[dict], iou_type: str) -> COCORun:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = _gt_copy(gt_dataset)
    coco_gt = COCO()
    coco_gt.dataset = gt
    with quiet("COCO.createIndex"):
        coco_gt.createIndex()
    if results:
        with quiet("COCO.loadRes"):
            coco_dt = coco_gt.loadRes(results)
    else:  # loadRes rejects an empty list: an empty result set, as loadRes would build it
        coco_dt = COCO()
        coco_dt.dataset = {"images": list(gt["images"]), "categories": copy.deepcopy(gt["categories"]),
                           "annotations": []}
        with quiet("COCO.createIndex"):
            coco_dt.createIndex()
    return _finish(COCOeval(coco_gt, coco_dt, iouType=iou_type), iou_type)


@register_coco_backend("faster-coco-eval", package="faster-coco-eval", module="faster_coco_eval")
def _run_faster_coco_eval(gt_dataset: dict, results: list[dict], iou_type: str) -> COCORun:
    from faster_coco_eval import COCO, COCOeval_faster

    gt = _gt_copy(gt_dataset)
    coco_gt = COCO(gt)
    if results:
        coco_dt = coco_gt.loadRes(results)
    else:
        coco_dt = COCO({"images": list(gt["images"]), "categories": copy.deepcopy(gt["categories"]),
                        "annotations": []})
    return _finish(COCOeval_faster(coco_gt, coco_dt, iouType=iou_type, print_function=log.debug), iou_type)


@register_coco_backend("hotcoco", package="hotcoco", module="hotcoco")
def _run_hotcoco(gt_dataset: dict, results: list[dict], iou_type: str) -> COCORun:
    import hotcoco

    coco_gt = hotcoco.COCO(gt_dataset)  # copied into Rust: the dict is not modified
    coco_dt = coco_gt.loadRes(results)  # accepts an empty list
    return _finish(hotcoco.COCOeval(coco_gt, coco_dt, iou_type), iou_type)
