"""Training instances for a segmentor: pseudo-label files or ground truth → per-image targets.

Two inputs are accepted (docs/segmentor.md):

- a COCO **results** list — what every method of the harness writes as ``train_pseudo.json``
  (``image_id``, ``category_id``, ``segmentation``, optional ``score`` / ``weight`` /
  ``point_annotation_id``);
- a COCO **instances** dict (``images`` / ``annotations`` / ``categories``) — user-supplied pseudo
  labels, or the canonical ``instances.json`` for the fully supervised upper bound.

Segmentations may be compressed RLE (``counts`` a string), uncompressed RLE (``counts`` a list) or
polygons. Every record is checked against the split's images and the dataset's thing categories;
a bad record stops with a :class:`~datasets.errors.DatasetError` naming the file and the record.
Crowd annotations and masks with fewer than ``min_area`` pixels are dropped and counted.

:class:`CategoryMap` maps dataset category ids to the contiguous labels ``1..K`` of torchvision-style
models (0 = background); :func:`make_target` builds one image's target dict
(``boxes`` xyxy, ``labels``, ``masks`` uint8, ``weights``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils

from datasets.errors import DatasetError

__all__ = ["CategoryMap", "InstanceLabel", "TrainingLabels", "parse_training_labels", "make_target",
           "DetectionDataset"]


class CategoryMap:
    """Dataset category ids (thing classes) ↔ contiguous model labels ``1..K`` (sorted by id)."""

    def __init__(self, category_ids: Sequence[int]) -> None:
        ids = sorted({int(c) for c in category_ids})
        if not ids:
            raise ValueError("a segmentor needs at least one thing category")
        self.category_ids: list[int] = ids
        self._label = {cat: k + 1 for k, cat in enumerate(ids)}

    @property
    def num_classes(self) -> int:
        """K + 1: the things plus background, as torchvision counts them."""
        return len(self.category_ids) + 1

    def __contains__(self, category_id: object) -> bool:
        return category_id in self._label

    def label(self, category_id: int) -> int:
        return self._label[int(category_id)]

    def category(self, label: int) -> int:
        if not 1 <= int(label) <= len(self.category_ids):
            raise ValueError(f"model label {label} outside 1..{len(self.category_ids)}")
        return self.category_ids[int(label) - 1]


@dataclass(frozen=True)
class InstanceLabel:
    """One training instance: its dataset category, its mask as compressed RLE, its loss weight."""

    category_id: int
    rle: dict[str, Any]
    weight: float = 1.0


@dataclass
class TrainingLabels:
    """The training instances of a split, per image id, and what was dropped on the way.

    ``dropped`` counts ``crowd`` (iscrowd annotations), ``empty`` (no pixel) and ``small``
    (fewer than ``min_area`` pixels) instances.
    """

    source: str
    by_image: dict[int, list[InstanceLabel]]
    dropped: dict[str, int] = field(default_factory=lambda: {"crowd": 0, "empty": 0, "small": 0})

    @property
    def num_instances(self) -> int:
        return sum(len(v) for v in self.by_image.values())

    def counts(self) -> dict[str, int]:
        """Summary for logs and run.json."""
        return {"instances": self.num_instances,
                "images_with_instances": sum(1 for v in self.by_image.values() if v),
                **{f"dropped_{k}": v for k, v in self.dropped.items()}}


def _record_name(record: Mapping[str, Any], index: int) -> str:
    rid = record.get("id") if isinstance(record, Mapping) else None
    return f"record {index}" + (f" (id {rid})" if rid is not None else "")


def _to_rle(segmentation: Any, height: int, width: int, *, path: str, record: str) -> dict[str, Any]:
    """Compressed RLE of a COCO segmentation (RLE or polygons) whose size must be ``(height, width)``."""
    if isinstance(segmentation, Mapping):
        size = segmentation.get("size")
        counts = segmentation.get("counts")
        if not (isinstance(size, Sequence) and len(size) == 2) or counts is None:
            raise DatasetError("segmentation RLE needs 'size' [h, w] and 'counts'", path=path, record=record)
        if [int(size[0]), int(size[1])] != [height, width]:
            raise DatasetError(f"mask size {int(size[1])}x{int(size[0])} (WxH) differs from the image "
                               f"{width}x{height}", path=path, record=record)
        if isinstance(counts, list):  # uncompressed RLE
            return mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
        if isinstance(counts, str):
            return {"size": [height, width], "counts": counts.encode("ascii")}
        if isinstance(counts, bytes):
            return {"size": [height, width], "counts": counts}
        raise DatasetError(f"RLE counts must be a string or a list, got {type(counts).__name__}",
                           path=path, record=record)
    if isinstance(segmentation, list) and segmentation and all(isinstance(p, list) for p in segmentation):
        polygons = [p for p in segmentation if len(p) >= 6]
        if not polygons:
            return mask_utils.encode(np.zeros((height, width), np.uint8, order="F"))
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    raise DatasetError("segmentation must be an RLE dict or a list of polygons", path=path, record=record)


def _weight(record: Mapping[str, Any], soft_weights: bool, *, path: str, name: str) -> float:
    """``weight`` when given, else ``score`` when ``soft_weights``, else 1; finite and >= 0."""
    if "weight" in record:
        value = record["weight"]
    elif soft_weights and "score" in record:
        value = record["score"]
    else:
        return 1.0
    try:
        w = float(value)
    except (TypeError, ValueError):
        raise DatasetError(f"weight/score {value!r} is not a number", path=path, record=name) from None
    if not math.isfinite(w) or w < 0:
        raise DatasetError(f"weight/score {w} must be finite and >= 0", path=path, record=name)
    return w


def parse_training_labels(
    data: Any,
    *,
    source: str,
    image_sizes: Mapping[int, tuple[int, int]],
    categories: CategoryMap,
    min_area: int = 1,
    soft_weights: bool = False,
) -> TrainingLabels:
    """Validate a results list or an instances dict against the split; keep the usable instances.

    Args:
        data: the parsed JSON (a list of COCO results, or a COCO instances dict).
        source: the file it came from (named in every error).
        image_sizes: ``{image_id: (height, width)}`` of the training split.
        categories: the dataset's thing categories.
        min_area: masks with fewer pixels are dropped (counted as ``empty`` when 0, else ``small``).
        soft_weights: use a record's ``score`` as its loss weight when it has no ``weight``.

    Returns:
        :class:`TrainingLabels` with an entry (possibly empty) for every image of ``image_sizes``.

    Raises:
        DatasetError: not a list / instances dict, an unknown image id or category id, a mask whose
            size differs from its image, a malformed segmentation or weight — naming file and record.
    """
    if isinstance(data, Mapping) and "annotations" in data:
        records = data["annotations"]
        if "images" in data:
            for k, im in enumerate(data["images"]):
                iid = int(im["id"])
                if iid in image_sizes and (int(im["height"]), int(im["width"])) != tuple(image_sizes[iid]):
                    raise DatasetError(f"image {iid} is {im['width']}x{im['height']} (WxH) here, "
                                       f"{image_sizes[iid][1]}x{image_sizes[iid][0]} in the dataset",
                                       path=source, record=f"images[{k}]")
    elif isinstance(data, list):
        records = data
    else:
        raise DatasetError("expected a COCO results list or a COCO instances dict with 'annotations'",
                           path=source)
    labels = TrainingLabels(source, {int(i): [] for i in image_sizes})
    for index, record in enumerate(records):
        name = _record_name(record, index)
        if not isinstance(record, Mapping):
            raise DatasetError(f"expected an object, got {type(record).__name__}", path=source, record=name)
        missing = [k for k in ("image_id", "category_id", "segmentation") if k not in record]
        if missing:
            raise DatasetError(f"missing {', '.join(missing)}", path=source, record=name)
        image_id, category_id = int(record["image_id"]), int(record["category_id"])
        if image_id not in image_sizes:
            raise DatasetError(f"image id {image_id} is not an image of the training split", path=source, record=name)
        if category_id not in categories:
            raise DatasetError(f"category id {category_id} is not a thing category of the dataset "
                               f"({categories.category_ids})", path=source, record=name)
        if record.get("iscrowd", 0):
            labels.dropped["crowd"] += 1
            continue
        height, width = image_sizes[image_id]
        rle = _to_rle(record["segmentation"], height, width, path=source, record=name)
        weight = _weight(record, soft_weights, path=source, name=name)
        area = int(mask_utils.area(rle))
        if area == 0:
            labels.dropped["empty"] += 1
            continue
        if area < min_area:
            labels.dropped["small"] += 1
            continue
        labels.by_image[image_id].append(InstanceLabel(category_id, rle, weight))
    return labels


def make_target(instances: Sequence[InstanceLabel], height: int, width: int,
                categories: CategoryMap) -> dict[str, torch.Tensor]:
    """torchvision detection target of one image: ``boxes`` float (N, 4) xyxy (tight box of the mask,
    ``x2 = last column + 1``), ``labels`` int64 (N,) in 1..K, ``masks`` uint8 (N, H, W), ``weights`` (N,)."""
    n = len(instances)
    masks = np.zeros((n, height, width), np.uint8)
    boxes = np.zeros((n, 4), np.float32)
    for k, inst in enumerate(instances):
        m = mask_utils.decode(inst.rle)
        masks[k] = m
        ys, xs = np.nonzero(m)
        boxes[k] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return {
        "boxes": torch.from_numpy(boxes),
        "labels": torch.tensor([categories.label(i.category_id) for i in instances], dtype=torch.int64),
        "masks": torch.from_numpy(masks),
        "weights": torch.tensor([i.weight for i in instances], dtype=torch.float32),
    }


class DetectionDataset:
    """The training set the engine iterates: images with at least one instance (as detectron2's
    ``FILTER_EMPTY_ANNOTATIONS`` and mmdetection's ``filter_empty_gt``), in image-id order.

    ``load_image(image_id)`` returns uint8 (H, W, 3) RGB; items are ``(float (3, H, W) in [0, 1], target)``.
    """

    def __init__(self, labels: TrainingLabels, image_sizes: Mapping[int, tuple[int, int]],
                 load_image: Callable[[int], np.ndarray], categories: CategoryMap) -> None:
        self.image_ids = sorted(i for i, v in labels.by_image.items() if v)
        self.labels, self.image_sizes, self.load_image, self.categories = labels, image_sizes, load_image, categories
        self.skipped_images = len(labels.by_image) - len(self.image_ids)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image_id = self.image_ids[index]
        image = self.load_image(image_id)
        height, width = self.image_sizes[image_id]
        if image.shape[:2] != (height, width):
            raise DatasetError(f"image is {image.shape[1]}x{image.shape[0]}, expected {width}x{height}",
                               record=f"image {image_id}")
        x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)
        return x, make_target(self.labels.by_image[image_id], height, width, self.categories)
