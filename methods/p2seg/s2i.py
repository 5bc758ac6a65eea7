"""P2Seg S2I (Sec. 3.1): initial pseudo instances from a WSSS map and point labels, "points first".

Per class of the points: 8-connected components of ``semantic == class`` (BESTIE's
:func:`~methods.bestie.transfer.component_labels`); components smaller than ``min_area`` are
skipped (release: 50 px). Each accepted component is matched with the points of its class that
lie on it (paper l. 68):

- one point ("single"): the component is that point's instance;
- several points ("separated", the "distance separation strategy", Eq. 1): every pixel p of the
  component goes to its nearest point, k* = argmin_k ||e_k − p|| (Euclidean, (y, x) pixel
  coordinates; ties → the lowest point index, as the release's ``cdist``/``argmin``); each part
  is the instance of its point. This is what keeps touching same-class objects, which BESTIE's
  transfer ("semantic results first", Table 6) drops;
- no point: ignored (no instance guidance on its pixels).

Offsets (Eq. 2): O = ∪_k (e_k − m) for the pixels m of e_k's instance, i.e. every instance's
offsets point to its annotated point — :func:`~methods.bestie.transfer.offset_field` on the
instance map of :func:`s2i_targets`. The instance pixels are P_pseudo of the offset loss (Eq. 3).

Points without an instance (paper l. 82: "For points without clear instance predictions, a
default pseudo-box of size 16 × 16 is assigned"): a point that lies on no accepted component of
its class — its class is absent from the map, or the point is on another class / background /
ignore, or on a component under ``min_area`` — gets a ``default_box`` × ``default_box`` box
centred at it, clipped to the image, whose offsets point to the point. Box pixels are only those
no component instance owns (semantic + points evidence wins over a guessed box); where boxes
overlap, each free pixel goes to the nearest box point (Eq. 1 again, ties → lowest index).

Paper vs release, as parameters:

- ``single_point_target``: the offset target of a single-point component. Paper: the point
  (Eq. 2 makes every instance's offsets point to its annotation e_k) → ``"point"`` (default);
  release: BESTIE's int-truncated component centroid (``cv2`` centroid through ``int``) →
  ``"centroid-int"``; ``"centroid"`` = BESTIE paper's exact centroid.
- ``default_box``: paper 16 (in the S2I labels); the release builds no box in its training
  targets (only at export, 64 × 64, score 0.5) → ``None``.
- ``min_area``: release 50 px (paper silent).

numpy / scipy only; coordinates are (y, x) rows/columns; points may be fractional (matched to
components at their rounded pixel, distances and targets in their exact coordinates).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from methods.bestie.train import targets_from_instances
from methods.bestie.transfer import ImageTargets, OffsetTarget, component_labels, instance_center

__all__ = ["S2IInstance", "S2IStats", "Source", "box_slices", "default_boxes", "points_first_instances", "s2i_targets",
           "nearest_point"]

Source = Literal["single", "separated", "default-box"]


@dataclass(frozen=True)
class S2IInstance:
    """One S2I pseudo instance: (H, W) bool mask, semantic class, index of its point, offset
    target (y, x) and the rule that produced it."""

    mask: np.ndarray
    semantic_class: int
    point: int
    center: tuple[float, float]
    source: Source


@dataclass
class S2IStats:
    """Counts of :func:`points_first_instances` (summed over images by callers)."""

    single: int = 0  # components with exactly one point → one instance
    separated_components: int = 0  # components with several points → split by Eq. 1
    separated_points: int = 0  # instances produced by those splits
    empty_parts: int = 0  # points of a split component that got no pixel (duplicate coordinates)
    too_small: int = 0  # components under min_area (classes with points only)
    no_point: int = 0  # accepted-size components without a point: ignored
    unmatched_points: int = 0  # points on no accepted component of their class
    default_boxes: int = 0  # default-box instances produced (unmatched points, default_box set)
    empty_boxes: int = 0  # default boxes entirely owned by component instances: no instance
    points_outside_image: int = 0  # points off the image: no instance

    def add(self, other: "S2IStats") -> None:
        for k in vars(self):
            setattr(self, k, getattr(self, k) + getattr(other, k))

    def to_dict(self) -> dict[str, int]:
        return dict(vars(self))


def nearest_point(ys: np.ndarray, xs: np.ndarray, points_yx: np.ndarray) -> np.ndarray:
    """Eq. (1): for each pixel (ys[i], xs[i]) the index k* = argmin_k ||e_k − p|| into ``points_yx``;
    ties go to the lowest index (strict < while scanning the points in order). O(pixels × points)
    time, O(pixels) memory."""
    best = np.full(ys.shape, np.inf)
    out = np.zeros(ys.shape, dtype=np.int64)
    for k, (py, px) in enumerate(np.asarray(points_yx, dtype=np.float64).reshape(-1, 2)):
        d = (ys - py) ** 2 + (xs - px) ** 2
        closer = d < best
        best[closer] = d[closer]
        out[closer] = k
    return out


def box_slices(center_yx: np.ndarray, side: int, shape: tuple[int, int]) -> tuple[slice, slice]:
    """Rows/cols [c − side//2, c − side//2 + side) around the rounded centre, clipped to the image."""
    cy, cx = (int(v) for v in np.floor(np.asarray(center_yx, dtype=np.float64) + 0.5))
    y0, x0 = cy - side // 2, cx - side // 2
    return (slice(max(y0, 0), min(y0 + side, shape[0])), slice(max(x0, 0), min(x0 + side, shape[1])))


def _full_mask(shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[ys, xs] = True
    return mask


def _class_instances(
    semantic: np.ndarray, cls: int, members: np.ndarray, points: np.ndarray, pix: np.ndarray,
    *, min_area: int, single_point_target: OffsetTarget, connectivity: int, stats: S2IStats,
) -> tuple[list[S2IInstance], np.ndarray]:
    """The component instances of one class (``members``: indices of its in-image points, ``pix``
    their rounded pixels); also returns the members that lie on no accepted component."""
    labels, n = component_labels(semantic == cls, connectivity)
    if n == 0:
        return [], members
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    at = labels[pix[members, 0], pix[members, 1]]
    at[areas[at] < min_area] = 0
    stats.too_small += int((areas[1:] < min_area).sum())
    per_component = np.bincount(at, minlength=n + 1)
    stats.no_point += int(((areas[1:] >= min_area) & (per_component[1:] == 0)).sum())
    out: list[S2IInstance] = []
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None or per_component[k] == 0:
            continue
        ys, xs = np.nonzero(labels[sl] == k)
        ys, xs = ys + sl[0].start, xs + sl[1].start
        mine = members[at == k]  # ascending point index
        if len(mine) == 1:
            p = int(mine[0])
            mask = _full_mask(semantic.shape, ys, xs)
            center = instance_center(mask, (points[p, 0], points[p, 1]), single_point_target)
            out.append(S2IInstance(mask, int(cls), p, center, "single"))
            stats.single += 1
            continue
        stats.separated_components += 1
        owner = nearest_point(ys, xs, points[mine])
        for j, p in enumerate(mine):
            sel = owner == j
            if not sel.any():
                stats.empty_parts += 1
                continue
            mask = _full_mask(semantic.shape, ys[sel], xs[sel])
            out.append(S2IInstance(mask, int(cls), int(p), (float(points[p, 0]), float(points[p, 1])), "separated"))
            stats.separated_points += 1
    return out, members[at == 0]


def default_boxes(
    shape: tuple[int, int], taken: Sequence[np.ndarray], box_points: np.ndarray, points: np.ndarray,
    point_classes: np.ndarray, side: int, stats: S2IStats | None = None,
) -> list[S2IInstance]:
    """Default pseudo boxes (paper l. 82) of ``box_points``: the pixels of each box that no mask in
    ``taken`` holds, a pixel in several boxes going to the nearest of their points (ties → lowest index)."""
    owned = np.zeros(shape, dtype=bool)
    for mask in taken:
        owned |= mask
    best = np.full(shape, np.inf)
    owner = np.full(shape, -1, dtype=np.int64)
    for p in np.sort(box_points):
        sy, sx = box_slices(points[p], side, shape)
        yy, xx = np.mgrid[sy, sx]
        d = (yy - points[p, 0]) ** 2 + (xx - points[p, 1]) ** 2
        win_best, win_owner = best[sy, sx], owner[sy, sx]
        take = (d < win_best) & ~owned[sy, sx]
        win_best[take], win_owner[take] = d[take], p
    out: list[S2IInstance] = []
    for p in np.sort(box_points):
        mask = owner == p
        if not mask.any():
            if stats is not None:
                stats.empty_boxes += 1
            continue
        out.append(S2IInstance(mask, int(point_classes[p]), int(p), (float(points[p, 0]), float(points[p, 1])),
                               "default-box"))
        if stats is not None:
            stats.default_boxes += 1
    return out


def points_first_instances(
    semantic: np.ndarray,
    points_yx: np.ndarray,
    point_classes: np.ndarray,
    *,
    min_area: int,
    single_point_target: OffsetTarget = "point",
    default_box: int | None = 16,
    connectivity: int = 8,
) -> tuple[list[S2IInstance], S2IStats]:
    """S2I pseudo instances of one image (Sec. 3.1, Eq. 1–2; see the module docstring).

    Args:
        semantic: (H, W) WSSS map of semantic indices (255 = ignore).
        points_yx: (N, 2) (y, x) of the annotated points (ints or floats).
        point_classes: (N,) semantic index of each point.
        min_area: components with fewer pixels are skipped (release: 50).
        single_point_target: offset target of a single-point component (paper "point", release
            "centroid-int"; see :func:`~methods.bestie.transfer.instance_center`).
        default_box: side in pixels of the default box of a point on no accepted component of its
            class (paper 16; None = no box, as the release's training targets).
        connectivity: of the components (paper/release: 8).

    Returns:
        At most one instance per point, ordered by point index, with pairwise disjoint masks; and
        the counts.
    """
    points = np.asarray(points_yx, dtype=np.float64).reshape(-1, 2)
    point_classes = np.asarray(point_classes, dtype=np.int64).reshape(-1)
    if len(points) != len(point_classes):
        raise ValueError(f"{len(points)} points but {len(point_classes)} point classes")
    if default_box is not None and default_box < 1:
        raise ValueError(f"default_box must be a positive side in pixels or None, got {default_box}")
    shape = semantic.shape
    stats = S2IStats()
    pix = np.floor(points + 0.5).astype(np.int64)
    inside = (pix[:, 0] >= 0) & (pix[:, 0] < shape[0]) & (pix[:, 1] >= 0) & (pix[:, 1] < shape[1])
    stats.points_outside_image = int((~inside).sum())
    found: list[S2IInstance] = []
    unmatched: list[np.ndarray] = []
    for cls in np.unique(point_classes[inside]):
        members = np.flatnonzero(inside & (point_classes == cls))
        inst, left = _class_instances(semantic, int(cls), members, points, pix, min_area=min_area,
                                      single_point_target=single_point_target, connectivity=connectivity,
                                      stats=stats)
        found += inst
        unmatched.append(left)
    box_points = np.concatenate(unmatched) if unmatched else np.zeros(0, np.int64)
    stats.unmatched_points = len(box_points)
    if default_box is not None and len(box_points):
        found += default_boxes(shape, [i.mask for i in found], box_points, points, point_classes, default_box, stats)
    return sorted(found, key=lambda i: i.point), stats


def s2i_targets(
    semantic: np.ndarray,
    points_yx: np.ndarray,
    point_classes: np.ndarray,
    *,
    min_area: int,
    single_point_target: OffsetTarget = "point",
    default_box: int | None = 16,
    connectivity: int = 8,
) -> tuple[ImageTargets, S2IStats]:
    """S2I targets of one image as BESTIE's :class:`~methods.bestie.transfer.ImageTargets`: instance
    ``k + 1`` = the k-th instance of :func:`points_first_instances`, its centre = its offset target
    (so ``offset_field(instance_map, centers)`` is Eq. 2), cues = the points."""
    found, stats = points_first_instances(semantic, points_yx, point_classes, min_area=min_area,
                                          single_point_target=single_point_target, default_box=default_box,
                                          connectivity=connectivity)
    targets = targets_from_instances(semantic.shape, [i.mask for i in found], [i.center for i in found],
                                     [i.semantic_class for i in found], np.asarray(points_yx).reshape(-1, 2),
                                     np.asarray(point_classes).reshape(-1))
    return targets, stats
