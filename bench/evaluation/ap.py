"""Average precision from a precision/recall curve — the two VOC variants, written as the references.

- :func:`chainercv_voc_ap` is chainercv's ``calc_detection_voc_ap`` for one class
  (chainercv/evaluations/eval_detection_voc.py, v0.13.1): ``None`` precision or recall → NaN;
  NaN precisions (no detection yet) count as 0.
- :func:`devkit_voc_ap` is py-faster-rcnn's ``voc_ap`` (lib/datasets/voc_eval.py, also in
  detectron2's ``pascal_voc_evaluation.py`` and the JTSM release).

All-point (VOC2010+) AP: append sentinels ``mrec = [0, rec, 1]``, ``mpre = [0, prec, 0]``,
make precision monotone from the right (the envelope), and sum ``Δrecall · precision`` where
recall changes. 11-point (VOC2007) AP: mean over ``t ∈ np.arange(0, 1.1, 0.1)`` of the maximum
precision at recall ≥ t (0 when no such point) — the exact floating thresholds of
``np.arange`` are kept (``0.30000000000000004`` …), as in the references.
"""

from __future__ import annotations

import numpy as np


def chainercv_voc_ap(prec: np.ndarray | None, rec: np.ndarray | None, *, use_07_metric: bool = False) -> float:
    """chainercv ``calc_detection_voc_ap`` for a single class."""
    if prec is None or rec is None:
        return float("nan")
    return _voc_ap(rec, np.nan_to_num(prec), use_07_metric=use_07_metric)


def devkit_voc_ap(rec: np.ndarray, prec: np.ndarray, *, use_07_metric: bool = False) -> float:
    """py-faster-rcnn / detectron2 ``voc_ap(rec, prec, use_07_metric)``."""
    return _voc_ap(rec, prec, use_07_metric=use_07_metric)


def _voc_ap(rec: np.ndarray, prec: np.ndarray, *, use_07_metric: bool) -> float:
    """The AP both references compute from a curve without NaN (chainercv makes NaN precisions 0 first)."""
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            if np.sum(rec >= t) == 0:
                p = 0
            else:
                p = np.max(prec[rec >= t])
            ap = ap + p / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    # the reference's right-to-left loop ``mpre[i-1] = max(mpre[i-1], mpre[i])`` is this accumulate
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))
