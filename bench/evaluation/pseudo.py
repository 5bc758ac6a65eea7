"""Pseudo-label quality: P2Seg Table 6 (per-instance IoU counts, mean IoU) and BESTIE Fig. 6 (TPs).

Input: pseudo labels as a COCO instance JSON (or a results list) whose records carry
``"point_annotation_id"`` — the GT annotation id of the point that produced the mask — and the
points file (docs/formats.md, "Weak labels: points").

- Evaluated instances: every non-crowd GT thing instance that has at least one point
  (``isthing == 1`` records; several points of one instance — ``P10`` — count once).
- Per evaluated instance: IoU (float64) between its GT mask and the union of the pseudo masks
  tagged with its id; 0 when none is tagged.
- ``pseudo.n_iou50 | n_iou70 | n_iou90``: number of evaluated instances with IoU **>** 0.5 / 0.7 / 0.9
  (strict, as P2Seg writes "IoU > 50"); ``pseudo.mean_iou``: mean IoU × 100.
- ``pseudo.tp50``: number of pseudo masks that are true positives at IoU ≥ 0.5 under the VOC
  greedy matching of :mod:`bench.evaluation.voc` (per image and class, against every non-crowd
  GT instance of the image, score = the record's ``score`` or 1.0), BESTIE Fig. 6.

Counted, never silent: masks without a tag (``pseudo.untagged_masks``; they only enter tp50),
tags naming a GT instance that has no point (``pseudo.tags_without_point``), tags whose category
differs from the instance's (``pseudo.tag_category_mismatch``). A tag that names no GT annotation,
or one of another image, is an error.

Labels that carry no tag at all (BESTIE's image-level setting: instances come from predicted
centres, not from a point) have no instance-to-mask correspondence: ``n_iou*`` and ``mean_iou`` are
then NaN (not measured, with a note), and ``tp50`` is their measure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from bench.evaluation.base import EvaluationError, EvaluationResult, Evaluator, check_options, register_evaluator
from bench.evaluation.gt import CanonicalGT, read_json
from bench.evaluation.records import load_instance_predictions
from bench.evaluation.rle import to_compressed
from bench.evaluation.voc import greedy_match, rle_iou_f32

THRESHOLDS = (0.5, 0.7, 0.9)


def pointed_annotations(points: Any, gt: CanonicalGT, *, source: str) -> dict[int, int]:
    """Annotation id → image id for every GT thing instance with a point; validates the points file."""
    recs = points.get("points") if isinstance(points, dict) else points
    if not isinstance(recs, list):
        raise EvaluationError(f"{source}: expected a points JSON with a 'points' list")
    out: dict[int, int] = {}
    for k, p in enumerate(recs):
        where = f"{source}: points[{k}]"
        if not isinstance(p, dict):
            raise EvaluationError(f"{where}: not a JSON object")
        if not p.get("isthing", 1):
            continue
        aid, iid = p.get("annotation_id"), p.get("image_id")
        if not isinstance(aid, int) or not isinstance(iid, int):
            raise EvaluationError(f"{where}: missing or non-integer annotation_id / image_id")
        ann = gt.annotation_by_id.get(aid)
        if ann is None:
            raise EvaluationError(f"{where}: annotation_id {aid} is not an annotation of {gt.instances_path}")
        if int(ann["image_id"]) != iid:
            raise EvaluationError(f"{where}: annotation {aid} belongs to image {ann['image_id']}, not {iid}")
        if ann.get("iscrowd", 0):
            raise EvaluationError(f"{where}: annotation {aid} is a crowd region (crowd regions get no points)")
        if "category_id" in p and p["category_id"] != ann["category_id"]:
            raise EvaluationError(f"{where}: category_id {p['category_id']} differs from annotation {aid}'s "
                                  f"{ann['category_id']}")
        im = gt.image_by_id[iid]
        x, y = p.get("x"), p.get("y")
        if not (isinstance(x, int) and isinstance(y, int) and 0 <= x < im["width"] and 0 <= y < im["height"]):
            raise EvaluationError(f"{where}: point ({x!r}, {y!r}) is outside image {iid} "
                                  f"({im['width']}x{im['height']})")
        out[aid] = iid
    return out


@register_evaluator("pseudo")
class PseudoLabelEvaluator(Evaluator):
    """Per-instance IoU of pseudo masks with the GT instance their point came from."""

    def __init__(self, gt: CanonicalGT, *, points: Any, points_source: str = "points") -> None:
        super().__init__()
        self.gt = gt
        self.pointed = pointed_annotations(points, gt, source=points_source)
        self._pointed_by_image: dict[int, list[int]] = {}
        for aid in sorted(self.pointed, key=lambda a: (gt.image_index[self.pointed[a]], a)):
            self._pointed_by_image.setdefault(self.pointed[aid], []).append(aid)
        self._iou: dict[int, float] = {}   # annotation id → IoU
        self._tp50: dict[int, int] = {}    # image id → TPs
        self._done: set[int] = set()

    def _signature(self) -> tuple:
        return (self.gt.fingerprint(), tuple(sorted(self.pointed)))

    def _gt_rle(self, ann: dict) -> dict:
        im = self.gt.image_by_id[int(ann["image_id"])]
        return to_compressed(ann["segmentation"], int(im["height"]), int(im["width"]))

    def process(self, image_id: int, records: list[dict], *, validated: bool = False) -> None:
        """One image's pseudo masks ``{category_id, segmentation, score?, point_annotation_id?}``."""
        image_id, records = self._image_records(image_id, records, self._done, validated=validated,
                                                what="pseudo labels", need_mask=True, need_score=False)
        tagged: dict[int, list[dict]] = {}
        for r in records:
            tag = r.get("point_annotation_id")
            if tag is None:
                self._counts["pseudo.untagged_masks"] += 1
                continue
            self._counts["pseudo.tagged_masks"] += 1
            ann = self.gt.annotation_by_id.get(tag) if isinstance(tag, int) and not isinstance(tag, bool) else None
            if ann is None:
                raise EvaluationError(f"pseudo labels, record {r.get('index')} (image_id={image_id}): "
                                      f"point_annotation_id {tag!r} is not an annotation of {self.gt.instances_path}")
            if int(ann["image_id"]) != image_id:
                raise EvaluationError(f"pseudo labels, record {r.get('index')} (image_id={image_id}): "
                                      f"point_annotation_id {tag} belongs to image {ann['image_id']}")
            if tag not in self.pointed:
                self._counts["pseudo.tags_without_point"] += 1
                continue
            if r["category_id"] != ann["category_id"]:
                self._counts["pseudo.tag_category_mismatch"] += 1
            tagged.setdefault(tag, []).append(r["segmentation"])
        for aid in self._pointed_by_image.get(image_id, []):
            masks = tagged.get(aid)
            if not masks:
                self._iou[aid] = 0.0
                self._counts["pseudo.instances_without_mask"] += 1
                continue
            union = masks[0] if len(masks) == 1 else mask_utils.merge(masks, intersect=False)
            gt_rle = self._gt_rle(self.gt.annotation_by_id[aid])
            self._iou[aid] = float(np.asarray(mask_utils.iou([union], [gt_rle], [0])).reshape(-1)[0])
        # BESTIE "true positives": VOC greedy matching at IoU >= 0.5 against all non-crowd GT of the image
        gt_by_cat: dict[int, list[dict]] = {}
        for a in self.gt.annotations_by_image[image_id]:
            if not a.get("iscrowd", 0):
                gt_by_cat.setdefault(int(a["category_id"]), []).append(self._gt_rle(a))
        labels = np.array([r["category_id"] for r in records], dtype=np.int64)
        tp = 0
        for lab in np.unique(labels):
            keep = np.flatnonzero(labels == lab)
            scores = np.array([records[k]["score"] for k in keep], dtype=np.float64)
            order = scores.argsort()[::-1]
            gts = gt_by_cat.get(int(lab), [])
            if gts:
                iou = rle_iou_f32([records[keep[k]]["segmentation"] for k in order], gts)
                tp += int(greedy_match(iou, (0.5,)).sum())
        self._tp50[image_id] = tp
        self._done.add(image_id)
        self._counts["pseudo.images"] += 1
        self._counts["pseudo.masks"] += len(records)

    def _merge_state(self, other: "PseudoLabelEvaluator") -> None:
        dup = self._done & other._done
        if dup:
            raise EvaluationError(f"pseudo: cannot merge, images processed in both: {sorted(dup)[:10]}")
        self._iou.update(other._iou)
        self._tp50.update(other._tp50)
        self._done |= other._done

    def summarize(self) -> dict[str, float]:
        ious = []
        per_cat: dict[int, list[float]] = {}
        not_processed = 0
        for iid in sorted(self._pointed_by_image, key=self.gt.image_index.__getitem__):
            if iid not in self._done:
                not_processed += 1
            for aid in self._pointed_by_image[iid]:
                v = self._iou.get(aid, 0.0)  # image never processed: no pseudo mask, IoU 0
                ious.append(v)
                per_cat.setdefault(int(self.gt.annotation_by_id[aid]["category_id"]), []).append(v)
        self._counts["pseudo.instances"] = len(ious)
        self._counts["pseudo.images_not_processed"] = len(self.gt.image_by_id) - len(self._done)
        self._counts["pseudo.images_with_points_not_processed"] = not_processed
        arr = np.array(ious, dtype=np.float64)
        out = {f"pseudo.n_iou{round(100 * t)}": float(np.sum(arr > t)) for t in THRESHOLDS}
        if self._counts["pseudo.untagged_masks"] and not self._counts["pseudo.tagged_masks"]:
            out = {key: float("nan") for key in (*out, "pseudo.mean_iou")}
            self._note("pseudo: no mask carries a point_annotation_id (image-level labels): the per-instance "
                       "IoU counts and mean_iou are not defined (NaN); pseudo.tp50 measures these labels")
        elif arr.size:
            out["pseudo.mean_iou"] = float(arr.mean()) * 100
        else:
            out["pseudo.mean_iou"] = float("nan")
            self._note("pseudo: no GT instance has a point: mean_iou is NaN")
        out["pseudo.tp50"] = float(sum(self._tp50.values()))
        self._per_class = {"pseudo.mean_iou": {self.gt.category_name(c): float(np.mean(v)) * 100
                                               for c, v in sorted(per_cat.items())}}
        return out

    @classmethod
    def evaluate_files(cls, *, gt_root: Path, split: str, predictions: Path, **options: Any) -> EvaluationResult:
        """``predictions``: pseudo labels (COCO instance JSON or results list); ``points``: the points file."""
        check_options("pseudo", options, {"points", "check_rle"})
        if "points" not in options:
            raise EvaluationError("pseudo: option 'points' (path of the points JSON) is required")
        gt = CanonicalGT.load(gt_root, split)
        points_path = Path(options["points"])
        points = read_json(points_path, "points file")
        preds = load_instance_predictions(predictions, gt, need_mask=True, need_score=False,
                                          check_rle=options.get("check_rle", True))
        return cls(gt, points=points, points_source=str(points_path))._process_predictions(preds)
