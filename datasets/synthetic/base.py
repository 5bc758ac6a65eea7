"""Building blocks shared by the synthetic preset writers: work items, per-image outputs,
summaries, deterministic seeding and byte-exact encoders (JPEG, palette PNG, RGB PNG, MAT v5)."""

from __future__ import annotations

import io
import zlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import cv2
import numpy as np
import scipy.io
from PIL import Image

__all__ = [
    "GenerationSummary",
    "ImageOutput",
    "PresetWriter",
    "SplitStats",
    "WorkItem",
    "encode_jpeg",
    "encode_mat",
    "encode_palette_png",
    "encode_rgb_png",
    "image_rng",
    "size_class",
]

SMALL_MAX = 32 ** 2
"""COCO area thresholds: small < 32², medium < 96², large ≥ 96² (pixels)."""
MEDIUM_MAX = 96 ** 2


def size_class(area: int) -> str:
    """COCO size class of a mask area: ``small`` / ``medium`` / ``large``."""
    if area < SMALL_MAX:
        return "small"
    return "medium" if area < MEDIUM_MAX else "large"


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one image: seeded from (seed, split, index) only, so images are
    independent of each other (and of the number of images) and can be drawn in parallel."""
    return np.random.default_rng([seed, zlib.crc32(split.encode("utf-8")), index])


@dataclass(frozen=True)
class WorkItem:
    """One image to generate: ``split`` and ``index`` seed it; ``image_id`` names it."""

    split: str
    index: int
    image_id: int | str
    extra: tuple[Any, ...] = ()


@dataclass
class ImageOutput:
    """What producing one image gives: files (path relative to the dataset root → bytes), a
    JSON-able record for the split-level files, and counts for the summary."""

    files: dict[str, bytes]
    record: dict[str, Any]
    stats: dict[str, int]


@dataclass
class SplitStats:
    """Counts of one split (thing instances only; crowd regions counted apart)."""

    images: int = 0
    instances: int = 0
    empty_images: int = 0
    crowd_regions: int = 0
    difficult: int = 0
    truncated: int = 0
    dropped_instances: int = 0
    """Instances drawn but not annotated (visible area below the minimum): their pixels are void."""
    touching_same_class: int = 0
    small: int = 0
    medium: int = 0
    large: int = 0
    polygon_masks: int = 0
    rle_masks: int = 0

    def add(self, stats: Mapping[str, int]) -> None:
        for k, v in stats.items():
            setattr(self, k, getattr(self, k) + int(v))

    @property
    def touching_fraction(self) -> float:
        return self.touching_same_class / self.instances if self.instances else 0.0


@dataclass(frozen=True)
class GenerationSummary:
    """Result of :func:`datasets.synthetic.generate`.

    ``splits`` maps a split name (``train``, ``val``; synth-voc also ``sbd_only``) to its counts;
    ``extra`` holds preset-specific facts (synth-voc: SBD membership and ``train_aug`` size) and
    ``extra["paths"]``: the dataset folders relative to ``root`` that the loaders take
    (synth-voc: ``voc`` = VOCdevkit/VOC2012, ``sbd_parent`` = SBD; synth-coco: ``coco``).
    """

    preset: str
    root: str
    params: dict[str, Any]
    splits: dict[str, SplitStats]
    categories: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)

    def _sum(self, key: str) -> int:
        return sum(getattr(s, key) for s in self.splits.values())

    @property
    def images(self) -> int:
        return self._sum("images")

    @property
    def instances(self) -> int:
        return self._sum("instances")

    @property
    def touching_fraction(self) -> float:
        """Fraction of annotated thing instances that touch (4-adjacent visible masks, before any
        void band) another annotated instance of their own class, over all splits."""
        n = self.instances
        return self._sum("touching_same_class") / n if n else 0.0

    @property
    def size_distribution(self) -> dict[str, int]:
        """COCO size classes of the annotated thing instances (annotated, non-void area)."""
        return {k: self._sum(k) for k in ("small", "medium", "large")}

    @property
    def difficult(self) -> int:
        return self._sum("difficult")

    @property
    def crowd_regions(self) -> int:
        return self._sum("crowd_regions")

    @property
    def empty_images(self) -> int:
        return self._sum("empty_images")

    @property
    def dropped_instances(self) -> int:
        return self._sum("dropped_instances")

    def to_dict(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "params": self.params,
            "splits": {k: asdict(v) for k, v in self.splits.items()},
            "totals": {
                "images": self.images,
                "instances": self.instances,
                "touching_fraction": round(self.touching_fraction, 4),
                "size_distribution": self.size_distribution,
                "difficult": self.difficult,
                "crowd_regions": self.crowd_regions,
                "empty_images": self.empty_images,
                "dropped_instances": self.dropped_instances,
            },
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, root: str, categories: list[dict[str, Any]]) -> GenerationSummary:
        names = {f.name for f in fields(SplitStats)}
        splits = {k: SplitStats(**{n: v for n, v in s.items() if n in names}) for k, s in data["splits"].items()}
        return cls(preset=data["preset"], root=root, params=dict(data["params"]), splits=splits,
                   categories=categories, extra=dict(data.get("extra", {})))


class PresetWriter(ABC):
    """A preset: plans the images, produces one image (pure function of params and item), and
    writes the split-level files (JSON, lists) from the per-image records."""

    name: ClassVar[str]
    params_cls: ClassVar[type]

    def __init__(self, params: Any) -> None:
        self.params = params

    @abstractmethod
    def categories(self) -> list[dict[str, Any]]:
        """All categories as COCO-panoptic dicts (id, name, supercategory, isthing, color)."""

    @abstractmethod
    def plan(self) -> list[WorkItem]:
        """Every image to produce, in output order."""

    @abstractmethod
    def produce(self, item: WorkItem) -> ImageOutput:
        """Render and encode one image (must depend only on ``self.params`` and ``item``)."""

    @abstractmethod
    def finalize(self, results: Sequence[tuple[WorkItem, dict[str, Any]]]) -> dict[str, bytes]:
        """Split-level files from the per-image records (in plan order)."""

    def extra_summary(self) -> dict[str, Any]:
        """Preset-specific facts for :attr:`GenerationSummary.extra`."""
        return {}


# --------------------------------------------------------------------------- encoders


def encode_jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    """Baseline JPEG (libjpeg via OpenCV) of an RGB uint8 image."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def encode_palette_png(index: np.ndarray, palette: np.ndarray) -> bytes:
    """An 8-bit palette ('P' mode) PNG of an index map with a (256, 3) palette."""
    img = Image.fromarray(np.ascontiguousarray(index, dtype=np.uint8))
    img.putpalette(palette.astype(np.uint8).ravel().tolist())
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def encode_rgb_png(rgb: np.ndarray) -> bytes:
    """A 24-bit RGB PNG."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


_MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: posix, Created by: WSIS-Bench synthetic generator"


def encode_mat(variables: dict[str, Any]) -> bytes:
    """MATLAB v5 MAT bytes via ``scipy.io.savemat`` (compressed), with a fixed header text
    (scipy writes the creation time there, which would break byte-identical output)."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, variables, do_compression=True, oned_as="column")
    data = buf.getvalue()
    return _MAT_HEADER.ljust(116, b" ") + data[116:]
