"""Writers for a run's outputs in the formats of docs/formats.md ("Predictions").

A run directory holds ``val_instances.json`` (COCO results, RLE), ``val_panoptic.json`` +
``val_panoptic/`` (COCO panoptic), ``val_semantic/`` (index PNGs) and ``train_pseudo.json``
(train-split pseudo instances tagged with the point that produced them), ``val_detections.json`` /
``train_detections.json`` (box results, WSOD); the wsss stage writes
``train_semantic/`` (the semantic pseudo-maps the methods train from) and, in its cam / pam modes,
``train_peaks.json`` (CAM peaks as a points file with scores, docs/formats.md). Methods produce
arrays; these writers turn them into files, so every method writes the same formats.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from datasets.canonical import ImageInfo
from datasets.imageio import write_index_png, write_panoptic_png

INSTANCES = "val_instances.json"
PANOPTIC_JSON = "val_panoptic.json"
PANOPTIC_DIR = "val_panoptic"
SEMANTIC_DIR = "val_semantic"
TRAIN_SEMANTIC_DIR = "train_semantic"
TRAIN_PEAKS = "train_peaks.json"  # wsss cam / pam: CAM peaks of the train images (a points file + score)
PSEUDO = "train_pseudo.json"
DETECTIONS = "val_detections.json"  # boxes + scores (WSOD): COCO results without masks
TRAIN_DETECTIONS = "train_detections.json"  # the same on the training split (CorLoc's convention)
RUN_INFO = "run.json"


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """Compressed RLE of a binary (H, W) mask, with ``counts`` as str (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def instance_records(
    image_id: int,
    masks: Sequence[np.ndarray],
    category_ids: Sequence[int],
    scores: Sequence[float],
    *,
    point_annotation_ids: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """COCO result records (segmentation RLE, bbox, score) for the instances of one image."""
    records = []
    for i, (mask, cat, score) in enumerate(zip(masks, category_ids, scores, strict=True)):
        rle = encode_mask(mask)
        record = {
            "image_id": int(image_id),
            "category_id": int(cat),
            "segmentation": rle,
            "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "score": float(score),
        }
        if point_annotation_ids is not None:
            record["point_annotation_id"] = int(point_annotation_ids[i])
        records.append(record)
    return records


def detection_records(image_id: int, boxes: Sequence[Sequence[float]], category_ids: Sequence[int],
                      scores: Sequence[float]) -> list[dict[str, Any]]:
    """COCO box results ``{image_id, category_id, bbox: [x, y, w, h], score}`` of one image from boxes
    ``x0, y0, x1, y1`` (ends exclusive, pixels)."""
    return [{"image_id": int(image_id), "category_id": int(cat),
             "bbox": [float(x0), float(y0), float(x1) - float(x0), float(y1) - float(y0)], "score": float(score)}
            for (x0, y0, x1, y1), cat, score in zip(boxes, category_ids, scores, strict=True)]


def write_semantic_png(path: Path, semantic: np.ndarray) -> None:
    """8-bit single-channel semantic index PNG (255 = void)."""
    if semantic.min(initial=0) < 0 or semantic.max(initial=0) > 255:
        raise ValueError(f"{path}: semantic indices must be in 0..255")
    write_index_png(path, semantic)


class PanopticWriter:
    """Accumulates panoptic segments per image; PNGs are written at once, the JSON by :meth:`annotations`."""

    def __init__(self, png_dir: Path) -> None:
        self.png_dir = png_dir
        png_dir.mkdir(parents=True, exist_ok=True)
        self._annotations: list[dict[str, Any]] = []

    def add(self, image: ImageInfo, segments: Sequence[tuple[np.ndarray, int]]) -> None:
        """Add one image: ``segments`` are (mask, category_id) pairs; a later segment covers earlier ones."""
        ids = np.zeros((image.height, image.width), dtype=np.uint32)
        infos = []
        for seg_id, (mask, cat) in enumerate(segments, start=1):
            ids[mask] = seg_id
            area = int(mask.sum())
            if area == 0:
                continue
            rle = encode_mask(mask)
            infos.append({"id": seg_id, "category_id": int(cat), "area": area, "iscrowd": 0,
                          "bbox": [int(v) for v in mask_utils.toBbox(rle)]})
        # segments fully hidden by later ones must not stay in the JSON
        present = set(np.unique(ids).tolist())
        infos = [s for s in infos if s["id"] in present]
        for s in infos:
            s["area"] = int((ids == s["id"]).sum())
        name = f"{image.stem}.png"
        write_panoptic_png(self.png_dir / name, ids)
        self._annotations.append({"image_id": image.id, "file_name": name, "segments_info": infos})

    def annotations(self) -> list[dict[str, Any]]:
        return list(self._annotations)
