"""The canonical dataset form (docs/formats.md): records and writer re-exported, and the reader.

Every stage after ``prepare`` reads datasets only through :class:`CanonicalDataset`::

    ds = CanonicalDataset("data/canonical/synth-voc")
    val = ds.split("val")
    for image in val:                       # ImageInfo records, in file order
        sem = val.semantic(image.id)        # uint8 (H, W), 255 = void
        ids, segments = val.panoptic_map(image.id)
    gt = val.coco()                         # pycocotools COCO over instances.json
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from datasets.errors import DatasetError, safe_join
from datasets.imageio import check_image, read_index_png, read_panoptic_png, read_rgb
from datasets.records import (
    FORMAT_VERSION,
    VOID_LABEL,
    Category,
    ImageRecord,
    Instance,
    PanopticSegment,
    StuffSegment,
    semantic_classes,
)
from datasets.writer import CanonicalWriter, SplitSummary

__all__ = [
    "CanonicalDataset", "CanonicalSplit", "ImageInfo", "CanonicalWriter", "SplitSummary",
    "Category", "Instance", "StuffSegment", "PanopticSegment", "ImageRecord", "semantic_classes",
    "FORMAT_VERSION", "VOID_LABEL",
]


def validate_instances(instances: dict, path: Path, categories: dict[int, Category] | None = None) -> None:
    """The one validation of a canonical ``instances.json``, shared by every reader (points, reference, method
    stages, evaluate): the structure checks of the evaluation's ground-truth reader
    (:func:`bench.evaluation.gt.validate_instances_gt`: unique image / category / annotation ids, annotations
    on known images and categories, RLE sizes), RLE strings that decode to exactly ``h·w`` pixels
    (:func:`bench.evaluation.rle.check_rles`), and for every annotation a non-empty mask whose ``area`` is its
    pixel count; with ``categories`` (meta.json), every annotation's category must be a thing category there.
    Raises :class:`DatasetError` naming the file and the annotation."""
    from bench.evaluation.base import EvaluationError
    from bench.evaluation.gt import validate_instances_gt
    from bench.evaluation.rle import check_rles, rle_totals

    def error(exc: EvaluationError) -> DatasetError:
        message = str(exc)
        prefix = f"{path}: "
        return DatasetError(message[len(prefix):] if message.startswith(prefix) else message, path=path)

    try:
        validate_instances_gt(instances, path)
    except EvaluationError as exc:
        raise error(exc) from None
    sizes = {im["id"]: (int(im["height"]), int(im["width"])) for im in instances["images"]}
    rles, shapes, where, anns = [], [], [], []
    for a in instances["annotations"]:
        record = f"annotation {a['id']} (image {a['image_id']})"
        if categories is not None:
            cat = categories.get(a["category_id"])
            if cat is None or not cat.isthing:
                raise DatasetError(f"category_id {a['category_id']} is not a thing category of meta.json",
                                   path=path, record=record)
        seg = a.get("segmentation")
        if not (isinstance(seg, dict) and isinstance(seg.get("counts"), str)):
            raise DatasetError("segmentation must be a compressed RLE {size, counts: str}", path=path, record=record)
        rles.append(seg)
        shapes.append(sizes[a["image_id"]])
        where.append(record)
        anns.append(a)
    try:
        check_rles(rles, shapes, where=where, source=str(path))
    except EvaluationError as exc:
        raise error(exc) from None
    if not rles:
        return
    _, areas, _ = rle_totals([seg["counts"].encode("ascii") for seg in rles])
    for a, area, record in zip(anns, areas, where):
        if area == 0:
            raise DatasetError("the mask is empty (no pixel): an instance without pixels cannot be matched or "
                               "sampled", path=path, record=record)
        given = a.get("area")
        if given is not None and (isinstance(given, bool) or not isinstance(given, (int, float))
                                  or round(given) != int(area)):
            raise DatasetError(f"area {given!r} but the mask has {int(area)} pixels", path=path, record=record)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise DatasetError("file is missing", path=path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read JSON: {e}", path=path) from e


@dataclass(frozen=True)
class ImageInfo:
    """One image of a split: its id, file name (relative to ``<split>/images``) and size."""

    id: int
    file_name: str
    height: int
    width: int
    path: Path

    @property
    def stem(self) -> str:
        """The name of its panoptic and semantic PNGs without ``.png`` (folders kept)."""
        return str(Path(self.file_name).with_suffix(""))


class CanonicalSplit:
    """One split of a canonical dataset (``<root>/<split>/``)."""

    def __init__(self, dataset: "CanonicalDataset", name: str) -> None:
        self.dataset, self.name = dataset, name
        self.root = dataset.root / name
        if not self.root.is_dir():
            raise DatasetError(f"split {name!r} is missing (splits: {', '.join(dataset.split_names)})", path=self.root)

    # --- JSON files -------------------------------------------------------------------------
    @cached_property
    def instances(self) -> dict:
        """``instances.json`` (COCO instances dict), validated (:func:`validate_instances`)."""
        path = self.root / "instances.json"
        data = _read_json(path)
        validate_instances(data, path, self.dataset.category_by_id)
        return data

    @cached_property
    def panoptic(self) -> dict:
        """``panoptic.json`` (COCO panoptic dict)."""
        return _read_json(self.root / "panoptic.json")

    @cached_property
    def image_labels(self) -> dict[int, list[int]]:
        """Image id → category ids present (``image_labels.json``, one record for every image of the
        split: a missing one is an error naming the file)."""
        path = self.root / "image_labels.json"
        labels = {int(r["image_id"]): [int(c) for c in r["category_ids"]] for r in _read_json(path)["images"]}
        missing = [im.id for im in self.images if im.id not in labels]
        if missing:
            raise DatasetError(f"no record for {len(missing)} image(s) of the split (first: image_id {missing[0]}); "
                               f"re-run `bench data prepare --dataset <slot>`", path=path)
        return labels

    def coco(self):
        """A pycocotools ``COCO`` over ``instances.json`` (built once, without its console output)."""
        if not hasattr(self, "_coco"):
            from pycocotools.coco import COCO

            coco = COCO()
            coco.dataset = self.instances
            with contextlib.redirect_stdout(io.StringIO()):
                coco.createIndex()
            self._coco = coco
        return self._coco

    # --- images -----------------------------------------------------------------------------
    @cached_property
    def images(self) -> list[ImageInfo]:
        """Image records in file order; every file name is checked not to leave the split folder."""
        src = self.root / "instances.json"
        out = []
        for im in self.instances["images"]:
            path = safe_join(self.root / "images", im["file_name"], path=src, record=f"image {im['id']}")
            out.append(ImageInfo(int(im["id"]), im["file_name"], int(im["height"]), int(im["width"]), path))
        return out

    @cached_property
    def _by_id(self) -> dict[int, ImageInfo]:
        return {im.id: im for im in self.images}

    @cached_property
    def _anns_by_image(self) -> dict[int, list[dict]]:
        out: dict[int, list[dict]] = {im.id: [] for im in self.images}
        for a in self.instances["annotations"]:
            out[a["image_id"]].append(a)
        return out

    @cached_property
    def _panoptic_by_image(self) -> dict[int, dict]:
        return {a["image_id"]: a for a in self.panoptic["annotations"]}

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[ImageInfo]:
        return iter(self.images)

    def image(self, image_id: int) -> ImageInfo:
        try:
            return self._by_id[image_id]
        except KeyError:
            raise DatasetError(f"no image with id {image_id}", path=self.root / "instances.json") from None

    def load_image(self, image_id: int) -> np.ndarray:
        """The image as ``uint8 (H, W, 3)`` RGB; a missing or corrupt file is an error naming it."""
        info = self.image(image_id)
        return read_rgb(info.path, record=f"image {image_id}")

    def check_images(self, workers: int = 4) -> None:
        """Decode every image of the split completely and check its size (:func:`datasets.imageio.check_image`):
        a corrupt or truncated file stops a stage before it trains, naming the file."""
        from concurrent.futures import ThreadPoolExecutor

        def check(info: ImageInfo) -> None:
            check_image(info.path, height=info.height, width=info.width, record=f"image {info.id}")

        with ThreadPoolExecutor(max(1, workers)) as pool:
            list(pool.map(check, self.images))

    def annotations(self, image_id: int) -> list[dict]:
        """The ``instances.json`` annotations of one image (RLE masks)."""
        self.image(image_id)
        return self._anns_by_image[image_id]

    def instance_masks(self, image_id: int) -> list[tuple[dict, np.ndarray]]:
        """``(annotation, bool mask (H, W))`` for each instance of one image."""
        from pycocotools import mask as mask_utils

        return [(a, mask_utils.decode(a["segmentation"]).astype(bool)) for a in self.annotations(image_id)]

    def semantic(self, image_id: int) -> np.ndarray:
        """Semantic index map ``uint8 (H, W)``; index ``i`` is category ``semantic_classes[i]``, 255 void."""
        info = self.image(image_id)
        return read_index_png(safe_join(self.root / "semantic", info.stem + ".png"), record=f"image {image_id}")

    def panoptic_map(self, image_id: int) -> tuple[np.ndarray, list[dict]]:
        """Segment ids ``int32 (H, W)`` (0 = void) and the image's ``segments_info``."""
        self.image(image_id)
        ann = self._panoptic_by_image[image_id]
        png = safe_join(self.root / "panoptic", ann["file_name"], path=self.root / "panoptic.json",
                        record=f"image {image_id}")
        return read_panoptic_png(png, record=f"image {image_id}"), ann["segments_info"]


