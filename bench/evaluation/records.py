"""Instance prediction records (COCO results JSON): loading, validation, and writing.

A results file is a JSON list ``[{image_id, category_id, segmentation: RLE, score, bbox?}]``
(docs/formats.md); a COCO instance dict whose ``annotations`` hold such records is accepted
too (pseudo labels are written that way). Every record is checked against the ground truth
before any metric is computed; a bad record stops the evaluation with an
:class:`EvaluationError` that names the file and the record.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from pycocotools import mask as mask_utils

from bench.evaluation.base import EvaluationError
from bench.evaluation.gt import CanonicalGT, read_json
from bench.evaluation.rle import check_rles

log = logging.getLogger(__name__)

__all__ = ["InstancePredictions", "load_instance_predictions", "validate_instance_records",
           "write_coco_results", "normalize_rle"]


@dataclass
class InstancePredictions:
    """Validated prediction records grouped by image (records keep their file order)."""

    by_image: dict[int, list[dict]] = field(default_factory=dict)
    n_records: int = 0
    source: str = "<records>"


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def normalize_rle(seg: Any) -> dict:
    """A compressed or uncompressed RLE dict → compressed RLE with ``counts`` as ``str``."""
    if type(seg) is dict:  # fast path: the usual JSON form
        size, counts = seg.get("size"), seg.get("counts")
        if (type(counts) is str and type(size) is list and len(size) == 2 and type(size[0]) is int
                and type(size[1]) is int and size[0] >= 0 and size[1] >= 0):
            return {"size": size, "counts": counts}
    if not isinstance(seg, dict) or "size" not in seg or "counts" not in seg:
        raise ValueError("segmentation must be an RLE dict with 'size' and 'counts' (polygons are not accepted "
                         "for predictions)")
    size = seg["size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_int(s) and s >= 0 for s in size)):
        raise ValueError(f"RLE 'size' must be [height, width], got {size!r}")
    counts = seg["counts"]
    if isinstance(counts, list):
        if not all(_is_int(c) and c >= 0 for c in counts):
            raise ValueError("uncompressed RLE 'counts' must be non-negative integers")
        if sum(counts) != size[0] * size[1]:
            raise ValueError(f"uncompressed RLE runs add up to {sum(counts)} pixels, not "
                             f"{size[0]}x{size[1]}={size[0] * size[1]}")
        rle = mask_utils.frPyObjects({"size": [int(size[0]), int(size[1])], "counts": [int(c) for c in counts]},
                                     int(size[0]), int(size[1]))
        counts = rle["counts"]
    if isinstance(counts, bytes):
        try:
            counts = counts.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("RLE 'counts' is not an ASCII string") from None
    if not isinstance(counts, str):
        raise ValueError(f"RLE 'counts' must be a string (compressed) or a list (uncompressed), got "
                         f"{type(counts).__name__}")
    return {"size": [int(size[0]), int(size[1])], "counts": counts}


def validate_instance_records(
    records: Any,
    gt: CanonicalGT,
    *,
    source: str,
    need_mask: bool,
    need_bbox: bool = False,
    need_score: bool = True,
    check_rle: bool = True,
) -> InstancePredictions:
    """Check and normalise results records against the ground truth; group them by image.

    Normalised record: ``{"image_id", "category_id", "score": float, "segmentation": RLE | None,
    "bbox": [x, y, w, h] | None, "index": position in the file, ...other keys kept}``.
    Without ``need_score`` a missing score reads 1.0.
    """
    if isinstance(records, dict) and isinstance(records.get("annotations"), list):
        records = records["annotations"]
    if not isinstance(records, list):
        raise EvaluationError(f"{source}: expected a JSON list of result records (or a dict with 'annotations')")
    cats = gt.thing_categories
    images = gt.image_by_id
    out: dict[int, list[dict]] = defaultdict(list)
    seen_ids: dict[Any, int] = {}
    rle_list: list[dict] = []
    rle_sizes: list[tuple[int, int]] = []
    rle_where: list[str] = []
    negative: list[str] = []  # scored as given (pycocotools and chainercv rank any float), but said aloud
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise EvaluationError(f"{source}: record {i}: not a JSON object")
        iid = r.get("image_id")
        where = f"record {i} (image_id={iid!r})"
        if not _is_int(iid):
            raise EvaluationError(f"{source}: {where}: missing or non-integer 'image_id'")
        if int(iid) not in images:
            raise EvaluationError(f"{source}: {where}: image_id {iid} is not an image of the ground truth "
                                  f"({gt.instances_path})")
        cid = r.get("category_id")
        if not _is_int(cid):
            raise EvaluationError(f"{source}: {where}: missing or non-integer 'category_id'")
        if int(cid) not in cats:
            raise EvaluationError(f"{source}: {where}: unknown category_id {cid} (thing categories: "
                                  f"{sorted(cats)})")
        if "id" in r:
            if r["id"] in seen_ids:
                raise EvaluationError(f"{source}: {where}: duplicate id {r['id']!r} (also record {seen_ids[r['id']]})")
            seen_ids[r["id"]] = i
        if "score" in r:
            score = r["score"]
            if not _is_number(score) or not math.isfinite(float(score)):
                raise EvaluationError(f"{source}: {where}: score must be a finite number, got {score!r}")
            score = float(score)
            if score < 0:
                negative.append(f"{where}: {score!r}")
        elif need_score:
            raise EvaluationError(f"{source}: {where}: missing 'score'")
        else:
            score = 1.0
        im = images[int(iid)]
        h, w = int(im["height"]), int(im["width"])
        seg = None
        if "segmentation" in r and r["segmentation"] is not None:
            try:
                seg = normalize_rle(r["segmentation"])
            except ValueError as e:
                raise EvaluationError(f"{source}: {where}: {e}") from None
            if seg["size"] != [h, w]:
                raise EvaluationError(f"{source}: {where}: RLE size {seg['size']} differs from the image size "
                                      f"[{h}, {w}]")
            rle_list.append(seg)
            rle_sizes.append((h, w))
            rle_where.append(where)
        elif need_mask:
            raise EvaluationError(f"{source}: {where}: missing 'segmentation' (an RLE mask)")
        bbox = r.get("bbox")
        if bbox is not None:
            if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(_is_number(v) for v in bbox)
                    and all(math.isfinite(float(v)) for v in bbox)):
                raise EvaluationError(f"{source}: {where}: bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}")
            bbox = [float(v) for v in bbox]
            if bbox[2] < 0 or bbox[3] < 0:
                raise EvaluationError(f"{source}: {where}: bbox has a negative width or height: {bbox}")
        elif need_bbox and seg is None:
            raise EvaluationError(f"{source}: {where}: missing 'bbox' (and no mask to derive it from)")
        rec = dict(r)
        rec.update(image_id=int(iid), category_id=int(cid), score=score, segmentation=seg, bbox=bbox, index=i)
        out[int(iid)].append(rec)
    if check_rle and rle_list:
        check_rles(rle_list, rle_sizes, where=rle_where, source=source)
    if negative:
        log.warning("%s: %d record(s) with a negative score, ranked as given (as pycocotools and chainercv do); "
                    "first: %s", source, len(negative), negative[0])
    if need_bbox:
        missing = [rec for recs in out.values() for rec in recs if rec["bbox"] is None]
        if missing:
            boxes = mask_utils.toBbox([rec["segmentation"] for rec in missing])
            for rec, b in zip(missing, boxes):
                rec["bbox"] = [float(v) for v in b]
    return InstancePredictions(by_image=dict(out), n_records=len(records), source=source)


def load_instance_predictions(path: Path, gt: CanonicalGT, **kwargs: Any) -> InstancePredictions:
    """Read and validate a COCO results JSON (see :func:`validate_instance_records`)."""
    path = Path(path)
    data = read_json(path, "predictions file")
    return validate_instance_records(data, gt, source=str(path), **kwargs)


def write_coco_results(path: Path, records: Iterable[dict], *, gt: CanonicalGT | None = None,
                       add_bbox: bool = True) -> int:
    """Write a COCO results JSON atomically (temp file + rename); returns the number of records.

    RLE ``counts`` are written as ``str``; when ``add_bbox`` and a record has a mask but no
    ``bbox``, the box is derived from the mask with ``pycocotools.mask.toBbox``. With ``gt``, the
    records are validated first (same checks as the evaluators apply).
    """
    path = Path(path)
    out = []
    for i, r in enumerate(records):
        rec = {k: v for k, v in r.items() if k != "index"}
        if rec.get("segmentation") is not None:
            try:
                rec["segmentation"] = normalize_rle(rec["segmentation"])
            except ValueError as e:
                raise EvaluationError(f"{path}: record {i}: {e}") from None
            if add_bbox and rec.get("bbox") is None:
                rec["bbox"] = [float(v) for v in mask_utils.toBbox(rec["segmentation"])]
        for key in ("image_id", "category_id"):
            if _is_int(rec.get(key)):
                rec[key] = int(rec[key])
        if _is_number(rec.get("score")):
            rec["score"] = float(rec["score"])
        out.append(rec)
    if gt is not None:
        validate_instance_records(out, gt, source=str(path), need_mask=False, need_score=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(out, f, allow_nan=False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return len(out)
