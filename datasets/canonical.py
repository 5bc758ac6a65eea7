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
from PIL import Image

from datasets.errors import DatasetError, safe_join
from datasets.imageio import read_index_png, read_panoptic_png
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
        """``instances.json`` (COCO instances dict)."""
        return _read_json(self.root / "instances.json")

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
        """The image as ``uint8 (H, W, 3)`` RGB."""
        info = self.image(image_id)
        with Image.open(info.path) as im:
            return np.asarray(im.convert("RGB"))

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