class CanonicalDataset:
    """A canonical dataset folder (``meta.json`` + one folder per split)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.meta = _read_json(self.root / "meta.json")
        version = self.meta.get("format_version")
        if version != FORMAT_VERSION:
            raise DatasetError(f"format_version {version!r}, this code reads {FORMAT_VERSION}; re-run prepare",
                               path=self.root / "meta.json")
        self.categories = [Category.from_json(c) for c in self.meta["categories"]]
        self.category_by_id = {c.id: c for c in self.categories}
        self.semantic_classes: list[int] = [int(i) for i in self.meta["semantic_classes"]]
        self.void_label = int(self.meta.get("void_label", VOID_LABEL))
        self._splits: dict[str, CanonicalSplit] = {}

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def split_names(self) -> list[str]:
        return list(self.meta["splits"])

    @property
    def thing_ids(self) -> list[int]:
        return [c.id for c in self.categories if c.isthing]

    @property
    def stuff_ids(self) -> list[int]:
        return [c.id for c in self.categories if not c.isthing]

    def semantic_index(self, category_id: int) -> int:
        """Semantic index of a category id."""
        return self.semantic_classes.index(category_id)

    def split(self, name: str) -> CanonicalSplit:
        if name not in self.meta["splits"]:
            raise DatasetError(f"no split {name!r} (splits: {', '.join(self.split_names)})",
                               path=self.root / "meta.json")
        if name not in self._splits:
            self._splits[name] = CanonicalSplit(self, name)
        return self._splits[name]

    def instances(self, split: str) -> dict:
        return self.split(split).instances

    def coco(self, split: str):
        return self.split(split).coco()
