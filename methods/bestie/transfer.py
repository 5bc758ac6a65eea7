"""Semantic knowledge transfer (BESTIE Sec. 3.3): pseudo instances from a WSSS map and instance cues.

Per class of the cues: connected components (8-connectivity) of ``semantic == class``; components
smaller than ``min_area`` pixels are skipped (release: 50 px); a component becomes a pseudo
instance when exactly one cue of its class lies in it ("second condition": semantic and instance
segmentation agree where instances do not overlap). Components with no cue or with several cues
are left out (their pixels get no instance guidance).

The targets of a pseudo instance (Sec. 3.3, Listing 4): every pixel's offset points to the
instance's centre — the mask centroid (paper), its int-truncated centroid (release) or the cue
itself (``offset_target``) — and the centre map is a 2-D Gaussian (sigma = 6 px in the paper) at
the centre, class-wise, combined with max.

numpy / scipy only; coordinates are (y, x) rows/columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
from scipy import ndimage

__all__ = [
    "OffsetTarget",
    "PseudoInstance",
    "TransferStats",
    "component_labels",
    "instance_center",
    "pseudo_instances",
    "offset_field",
    "gaussian_center_map",
]

OffsetTarget = Literal["centroid", "centroid-int", "point"]
_EIGHT = np.ones((3, 3), dtype=bool)
_FOUR = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class PseudoInstance:
    """One pseudo instance: its mask, semantic class, the index of its cue and its centre (y, x)."""

    mask: np.ndarray
    semantic_class: int
    cue: int
    center: tuple[float, float]


@dataclass
class TransferStats:
    """Counts of the components seen by :func:`pseudo_instances` (summed over images by callers)."""

    accepted: int = 0
    too_small: int = 0
    no_cue: int = 0
    several_cues: int = 0
    cues_outside: int = 0  # cues on no accepted-size component of their class

    def add(self, other: "TransferStats") -> None:
        for k in vars(self):
            setattr(self, k, getattr(self, k) + getattr(other, k))

    def to_dict(self) -> dict[str, int]:
        return dict(vars(self))


def component_labels(mask: np.ndarray, connectivity: int = 8) -> tuple[np.ndarray, int]:
    """Connected components of a binary mask: (int32 label map with 1..n, n)."""
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    labels, n = ndimage.label(mask, structure=_EIGHT if connectivity == 8 else _FOUR)
    return labels.astype(np.int32, copy=False), int(n)


def instance_center(mask: np.ndarray, cue_yx: tuple[int, int], rule: OffsetTarget) -> tuple[float, float]:
    """The centre an instance's offsets point to: mask centroid (paper, Listing 4), its
    int-truncated centroid (release) or the cue (annotated point / peak)."""
    if rule == "point":
        return float(cue_yx[0]), float(cue_yx[1])
    ys, xs = np.nonzero(mask)
    cy, cx = float(ys.mean()), float(xs.mean())
    if rule == "centroid-int":
        return float(int(cy)), float(int(cx))
    if rule == "centroid":
        return cy, cx
    raise ValueError(f"unknown offset target rule {rule!r}")


def pseudo_instances(
    semantic: np.ndarray,
    cues_yx: np.ndarray,
    cue_classes: np.ndarray,
    *,
    min_area: int = 50,
    offset_target: OffsetTarget = "centroid",
    connectivity: int = 8,
) -> tuple[list[PseudoInstance], TransferStats]:
    """Pseudo instances of one image (BESTIE Sec. 3.3).

    Args:
        semantic: (H, W) WSSS map of semantic indices (255 = ignore).
        cues_yx: (N, 2) integer (y, x) of the instance cues (GT points or PAM peaks).
        cue_classes: (N,) semantic index of each cue.
        min_area: components with fewer pixels are skipped (release: 50).
        offset_target: see :func:`instance_center`.

    Returns:
        The accepted instances (in class order, then component label order) and the counts.
    """
    cues_yx = np.asarray(cues_yx, dtype=np.int64).reshape(-1, 2)
    cue_classes = np.asarray(cue_classes, dtype=np.int64).reshape(-1)
    stats = TransferStats()
    out: list[PseudoInstance] = []
    h, w = semantic.shape
    for cls in np.unique(cue_classes):
        members = np.flatnonzero(cue_classes == cls)
        labels, n = component_labels(semantic == cls, connectivity)
        if n == 0:
            stats.cues_outside += len(members)
            continue
        areas = np.bincount(labels.ravel(), minlength=n + 1)
        ys, xs = cues_yx[members, 0], cues_yx[members, 1]
        inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        at = np.zeros(len(members), dtype=np.int64)
        at[inside] = labels[ys[inside], xs[inside]]
        valid = at > 0
        valid[valid] = areas[at[valid]] >= min_area
        stats.cues_outside += int((~valid).sum())
        counts = np.bincount(at[valid], minlength=n + 1)
        for k in range(1, n + 1):
            if areas[k] < min_area:
                stats.too_small += 1
            elif counts[k] == 0:
                stats.no_cue += 1
            elif counts[k] > 1:
                stats.several_cues += 1
            else:
                cue = int(members[np.flatnonzero(valid & (at == k))[0]])
                mask = labels == k
                center = instance_center(mask, (int(cues_yx[cue, 0]), int(cues_yx[cue, 1])), offset_target)
                out.append(PseudoInstance(mask, int(cls), cue, center))
                stats.accepted += 1
    return out, stats


def offset_field(instance_map: np.ndarray, centers_yx: Sequence[tuple[float, float]]) -> np.ndarray:
    """(2, H, W) float32 offsets [dy, dx] = centre − pixel on the pixels of each instance, 0 elsewhere.

    ``instance_map`` holds ``k + 1`` on the pixels of instance ``k`` (0 = none).
    """
    out = np.zeros((2, *instance_map.shape), dtype=np.float32)
    if not len(centers_yx):
        return out
    centers = np.asarray(centers_yx, dtype=np.float32).reshape(-1, 2)
    ys, xs = np.nonzero(instance_map)
    k = instance_map[ys, xs] - 1
    out[0, ys, xs] = centers[k, 0] - ys
    out[1, ys, xs] = centers[k, 1] - xs
    return out


def gaussian_center_map(
    shape: tuple[int, int],
    centers_yx: np.ndarray,
    center_channels: np.ndarray,
    num_channels: int,
    *,
    sigma: float,
    scores: np.ndarray | None = None,
) -> np.ndarray:
    """(C, H, W) float32 class-wise centre heatmap: a Gaussian exp(−d²/2σ²) (peak 1, or ``scores``)
    at each centre in its channel on the pixels within 3σ + 1 px of it along each axis, combined with
    max. At an integer centre that is the release's window, −3σ−1 … +3σ+1 (BESTIE's ``gaussian`` of
    6σ + 3 px, Panoptic-DeepLab's); centres may be fractional (the Gaussian is centred exactly there,
    the window still ±(3σ + 1) around it)."""
    h, w = shape
    out = np.zeros((num_channels, h, w), dtype=np.float32)
    radius = 3 * sigma + 1
    centers_yx = np.asarray(centers_yx, dtype=np.float64).reshape(-1, 2)
    for i, ((cy, cx), ch) in enumerate(zip(centers_yx, np.asarray(center_channels).reshape(-1))):
        y0, y1 = max(0, int(np.ceil(cy - radius))), min(h, int(np.floor(cy + radius)) + 1)
        x0, x1 = max(0, int(np.ceil(cx - radius))), min(w, int(np.floor(cx + radius)) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        yy = np.arange(y0, y1)[:, None] - cy
        xx = np.arange(x0, x1)[None, :] - cx
        g = np.exp(-(yy**2 + xx**2) / (2 * sigma**2)).astype(np.float32)
        if scores is not None:
            g *= float(scores[i])
        np.maximum(out[int(ch), y0:y1, x0:x1], g, out=out[int(ch), y0:y1, x0:x1])
    return out


@dataclass
class ImageTargets:
    """Per-image pseudo-label state kept across training (instance map + centres + cues)."""

    instance_map: np.ndarray  # int32, k + 1 on instance k
    centers: np.ndarray  # (K, 2) float32 (y, x)
    classes: np.ndarray  # (K,) semantic index
    cues: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))  # (N, 2) (y, x)
    cue_classes: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
