"""Typed records a loader hands to the canonical writer: categories and one record per image."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "Category", "Instance", "StuffSegment", "PanopticSegment", "ImageRecord",
    "semantic_classes", "check_categories", "VOID_LABEL", "FORMAT_VERSION",
]

FORMAT_VERSION = 1
VOID_LABEL = 255


@dataclass(frozen=True)
class Category:
    """A thing or stuff category (COCO panoptic fields)."""

    id: int
    name: str
    isthing: bool
    color: tuple[int, int, int] = (0, 0, 0)
    supercategory: str = ""

    def to_json(self) -> dict:
        return {"id": self.id, "name": self.name, "isthing": int(self.isthing), "color": list(self.color),
                "supercategory": self.supercategory or ("thing" if self.isthing else "stuff")}

    @classmethod
    def from_json(cls, d: dict) -> "Category":
        return cls(id=int(d["id"]), name=str(d["name"]), isthing=bool(d.get("isthing", 1)),
                   color=tuple(int(c) for c in d.get("color", (0, 0, 0))),
                   supercategory=str(d.get("supercategory", "")))


def semantic_classes(categories: Sequence[Category]) -> list[int]:
    """Category id of each semantic index: stuff first, then things, each in category-id order."""
    stuff = sorted(c.id for c in categories if not c.isthing)
    things = sorted(c.id for c in categories if c.isthing)
    return stuff + things


def check_categories(categories: Sequence[Category]) -> None:
    """Unique positive ids and names; at most 255 classes (index 255 is void in semantic PNGs)."""
    ids = [c.id for c in categories]
    if len(set(ids)) != len(ids) or any(i <= 0 for i in ids):
        raise ValueError(f"category ids must be unique positive integers, got {ids}")
    names = [c.name for c in categories]
    if len(set(names)) != len(names):
        raise ValueError(f"category names must be unique, got {names}")
    if len(categories) > VOID_LABEL:
        raise ValueError(f"{len(categories)} categories do not fit an 8-bit semantic map (255 = void)")


@dataclass
class Instance:
    """A thing instance for ``instances.json``: a boolean mask or a COCO RLE (``counts`` bytes or str).

    ``id`` keeps a given annotation id (COCO); ``None`` lets the writer number it.
    ``record`` names the instance in error messages (``"object 3"``, ``"annotation 1234"``).
    """

    category_id: int
    mask: np.ndarray | None = None
    rle: dict | None = None
    iscrowd: int = 0
    difficult: int = 0
    id: int | None = None
    record: str = ""


@dataclass
class StuffSegment:
    """An explicit stuff segment (boolean mask) for a derived panoptic map."""

    category_id: int
    mask: np.ndarray
    id: int | None = None


@dataclass(frozen=True)
class PanopticSegment:
    """One entry of an explicit panoptic map's ``segments_info``."""

    id: int
    category_id: int
    iscrowd: int = 0


@dataclass
class ImageRecord:
    """Everything the canonical writer needs about one image.

    The panoptic map is either explicit (``panoptic`` ids ``(H, W)`` + ``panoptic_segments``;
    COCO panoptic) or derived by painting, in this order: ``fill_stuff`` (every pixel) →
    ``stuff`` segments → crowd instances → non-crowd instances by decreasing area (smaller ones
    on top) → ``void`` (id 0). A derived thing segment takes its instance's annotation id when
    ``link_things`` (non-overlapping datasets: VOC, synthetic), else a fresh id.
    ``counts`` are loader counters summed into the split summary (e.g. ``skipped_zero_area``).
    """

    image_id: int
    file_name: str
    source: Path
    height: int
    width: int
    instances: list[Instance] = field(default_factory=list)
    stuff: list[StuffSegment] = field(default_factory=list)
    fill_stuff: int | None = None
    void: np.ndarray | None = None
    panoptic: np.ndarray | None = None
    panoptic_segments: list[PanopticSegment] | None = None
    panoptic_source: str = ""
    link_things: bool = True
    counts: dict[str, int] = field(default_factory=dict)
