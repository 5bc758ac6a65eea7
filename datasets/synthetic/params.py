"""Parameters of the synthetic presets (frozen, keyword-only dataclasses, validated on creation)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .appearance import STUFF_TABLE

__all__ = ["SynthCOCOParams", "SynthVOCParams", "params_from_mapping"]

MAX_THING_CLASSES = 36
P = TypeVar("P")


def _err(cls: type, key: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{cls.__name__}.{key} = {value!r}: allowed {allowed}")


def _int(obj: Any, key: str, lo: int, hi: int | None = None) -> None:
    v = getattr(obj, key)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        raise _err(type(obj), key, v, f"an integer in [{lo}, {hi if hi is not None else 'inf'}]")


def _opt_int(obj: Any, key: str, lo: int, hi: int | None = None) -> None:
    if getattr(obj, key) is not None:
        _int(obj, key, lo, hi)


def _float(obj: Any, key: str, lo: float, hi: float) -> None:
    v = getattr(obj, key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (lo <= float(v) <= hi):
        raise _err(type(obj), key, v, f"a number in [{lo}, {hi}]")
    object.__setattr__(obj, key, float(v))


def _pair(obj: Any, key: str, lo: int, hi: int, *, ordered: bool) -> None:
    v = getattr(obj, key)
    if isinstance(v, list):
        v = tuple(v)
    ok = (isinstance(v, tuple) and len(v) == 2
          and all(isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi for x in v)
          and (not ordered or v[0] <= v[1]))
    if not ok:
        what = "a pair (min, max) of integers" if ordered else "a pair (height, width) of integers"
        raise _err(type(obj), key, getattr(obj, key), f"{what} in [{lo}, {hi}]")
    object.__setattr__(obj, key, v)


@dataclass(frozen=True, kw_only=True)
class _CommonParams:
    image_size: tuple[int, int] = (128, 128)
    """(height, width) of every image in pixels."""
    num_train: int = 400
    num_val: int = 100
    num_thing_classes: int = 6
    instances: tuple[int, int] = (1, 8)
    """Inclusive range of the number of thing instances drawn per image (before dropping)."""
    touching_fraction: float = 0.55
    """Target fraction of thing instances that touch or overlap an instance of their own class
    (same-class groups are planned for it; the realised fraction lands within a few points)."""
    min_area: int | None = None
    """Minimum visible area (px) of an annotated instance; None = max(8, 0.0015·h·w)."""
    large_image_prob: float = 0.3
    """Probability that an image holds one large object at the back (COCO 'large' sizes)."""
    blur_prob: float = 0.15
    """Probability of a Gaussian blur of the whole image."""
    seed: int = 0

    def __post_init__(self) -> None:
        _pair(self, "image_size", 32, 4096, ordered=False)
        _int(self, "num_train", 0)
        _int(self, "num_val", 0)
        _int(self, "num_thing_classes", 1, MAX_THING_CLASSES)
        _pair(self, "instances", 0, 60, ordered=True)
        _float(self, "touching_fraction", 0.0, 0.9)
        _opt_int(self, "min_area", 1)
        _float(self, "large_image_prob", 0.0, 1.0)
        _float(self, "blur_prob", 0.0, 1.0)
        _int(self, "seed", 0, 2**63 - 1)

    @property
    def effective_min_area(self) -> int:
        """The minimum visible instance area in pixels (resolved default)."""
        if self.min_area is not None:
            return self.min_area
        h, w = self.image_size
        return max(8, int(round(0.0015 * h * w)))

    @property
    def scale(self) -> float:
        """Linear image scale relative to 128×128 (texture periods scale with it)."""
        h, w = self.image_size
        return math.sqrt(h * w) / 128.0

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view of the parameters (tuples as lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True, kw_only=True)
class SynthVOCParams(_CommonParams):
    """Parameters of ``synth-voc`` (VOC 2012 + SBD layout, one stuff class ``background``)."""

    num_train: int = 200
    num_val: int = 100
    num_sbd_only: int = 300
    """Images annotated only in SBD (not in VOC seg train/val): they enlarge ``train_aug``."""
    sbd_train_overlap: float = 0.5
    """Fraction of VOC seg train images that SBD also annotates."""
    sbd_val_overlap: float = 0.3
    """Fraction of VOC seg val images that SBD also annotates (``train_aug`` must drop them)."""
    sbd_val_fraction: float = 0.25
    """Fraction of the SBD images listed in SBD ``val.txt`` (the rest in ``train.txt``)."""
    num_thing_classes: int = 6
    instances: tuple[int, int] = (1, 8)
    void_width: int | None = None
    """Width (px) of the void band (255) along object boundaries; None = round(2·min(h,w)/128), ≥1."""
    large_image_prob: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        _int(self, "num_sbd_only", 0)
        _float(self, "sbd_train_overlap", 0.0, 1.0)
        _float(self, "sbd_val_overlap", 0.0, 1.0)
        _float(self, "sbd_val_fraction", 0.0, 1.0)
        _opt_int(self, "void_width", 0, 64)
        if self.instances[0] < 1:
            raise _err(type(self), "instances", self.instances,
                       "min ≥ 1 (VOC segmentation images always hold an object)")
        total = self.num_train + self.num_val + self.num_sbd_only
        if total > 999_999:
            raise _err(type(self), "num_train + num_val + num_sbd_only", total, "at most 999999 images")
        if self.num_train + self.num_val == 0:
            raise _err(type(self), "num_train + num_val", 0, "at least one image")

    @property
    def effective_void_width(self) -> int:
        """Void band width in pixels (resolved default)."""
        if self.void_width is not None:
            return self.void_width
        h, w = self.image_size
        return max(1, int(round(2 * min(h, w) / 128)))


@dataclass(frozen=True, kw_only=True)
class SynthCOCOParams(_CommonParams):
    """Parameters of ``synth-coco`` (COCO 2017 instances + panoptic layout)."""

    num_thing_classes: int = 10
    num_stuff_classes: int = 4
    instances: tuple[int, int] = (3, 15)
    crowd_prob: float = 0.1
    """Probability that an image holds one crowd region (dense same-class group, iscrowd=1)."""
    empty_fraction: float = 0.02
    """Fraction of images without things: image ``i`` of a split is empty iff
    ``i % round(1/empty_fraction) == round(1/empty_fraction) - 1``."""
    large_image_prob: float = 0.25
    blur_prob: float = 0.2
    void_sliver_prob: float = 0.3
    """Probability that the 1-px boundary between two stuff regions is left unlabelled."""
    rle_fraction: float = 0.03
    """Fraction of iscrowd=0 instances written as compressed RLE instead of polygons."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _int(self, "num_stuff_classes", 1, len(STUFF_TABLE))
        _float(self, "crowd_prob", 0.0, 1.0)
        _float(self, "empty_fraction", 0.0, 1.0)
        _float(self, "void_sliver_prob", 0.0, 1.0)
        _float(self, "rle_fraction", 0.0, 1.0)
        total = self.num_train + self.num_val
        if total > 50_000:
            raise _err(type(self), "num_train + num_val", total,
                       "at most 50000 images (segment ids = image_id·100 + k must fit 24 bits)")
        if total == 0:
            raise _err(type(self), "num_train + num_val", 0, "at least one image")

    @property
    def empty_period(self) -> int:
        """Every ``empty_period``-th image of a split has no things (0 = none)."""
        if self.empty_fraction <= 0:
            return 0
        return max(1, int(round(1.0 / self.empty_fraction)))


def params_from_mapping(cls: type[P], values: Mapping[str, Any]) -> P:
    """Build ``cls`` from a mapping; an unknown key raises ValueError naming the allowed keys."""
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown parameter(s) {unknown}; allowed: {sorted(names)}")
    return cls(**values)
