"""VOC instance-segmentation mAP — the chainercv protocol used by BESTIE and P2Seg.

Reference: chainercv v0.13.1 ``eval_instance_segmentation_voc`` →
``calc_instance_segmentation_voc_prec_rec`` + ``calc_detection_voc_ap`` (``use_07_metric=False``).
Reproduced step by step (see docs/evaluation.md for the full statement):

per image, for each label ``l`` in ``unique(pred_labels ∪ gt_labels)``:
  predictions of ``l`` (file order) sorted by ``score.argsort()[::-1]`` (numpy's default sort,
  reversed — among equal scores in small arrays the *later* record comes first);
  ``n_pos[l] += #GT of l``; the sorted scores are appended to ``score[l]``;
  no prediction → next label; no GT → every prediction is a false positive (0);
  otherwise the IoU matrix pred × GT (float32, as chainercv's ``mask_iou``), each prediction
  takes ``argmax`` over GT (first GT on ties), ``-1`` when the max IoU ``< thresh``; walking the
  sorted predictions: a hit on a GT not yet selected → 1 (TP) and the GT is selected; a hit on a
  selected GT → 0 (FP) — there is *no* fall-back to the second-best GT; no hit → 0.
per label: ``order = np.array(score[l]).argsort()[::-1]``; ``tp = cumsum(match == 1)``,
``fp = cumsum(match == 0)``, ``prec = tp / (tp + fp)``, ``rec = tp / n_pos[l]`` (``None`` when
``n_pos[l] == 0``); AP = chainercv's all-point AP (NaN when prec or rec is ``None``);
mAP = ``nanmean`` over labels.

IoU is exact pixel IoU on the RLE masks at the original resolution, computed by
``pycocotools.mask.iou`` with ``iscrowd`` all false: ``|A∩B| / |A∪B|`` as a double, equal to
chainercv's ``bitwise_and.sum() / bitwise_or.sum()``; both are rounded to float32 as chainercv
stores them, and thresholds are compared in float32 (``iou < np.float32(t)``) as chainercv's
``iou.max(axis=1) < iou_thresh`` does on its float32 array. All thresholds are evaluated in one
pass: one pycocotools call per image (all predictions × all GT) gives the IoUs, whose per-label
blocks are matched for every threshold.

Ground truth: the non-crowd instances of ``instances.json`` (VOC void pixels are already outside
every mask). chainercv has no notion of crowd: ``iscrowd=1`` instances (COCO) are left out of
the ground truth (a prediction on a crowd region is then an ordinary false positive) and counted
in ``voc.gt_crowd_excluded``. ``difficult`` plays no role (chainercv's VOC instance dataset has
none).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from bench.evaluation.ap import chainercv_voc_ap
from bench.evaluation.base import (
    EvaluationError,
    EvaluationResult,
    Evaluator,
    check_options,
    nan_mean,
    register_evaluator,
)
from bench.evaluation.gt import CanonicalGT
from bench.evaluation.rle import to_compressed

DEFAULT_THRESHOLDS = (0.25, 0.5, 0.7, 0.75)


def metric_key(t: float) -> str:
    """``voc.mAP{round(100·t)}``."""
    return f"voc.mAP{round(100 * t)}"


def greedy_match(iou: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """chainercv's greedy matching of score-sorted predictions to GT, for several thresholds at once.

    ``iou``: ``(n_pred, n_gt)`` float32, rows in score order. Returns ``int8 (n_thresholds, n_pred)``
    with 1 (TP) / 0 (FP). Each prediction looks only at its argmax GT (first on ties); it is a TP
    iff that IoU is ``>= t`` and it is the first such hit on that GT in score order.
    """
    n_pred, n_gt = iou.shape
    out = np.zeros((len(thresholds), n_pred), np.int8)
    if n_pred == 0 or n_gt == 0:
        return out
    gt_index = iou.argmax(axis=1).tolist()
    # chainercv: gt_index[iou.max(axis=1) < iou_thresh] = -1, compared in float32
    hit = ~(iou.max(axis=1)[None, :] < np.asarray(thresholds, np.float32)[:, None])
    for ti, row in enumerate(hit.tolist()):  # the arrays are tiny: a plain loop beats numpy calls
        taken: set[int] = set()
        res = [0] * n_pred
        for k, (h, g) in enumerate(zip(row, gt_index)):
            if h and g not in taken:
                res[k] = 1
                taken.add(g)
        out[ti] = res
    return out


def rle_iou_f32(pred_rles: list[dict], gt_rles: list[dict]) -> np.ndarray:
    """Pixel IoU ``(n_pred, n_gt)`` via pycocotools (no crowd), rounded to float32 like chainercv."""
    if not pred_rles or not gt_rles:
        return np.zeros((len(pred_rles), len(gt_rles)), np.float32)
    iou = mask_utils.iou(pred_rles, gt_rles, [0] * len(gt_rles))
    return np.asarray(iou, dtype=np.float64).reshape(len(pred_rles), len(gt_rles)).astype(np.float32)


@register_evaluator("voc")
class VOCInstanceEvaluator(Evaluator):
    """VOC instance mAP at several IoU thresholds (chainercv protocol)."""

    def __init__(self, gt: CanonicalGT, *, iou_thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                 use_07_metric: bool = False, score_dtype: str = "float64") -> None:
        super().__init__()
        self.gt = gt
        self.thresholds = tuple(float(t) for t in iou_thresholds)
        if not self.thresholds or not all(0.0 < t <= 1.0 for t in self.thresholds):
            raise EvaluationError(f"voc: iou_thresholds must be in (0, 1], got {list(iou_thresholds)}")
        keys = [metric_key(t) for t in self.thresholds]
        if len(set(keys)) != len(keys):
            raise EvaluationError(f"voc: iou_thresholds {list(self.thresholds)} give duplicate metric keys {keys}")
        if score_dtype not in ("float64", "float32"):
            raise EvaluationError(f"voc: score_dtype must be 'float64' or 'float32', got {score_dtype!r}")
        self.use_07_metric = bool(use_07_metric)
        self.score_dtype = np.dtype(score_dtype)
        # image id → {label: (n_pos, sorted scores, matches int8 (T, n))}
        self._images: dict[int, dict[int, tuple[int, np.ndarray, np.ndarray]]] = {}

    def _signature(self) -> tuple:
        return (self.gt.fingerprint(), self.thresholds, self.use_07_metric, str(self.score_dtype))

    # -- ground truth -----------------------------------------------------------------
    def _gt_of(self, image_id: int) -> list[tuple[int, dict]]:
        """(label, RLE) of the image's non-crowd GT instances, in annotation order."""
        im = self.gt.image_by_id[image_id]
        h, w = int(im["height"]), int(im["width"])
        return [(int(a["category_id"]), to_compressed(a["segmentation"], h, w))
                for a in self.gt.annotations_by_image[image_id] if not a.get("iscrowd", 0)]

    # -- contract ---------------------------------------------------------------------
    def process(self, image_id: int, records: list[dict], *, validated: bool = False) -> None:
        """Accumulate one image's predictions: dicts ``{category_id, segmentation (RLE), score}``."""
        image_id, records = self._image_records(image_id, records, self._images, validated=validated, need_mask=True)
        gt = self._gt_of(image_id)
        self._counts["voc.images"] += 1
        self._counts["voc.predictions"] += len(records)
        if not records:
            self._counts["voc.images_without_predictions"] += 1
        pred_labels = [r["category_id"] for r in records]
        gt_labels = [lab for lab, _ in gt]
        # one IoU matrix per image (all predictions × all GT); per label we take its block
        iou_all = rle_iou_f32([r["segmentation"] for r in records], [m for _, m in gt]) \
            if records and gt else None
        state: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}
        for lab in sorted(set(pred_labels) | set(gt_labels)):  # = np.unique(pred_labels ∪ gt_labels)
            keep = [k for k, pl in enumerate(pred_labels) if pl == lab]
            gt_l = [j for j, gl in enumerate(gt_labels) if gl == lab]
            scores = np.array([records[k]["score"] for k in keep], dtype=self.score_dtype)
            order = scores.argsort()[::-1]
            scores = scores[order]
            if not keep or not gt_l:  # no prediction, or no GT: every prediction is a FP
                matches = np.zeros((len(self.thresholds), len(keep)), np.int8)
            else:
                rows = np.asarray(keep)[order]
                matches = greedy_match(iou_all[np.ix_(rows, gt_l)], self.thresholds)
            state[lab] = (len(gt_l), scores, matches)
        self._images[image_id] = state

    def _merge_state(self, other: "VOCInstanceEvaluator") -> None:
        dup = self._images.keys() & other._images.keys()
        if dup:
            raise EvaluationError(f"voc: cannot merge, images processed in both: {sorted(dup)[:10]}")
        self._images.update(other._images)

    def _accumulate(self) -> dict[int, tuple[int, np.ndarray, np.ndarray]]:
        """Label → (n_pos, scores, matches) over all images, concatenated in dataset order."""
        n_pos: dict[int, int] = {}
        scores: dict[int, list[np.ndarray]] = {}
        matches: dict[int, list[np.ndarray]] = {}
        for image_id in sorted(self.gt.image_by_id, key=self.gt.image_index.__getitem__):
            state = self._images.get(image_id)
            if state is None:  # never processed: no predictions, its GT still counts
                labels = [lab for lab, _ in self._gt_of(image_id)]
                state = {lab: (labels.count(lab), np.zeros(0, self.score_dtype),
                               np.zeros((len(self.thresholds), 0), np.int8)) for lab in sorted(set(labels))}
            for lab, (n, s, m) in state.items():
                n_pos[lab] = n_pos.get(lab, 0) + n
                scores.setdefault(lab, []).append(s)
                matches.setdefault(lab, []).append(m)
        return {lab: (n_pos[lab], np.concatenate(scores[lab]), np.concatenate(matches[lab], axis=1)) for lab in n_pos}

    def _ap_table(self) -> dict[float, dict[int, float]]:
        """Threshold → {label: AP in [0, 1] or NaN}."""
        acc = self._accumulate()
        table: dict[float, dict[int, float]] = {t: {} for t in self.thresholds}
        for lab, (n_pos, score_l, match_l) in sorted(acc.items()):
            order = score_l.argsort()[::-1]
            for ti, t in enumerate(self.thresholds):
                m = match_l[ti][order]
                tp = np.cumsum(m == 1)
                fp = np.cumsum(m == 0)
                prec = tp / (fp + tp)
                rec = tp / n_pos if n_pos > 0 else None
                table[t][lab] = chainercv_voc_ap(prec, rec, use_07_metric=self.use_07_metric)
        return table

    def summarize(self) -> dict[str, float]:
        table = self._ap_table()
        self._per_class: dict[str, dict[str, float]] = {}
        out = {}
        unprocessed = len(self.gt.image_by_id) - len(self._images)
        self._counts["voc.images_not_processed"] = unprocessed
        self._counts["voc.gt_instances"] = sum(1 for a in self.gt.instances["annotations"] if not a.get("iscrowd", 0))
        self._counts["voc.gt_crowd_excluded"] = sum(1 for a in self.gt.instances["annotations"] if a.get("iscrowd", 0))
        for t in self.thresholds:
            key = metric_key(t)
            aps = table[t]
            out[key] = nan_mean(list(aps.values())) * 100
            per = {}
            for cid in sorted(self.gt.thing_categories):
                per[self.gt.category_name(cid)] = aps.get(cid, float("nan")) * 100
            self._per_class[key.replace("mAP", "AP")] = per
            n_nan = sum(1 for cid in self.gt.thing_categories if np.isnan(aps.get(cid, float("nan"))))
            self._counts[f"{key}.classes_nan"] = n_nan
            self._counts[f"{key}.classes"] = len(self.gt.thing_categories) - n_nan
        if any(v != v for v in out.values()):
            self._note("voc: mAP is NaN: no class has both ground truth and predictions considered")
        if self._counts.get(f"{metric_key(self.thresholds[0])}.classes_nan"):
            self._note("voc: classes without ground truth instances have AP NaN and are left out of the mean "
                       "(chainercv: rec is None when n_pos == 0)")
        return out

    @classmethod
    def evaluate_files(cls, *, gt_root: Path, split: str, predictions: Path, **options: Any) -> EvaluationResult:
        check_options("voc", options, {"iou_thresholds", "use_07_metric", "score_dtype", "check_rle"})
        return cls._evaluate_instance_files(gt_root, split, predictions, **options, need={"need_mask": True})
