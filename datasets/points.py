"""Point labels sampled from the ground truth: one point per thing instance and per stuff segment.

Modes (docs/formats.md, "Weak labels: points"):

- ``uniform`` — one pixel drawn uniformly from the target's mask (Point2Mask's protocol);
- ``center``  — the mask pixel nearest the mask centroid (BESTIE / P2Seg centre points);
- ``p10``     — ``k`` pixels drawn uniformly without replacement (Point2Mask's P10 rows).

A point depends only on (seed, mode, image id, thing/stuff, annotation id): the random
stream of each target is seeded by exactly those numbers (thing and stuff ids are separate
id spaces in COCO panoptic), so adding or removing other images or
annotations never moves it. Crowd regions get no points.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

PointMode = Literal["uniform", "center", "p10"]
_MODE_STREAM = {"uniform": 0, "center": 1, "p10": 2}


@dataclass(frozen=True)
class Target:
    """A labelled region to put points in: a thing instance or a stuff segment of one image."""

    image_id: int
    annotation_id: int
    category_id: int
    isthing: bool
    mask: np.ndarray  # bool (H, W)


@dataclass(frozen=True)
class Point:
    image_id: int
    annotation_id: int
    point_index: int
    category_id: int
    isthing: bool
    x: int
    y: int


def sample_points(target: Target, *, mode: PointMode, seed: int, count: int = 10) -> list[tuple[int, int]]:
    """Pixel coordinates ``(x, y)`` inside ``target.mask`` for one target (see module doc for the modes)."""
    ys, xs = np.nonzero(target.mask)
    n = len(ys)
    if n == 0:
        raise ValueError(
            f"image {target.image_id} annotation {target.annotation_id}: empty mask, cannot place a point"
        )
    if mode == "center":
        cy, cx = ys.mean(), xs.mean()
        best = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))  # first pixel in row-major order on ties
        return [(int(xs[best]), int(ys[best]))]
    rng = np.random.default_rng([seed, _MODE_STREAM[mode], target.image_id, int(target.isthing), target.annotation_id])
    if mode == "uniform":
        picks = [int(rng.integers(n))]
    elif mode == "p10":
        picks = [int(i) for i in rng.choice(n, size=count, replace=n < count)]
    else:
        raise ValueError(f"unknown point mode {mode!r}; allowed: uniform, center, p10")
    return [(int(xs[i]), int(ys[i])) for i in picks]


def points_for_targets(
    targets: Iterable[Target], *, mode: PointMode, seed: int, count: int = 10
) -> Iterator[Point]:
    """Points for every target, in input order (``point_index`` numbers the points of one target)."""
    for target in targets:
        for index, (x, y) in enumerate(sample_points(target, mode=mode, seed=seed, count=count)):
            yield Point(target.image_id, target.annotation_id, index, target.category_id, target.isthing, x, y)
