"""Semantic segmentation mIoU from a confusion matrix.

GT: the canonical semantic PNGs (``<split>/semantic/<stem>.png``: index ``i`` is category
``meta.semantic_classes[i]``, 255 = void/ignore). Predictions: a folder of PNGs ``<stem>.png``
with the same indices (8-bit single channel, or palette PNGs whose indices are read).

- Pixels whose GT is 255 are excluded entirely (whatever is predicted there).
- A prediction of 255 on a valid GT pixel is a miss for the GT class (FN) and a false positive
  for no class (an extra "void" column of the confusion matrix).
- Any other predicted value outside ``[0, n_classes)`` is an error naming the file.
- ``IoU_c = TP / (TP + FP + FN)``; NaN when the union is empty (class neither in GT nor predicted);
  ``mIoU = nanmean`` over classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.evaluation.base import (
    EvaluationError,
    EvaluationResult,
    Evaluator,
    check_options,
    nan_mean,
    register_evaluator,
)
from bench.evaluation.gt import VOID_LABEL, CanonicalGT, read_index_png, safe_join, stem_of


@register_evaluator("semantic")
class SemanticEvaluator(Evaluator):
    """Confusion-matrix mIoU with ignore label 255."""

    def __init__(self, gt: CanonicalGT, *, n_classes: int | None = None) -> None:
        super().__init__()
        self.gt = gt
        self.class_ids = [int(c) for c in gt.meta.get("semantic_classes", [])]
        self.n = int(n_classes) if n_classes is not None else len(self.class_ids)
        if self.n <= 0:
            raise EvaluationError(f"{gt.root / 'meta.json'}: no semantic_classes")
        # rows: GT class; columns: predicted class, last column = predicted 255
        self.confusion = np.zeros((self.n, self.n + 1), np.int64)
        self._done: set[int] = set()

    def _signature(self) -> tuple:
        return (self.gt.fingerprint(), self.n)

    def gt_map(self, image_id: int) -> np.ndarray:
        im = self.gt.image_by_id[image_id]
        path = safe_join(self.gt.split_dir / "semantic", stem_of(im["file_name"]) + ".png",
                         source=self.gt.instances_path, record=f"image {image_id}")
        return read_index_png(path, record=f"image {image_id}")

    def process(self, image_id: int, pred: np.ndarray, *, source: str = "prediction") -> None:
        """One image: predicted index map ``(H, W)``."""
        image_id = self._check_image_id(image_id, self._done, prefix=source)
        gt = self.gt_map(image_id)
        pred = np.asarray(pred)
        if pred.shape != gt.shape:
            raise EvaluationError(f"{source}: image {image_id}: prediction is {pred.shape}, ground truth {gt.shape}")
        bad_gt = (gt >= self.n) & (gt != VOID_LABEL)
        if bad_gt.any():
            raise EvaluationError(f"{self.gt.split_dir / 'semantic'}: image {image_id}: GT value "
                                  f"{int(gt[bad_gt][0])} outside [0, {self.n}) and not {VOID_LABEL}")
        p = pred.astype(np.int64, copy=False)
        bad = ((p < 0) | (p >= self.n)) & (p != VOID_LABEL)
        if bad.any():
            raise EvaluationError(f"{source}: image {image_id}: predicted value {int(p[bad][0])} outside "
                                  f"[0, {self.n}) and not {VOID_LABEL}")
        valid = gt != VOID_LABEL
        g = gt[valid].astype(np.int64)
        q = p[valid]
        q = np.where(q == VOID_LABEL, self.n, q)
        self.confusion += np.bincount(g * (self.n + 1) + q, minlength=self.n * (self.n + 1)).reshape(self.n, self.n + 1)
        self._done.add(image_id)
        self._counts["semantic.images"] += 1
        self._counts["semantic.pixels"] += int(valid.sum())
        self._counts["semantic.pixels_ignored"] += int((~valid).sum())
        self._counts["semantic.pixels_predicted_void"] += int((q == self.n).sum())

    def _merge_state(self, other: "SemanticEvaluator") -> None:
        dup = self._done & other._done
        if dup:
            raise EvaluationError(f"semantic: cannot merge, images processed in both: {sorted(dup)[:10]}")
        self.confusion += other.confusion
        self._done |= other._done

    def iou_per_class(self) -> np.ndarray:
        cm = self.confusion
        tp = np.diag(cm[:, : self.n]).astype(np.float64)
        fp = cm[:, : self.n].sum(axis=0) - tp
        fn = cm.sum(axis=1) - tp
        union = tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)

    def summarize(self) -> dict[str, float]:
        missing = [i for i in self.gt.image_by_id if i not in self._done]
        if missing:  # an unprocessed image would silently drop its pixels from every class
            raise EvaluationError(f"semantic: no prediction for the image with id: {missing[0]}"
                                  + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        iou = self.iou_per_class()
        self._counts["semantic.classes_nan"] = int(np.isnan(iou).sum())
        names = [self.gt.category_name(c) for c in self.class_ids[: self.n]]
        names += [str(k) for k in range(len(names), self.n)]
        self._per_class = {"semantic.IoU": {names[k]: float(v) * 100 for k, v in enumerate(iou)}}
        if np.isnan(iou).any():
            self._note("semantic: classes absent from both GT and predictions have IoU NaN, left out of the mean")
        return {"semantic.mIoU": nan_mean(iou.tolist()) * 100}

    @classmethod
    def evaluate_files(cls, *, gt_root: Path, split: str, predictions: Path, **options: Any) -> EvaluationResult:
        """``predictions``: a folder of ``<stem>.png``; every GT image needs one (a missing file is an error)."""
        check_options("semantic", options, {"n_classes"})
        gt = CanonicalGT.load(gt_root, split)
        predictions = Path(predictions)
        if not predictions.is_dir():
            raise EvaluationError(f"{predictions}: semantic predictions folder is missing")
        ev = cls(gt, **options)
        for im in gt.images:
            iid = int(im["id"])
            path = safe_join(predictions, stem_of(im["file_name"]) + ".png", source=gt.instances_path,
                             record=f"image {iid}")
            ev.process(iid, read_index_png(path, record=f"image {iid}"), source=str(path))
        return ev.result()
