"""Weakly supervised object detection: VOC box AP@0.5 (all-point and 11-point) and CorLoc.

References: py-faster-rcnn ``lib/datasets/voc_eval.py`` (``voc_eval``, ``voc_ap``), used unchanged
by detectron2's ``PascalVOCDetectionEvaluator`` and by the JTSM release (shenyunhang/JTSM,
``detectron2/evaluation/pascal_voc_evaluation.py``, which adds ``voc_eval_corloc``).

AP (per class): all detections of the class, over all images, sorted by ``np.argsort(-score)``
(numpy's default sort); each detection takes the GT box of its class in its image with the largest
IoU (``argmax``, first on ties); ``ovmax > 0.5`` (strict) → if that GT is ``difficult``: neither TP
nor FP; else TP if the GT is not yet detected (and it becomes detected), FP otherwise; ``ovmax ≤
0.5`` → FP. ``npos`` = non-difficult GT of the class; ``rec = tp / npos``, ``prec = tp /
max(tp + fp, eps)``; ``wsod.AP50`` is the all-point (VOC2010+) AP, ``wsod.AP50_07`` the 11-point
(VOC2007) AP; the means are over classes.

CorLoc (Deselaers et al. 2012; JTSM's ``voc_eval_corloc``): per class, over the images that contain
at least one *non-difficult* GT box of the class (images where the class appears only as difficult
objects are excluded, as are images without the class); the top-scoring detection of the class in the
image (first in the same global ``argsort(-score)`` order) is correct when its IoU with *any* GT box
of the class in the image (difficult ones included, as in the release) is ``> corloc_threshold``
(``corloc_comparison=">"``, default; ``">="`` available). An image without any detection of the class
counts as a failure. CorLoc = mean over classes of the per-class fraction.

Ground truth: ``bbox`` [x, y, w, h], ``category_id``, ``difficult`` of the canonical instances.json;
``iscrowd=1`` boxes are treated as difficult (matched detections are ignored, they are not in npos)
and counted. Detections: COCO results ``[{image_id, category_id, bbox: [x, y, w, h], score}]``.

Deviations from the references, only where they break down: a class with no non-difficult GT has
AP NaN (the reference divides by zero, which makes its mean NaN) and CorLoc NaN (the reference
returns 0.0 when the class has no detection and raises ZeroDivisionError when it has some); NaN
classes are left out of the means and reported in the notes.

Score rounding (``score_decimals``, default 3): py-faster-rcnn and detectron2 (hence JTSM) do not
evaluate the scores themselves but the text result files they write with ``{:.3f}``; the rounding
creates ties, which the sort then orders. ``score_decimals=None`` evaluates the raw scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.evaluation.ap import devkit_voc_ap
from bench.evaluation.base import (
    EvaluationError,
    EvaluationResult,
    Evaluator,
    check_options,
    nan_mean,
    register_evaluator,
)
from bench.evaluation.gt import CanonicalGT


def box_iou(boxes: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU ``(n, m)`` of ``[x1, y1, x2, y2]`` boxes with ``x2 = x + w``, ``y2 = y + h`` (no +1).

    Why this equals the devkit's ``+1`` formula: the devkit reads inclusive 1-based pixel
    coordinates ``(X1, Y1, X2, Y2)`` and uses widths ``X2 − X1 + 1``. A COCO box ``[x, y, w, h]``
    covering pixel columns ``x … x+w−1`` (0-based) is, in devkit coordinates, ``X1 = x + 1`` and
    ``X2 = x + w``. Then ``X2 − X1 + 1 = w = x2 − x1``; for two boxes the devkit's intersection
    width ``min(X2) − max(X1) + 1 = min(x + w) − (max(x) + 1) + 1 = min(x2) − max(x1)``, clipped
    at 0 in both. Areas and intersections are the same numbers, so is the IoU. (detectron2 does
    the same shift: it subtracts 1 from the XML's xmin/ymin when loading and adds it back
    before writing the result files.)
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    gt = np.asarray(gt, np.float64).reshape(-1, 4)
    ixmin = np.maximum(gt[None, :, 0], boxes[:, None, 0])
    iymin = np.maximum(gt[None, :, 1], boxes[:, None, 1])
    ixmax = np.minimum(gt[None, :, 2], boxes[:, None, 2])
    iymax = np.minimum(gt[None, :, 3], boxes[:, None, 3])
    iw = np.maximum(ixmax - ixmin, 0.0)
    ih = np.maximum(iymax - iymin, 0.0)
    inters = iw * ih
    uni = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[:, None] + \
        ((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]))[None, :] - inters
    with np.errstate(invalid="ignore", divide="ignore"):
        return inters / uni


def xywh_to_xyxy(b: Any) -> np.ndarray:
    b = np.asarray(b, np.float64).reshape(-1, 4)
    return np.stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]], axis=1)


@register_evaluator("wsod")
class WSODEvaluator(Evaluator):
    """VOC box AP@0.5 (all-point + 11-point) and CorLoc."""

    def __init__(self, gt: CanonicalGT, *, iou_threshold: float = 0.5, corloc_threshold: float = 0.5,
                 corloc_comparison: str = ">", score_decimals: int | None = 3) -> None:
        super().__init__()
        self.gt = gt
        self.iou_threshold = float(iou_threshold)
        self.corloc_threshold = float(corloc_threshold)
        if corloc_comparison not in (">", ">="):
            raise EvaluationError(f"wsod: corloc_comparison must be '>' or '>=', got {corloc_comparison!r}")
        self.corloc_comparison = corloc_comparison
        self.score_decimals = score_decimals
        self._images: dict[int, list[tuple[int, float, np.ndarray]]] = {}

    def _signature(self) -> tuple:
        return (self.gt.fingerprint(), self.iou_threshold, self.corloc_threshold, self.corloc_comparison,
                self.score_decimals)

    def process(self, image_id: int, records: list[dict], *, validated: bool = False) -> None:
        """One image's detections ``{category_id, bbox: [x, y, w, h], score}`` (file order kept)."""
        image_id, records = self._image_records(image_id, records, self._images, validated=validated,
                                                what="detections", need_mask=False, need_bbox=True)
        dets = []
        for r in records:
            if r.get("bbox") is None:
                raise EvaluationError(f"wsod: image {image_id}: record {r.get('index')} has no bbox")
            score = float(r["score"])
            if self.score_decimals is not None:
                score = float(f"{score:.{int(self.score_decimals)}f}")
            dets.append((int(r["category_id"]), score, xywh_to_xyxy(r["bbox"])[0]))
        self._images[image_id] = dets
        self._counts["wsod.images"] += 1
        self._counts["wsod.detections"] += len(dets)

    def _merge_state(self, other: "WSODEvaluator") -> None:
        dup = self._images.keys() & other._images.keys()
        if dup:
            raise EvaluationError(f"wsod: cannot merge, images processed in both: {sorted(dup)[:10]}")
        self._images.update(other._images)

    def _gt_of_class(self) -> dict[int, dict[int, tuple[np.ndarray, np.ndarray]]]:
        """Class → image → (boxes xyxy, difficult flags), images in dataset order."""
        out: dict[int, dict[int, tuple[list, list]]] = {}
        for im in self.gt.images:
            iid = int(im["id"])
            for a in self.gt.annotations_by_image[iid]:
                c = int(a["category_id"])
                boxes, diff = out.setdefault(c, {}).setdefault(iid, ([], []))
                boxes.append(a["bbox"])
                diff.append(bool(a.get("difficult", 0)) or bool(a.get("iscrowd", 0)))
        return {c: {i: (xywh_to_xyxy(b), np.array(d, bool)) for i, (b, d) in imgs.items()} for c, imgs in out.items()}

    def _class_dets(self) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Class → (image ids, scores, boxes) in 'result file' order: dataset image order, then record order."""
        acc: dict[int, tuple[list, list, list]] = {}
        for iid in sorted(self._images, key=self.gt.image_index.__getitem__):
            for c, s, b in self._images[iid]:
                ids, sc, bx = acc.setdefault(c, ([], [], []))
                ids.append(iid)
                sc.append(s)
                bx.append(b)
        return {c: (np.array(i, np.int64), np.array(s, np.float64), np.array(b, np.float64).reshape(-1, 4))
                for c, (i, s, b) in acc.items()}

    def summarize(self) -> dict[str, float]:
        gt = self._gt_of_class()
        dets = self._class_dets()
        ap, ap07, corloc = {}, {}, {}
        self._counts["wsod.gt_difficult"] = sum(1 for a in self.gt.instances["annotations"] if a.get("difficult", 0))
        self._counts["wsod.gt_crowd_as_difficult"] = sum(1 for a in self.gt.instances["annotations"]
                                                        if a.get("iscrowd", 0))
        ignored = 0
        for c in sorted(self.gt.thing_categories):
            gt_c = gt.get(c, {})
            image_ids, scores, boxes = dets.get(c, (np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 4))))
            order = np.argsort(-scores)
            image_ids, boxes = image_ids[order], boxes[order]
            npos = int(sum((~d).sum() for _, d in gt_c.values()))
            # --- AP (voc_eval) ---
            nd = len(image_ids)
            tp = np.zeros(nd)
            fp = np.zeros(nd)
            detected = {i: np.zeros(len(d), bool) for i, (_, d) in gt_c.items()}
            ovmax_all = np.full(nd, -np.inf)
            jmax_all = np.zeros(nd, np.int64)
            for iid in np.unique(image_ids):  # IoUs per image, vectorised
                sel = np.flatnonzero(image_ids == iid)
                if int(iid) in gt_c:
                    ov = box_iou(boxes[sel], gt_c[int(iid)][0])
                    ovmax_all[sel] = ov.max(axis=1)
                    jmax_all[sel] = ov.argmax(axis=1)
            for d in range(nd):
                iid = int(image_ids[d])
                if ovmax_all[d] > self.iou_threshold:
                    j = jmax_all[d]
                    if not gt_c[iid][1][j]:
                        if not detected[iid][j]:
                            tp[d] = 1.0
                            detected[iid][j] = True
                        else:
                            fp[d] = 1.0
                    else:
                        ignored += 1
                else:
                    fp[d] = 1.0
            if npos == 0:
                ap[c] = ap07[c] = float("nan")
            else:
                fpc, tpc = np.cumsum(fp), np.cumsum(tp)
                rec = tpc / float(npos)
                prec = tpc / np.maximum(tpc + fpc, np.finfo(np.float64).eps)
                ap[c] = devkit_voc_ap(rec, prec, use_07_metric=False)
                ap07[c] = devkit_voc_ap(rec, prec, use_07_metric=True)
            # --- CorLoc (voc_eval_corloc) ---
            positive = [i for i, (_, d) in gt_c.items() if (~d).any()]
            if not positive:
                corloc[c] = float("nan")
                self._note(f"wsod: class {self.gt.category_name(c)} has no image with a non-difficult instance: "
                           "CorLoc NaN, left out of the mean (the reference returns 0.0 without detections and "
                           "divides by zero with some)")
                continue
            seen: set[int] = set()
            hits = 0
            for d in range(nd):
                iid = int(image_ids[d])
                if iid in seen or iid not in gt_c or gt_c[iid][1].all():
                    continue
                seen.add(iid)
                ok = ovmax_all[d] > self.corloc_threshold if self.corloc_comparison == ">" else \
                    ovmax_all[d] >= self.corloc_threshold
                hits += int(ok)
            corloc[c] = hits / len(positive)
        self._counts["wsod.dets_on_difficult_ignored"] = ignored
        n_nan = sum(1 for v in ap.values() if v != v)
        self._counts["wsod.classes_nan"] = n_nan
        if n_nan:
            self._note("wsod: classes without non-difficult GT have AP NaN and are left out of the means")
        names = {c: self.gt.category_name(c) for c in ap}
        self._per_class = {
            "wsod.AP50": {names[c]: v * 100 for c, v in ap.items()},
            "wsod.AP50_07": {names[c]: v * 100 for c, v in ap07.items()},
            "wsod.CorLoc": {names[c]: v * 100 for c, v in corloc.items()},
        }
        return {
            "wsod.AP50": nan_mean(list(ap.values())) * 100,
            "wsod.AP50_07": nan_mean(list(ap07.values())) * 100,
            "wsod.CorLoc": nan_mean(list(corloc.values())) * 100,
        }

    @classmethod
    def evaluate_files(cls, *, gt_root: Path, split: str, predictions: Path, **options: Any) -> EvaluationResult:
        check_options("wsod", options, {"iou_threshold", "corloc_threshold", "corloc_comparison", "score_decimals"})
        return cls._evaluate_instance_files(gt_root, split, predictions, **options,
                                            need={"need_mask": False, "need_bbox": True})
