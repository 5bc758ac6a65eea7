"""COCO AP (segm and bbox) — COCOeval with default parameters, run by a selectable backend.

The evaluator validates and collects result records per image, then hands them to
``COCO.loadRes`` + ``COCOeval(evaluate, accumulate, summarize)`` with default parameters
(IoU 0.50:0.05:0.95, area ranges all/small/medium/large, maxDets 1/10/100). ``stats[0..5]``
become ``coco.<iouType>.AP|AP50|AP75|APs|APm|APl`` × 100; a ``-1`` (no ground truth for that
setting, e.g. no small objects) is reported as NaN, counted and explained in the notes.

``backend`` (``eval.coco_backend``) picks the COCOeval implementation
(:mod:`bench.evaluation.coco_backends`): ``hotcoco`` (default), ``faster-coco-eval`` or
``pycocotools`` (the reference). Tests hold the three bit-identical.

Choices made around the unchanged COCOeval, each documented in docs/evaluation.md:

- Image set: every image of the ground truth (``params.imgIds`` default), as evaluating a results
  file against an annotation file does; images without predictions simply have none.
- segm area (``segm_area="mask"``, default): ``loadRes`` takes a result's area from its box when
  a ``bbox`` is present and from its mask otherwise. For segm evaluation the boxes are dropped so
  the area ranges (APs/APm/APl) use mask areas — what detectron2 and mmdetection do;
  ``segm_area="bbox"`` keeps them (plain pycocotools on a results file with boxes and masks).
  AP/AP50/AP75 do not depend on it.
- bbox evaluation: results without ``bbox`` get ``pycocotools.mask.toBbox`` of their mask, so box
  areas drive APs/APm/APl (pycocotools on a masks-only file would use mask areas there).
- Empty predictions: pycocotools' ``loadRes`` rejects an empty list; an empty result set is built
  directly, so every category with ground truth gets AP 0.
- Detections beyond ``maxDets[-1]`` (100) per (image, category) are never looked at by COCOeval;
  their number is counted in ``coco.dets_beyond_maxdets``.
- COCOeval's console output goes to the ``bench.evaluation.coco`` logger (DEBUG).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from bench.evaluation.base import EvaluationError, EvaluationResult, Evaluator, check_options, register_evaluator
from bench.evaluation.coco_backends import DEFAULT_COCO_BACKEND, COCORun, get_backend
from bench.evaluation.gt import CanonicalGT

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
IOU_TYPES = ("segm", "bbox")


@register_evaluator("coco")
class COCOEvaluator(Evaluator):
    """COCO AP (COCOeval of ``backend``) for one or both iou types."""

    def __init__(self, gt: CanonicalGT, *, iou_types: Sequence[str] = IOU_TYPES, segm_area: str = "mask",
                 backend: str = DEFAULT_COCO_BACKEND) -> None:
        super().__init__()
        self.gt = gt
        self.iou_types = tuple(iou_types)
        bad = [t for t in self.iou_types if t not in IOU_TYPES]
        if bad or not self.iou_types:
            raise EvaluationError(f"coco: iou_types must be a non-empty subset of {IOU_TYPES}, got {list(iou_types)}")
        if segm_area not in ("mask", "bbox"):
            raise EvaluationError(f"coco: segm_area must be 'mask' or 'bbox', got {segm_area!r}")
        self.segm_area = segm_area
        self.backend = get_backend(backend).name  # unknown / not installed: an error now, not at summarize
        self._images: dict[int, list[dict]] = {}

    def _signature(self) -> tuple:
        return (self.gt.fingerprint(), self.iou_types, self.segm_area, self.backend)

    def process(self, image_id: int, records: list[dict], *, validated: bool = False) -> None:
        """Collect one image's result records ``{category_id, score, segmentation?, bbox?}``."""
        image_id, records = self._image_records(image_id, records, self._images, validated=validated,
                                                need_mask="segm" in self.iou_types, need_bbox="bbox" in self.iou_types)
        for r in records:
            if "segm" in self.iou_types and r.get("segmentation") is None:
                raise EvaluationError(f"coco: image {image_id}: record {r.get('index')} has no segmentation "
                                      "(needed for iou_type 'segm')")
            if "bbox" in self.iou_types and r.get("bbox") is None:
                raise EvaluationError(f"coco: image {image_id}: record {r.get('index')} has no bbox")
        self._images[image_id] = list(records)
        self._counts["coco.images"] += 1
        self._counts["coco.predictions"] += len(records)
        if not records:
            self._counts["coco.images_without_predictions"] += 1

    def _merge_state(self, other: "COCOEvaluator") -> None:
        dup = self._images.keys() & other._images.keys()
        if dup:
            raise EvaluationError(f"coco: cannot merge, images processed in both: {sorted(dup)[:10]}")
        self._images.update(other._images)

    def _results(self, iou_type: str) -> list[dict]:
        out = []
        for image_id in sorted(self._images, key=self.gt.image_index.__getitem__):
            for r in self._images[image_id]:
                rec = {"image_id": r["image_id"], "category_id": r["category_id"], "score": r["score"]}
                if iou_type == "segm":
                    rec["segmentation"] = dict(r["segmentation"])
                    if self.segm_area == "bbox":  # loadRes then takes the area from the box (detectron2)
                        box = r.get("bbox")
                        rec["bbox"] = (list(box) if box is not None
                                       else [float(v) for v in mask_utils.toBbox(r["segmentation"])])
                else:
                    rec["bbox"] = list(r["bbox"])
                out.append(rec)
        return out

    def _count_beyond_maxdets(self, max_det: int) -> int:
        n = 0
        for recs in self._images.values():
            per_cat: dict[int, int] = {}
            for r in recs:
                per_cat[r["category_id"]] = per_cat.get(r["category_id"], 0) + 1
            n += sum(max(0, c - max_det) for c in per_cat.values())
        return n

    def run_cocoeval(self, iou_type: str) -> COCORun:
        """Run COCOeval of the backend on the ground truth and the collected results (quietly)."""
        return get_backend(self.backend).run(self.gt.instances, self._results(iou_type), iou_type)

    def summarize(self) -> dict[str, float]:
        out: dict[str, float] = {}
        self._per_class: dict[str, dict[str, float]] = {}
        self._counts["coco.images_not_processed"] = len(self.gt.image_by_id) - len(self._images)
        self._counts["coco.gt_instances"] = len(self.gt.instances["annotations"])
        self._counts["coco.gt_crowd"] = sum(1 for a in self.gt.instances["annotations"] if a.get("iscrowd", 0))
        for iou_type in self.iou_types:
            ev = self.run_cocoeval(iou_type)
            self._counts["coco.dets_beyond_maxdets"] = self._count_beyond_maxdets(ev.max_dets[-1])
            for name, v in zip(STAT_NAMES, ev.stats[:6]):
                key = f"coco.{iou_type}.{name}"
                if v == -1:
                    out[key] = float("nan")
                    self._counts[f"{key}.nan"] = 1
                    self._note(f"{key} is NaN: COCOeval returned -1 (no ground truth in that IoU/area setting)")
                else:
                    out[key] = float(v) * 100
            # per class AP (IoU .50:.95, area all, maxDets 100), as detectron2 reports it
            precision = ev.precision
            per = {}
            for k, cid in enumerate(ev.cat_ids):
                p = precision[:, :, k, 0, -1]
                p = p[p > -1]
                per[self.gt.category_name(cid)] = float(np.mean(p)) * 100 if p.size else float("nan")
            self._per_class[f"coco.{iou_type}.AP"] = per
        return out

    @classmethod
    def evaluate_files(cls, *, gt_root: Path, split: str, predictions: Path, **options: Any) -> EvaluationResult:
        check_options("coco", options, {"iou_types", "segm_area", "backend", "check_rle"})
        iou_types = tuple(options.get("iou_types", IOU_TYPES))
        return cls._evaluate_instance_files(gt_root, split, predictions, **options,
                                            need={"need_mask": "segm" in iou_types, "need_bbox": "bbox" in iou_types})
