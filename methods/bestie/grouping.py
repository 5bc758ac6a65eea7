"""Centres, centre clustering and instance grouping (BESTIE Sec. 3.2 Eq. 1, Sec. 3.5, appendix).

- :func:`find_centers` — local maxima of a class-wise centre map (value equal to the max-pooled
  value, NMS kernel k) above a threshold (Sec. 3.2).
- :func:`cluster_centers` — centre clustering (appendix, Fig. 9): pixels whose predicted offset
  magnitude is below 2.5 form 4-connected components; those with area within 21 ± 3 give a centre
  at their centroid (21 = the pixel count of |o| < 2.5 around an exact centre).
- :func:`group_pixels` — Eq. (1): each pixel of a region joins the centre nearest to
  (pixel + offset).
- :func:`merge_centers` — the clustered centres that complement the detected ones (release: only
  those farther than a distance from every detected centre).

numpy / scipy only; offsets are (2, H, W) [dy, dx]; coordinates (y, x).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .transfer import component_labels

__all__ = ["Center", "find_centers", "cluster_centers", "merge_centers", "group_pixels", "CLUSTER_AREA"]

#: Pixels with |o| < 2.5 around an exact integer centre: the lattice points of a disc of radius 2.5.
CLUSTER_AREA = 21


@dataclass(frozen=True)
class Center:
    """A centre of semantic class ``cls`` at (y, x) with a confidence ``score``."""

    cls: int
    y: float
    x: float
    score: float


def find_centers(
    center_map: np.ndarray,
    channel_classes: np.ndarray,
    *,
    threshold: float,
    nms_kernel: int,
    region: np.ndarray | None = None,
) -> list[Center]:
    """Local maxima of each channel of a (C, H, W) centre map with value > ``threshold``.

    A pixel is a centre when it equals the max over its ``nms_kernel`` window (Sec. 3.2: "the same
    value before and after the max-pooling"); ``region`` (optional (C, H, W) or (H, W) bool)
    restricts where centres may lie. ``channel_classes[c]`` is the semantic index of channel c.
    Ordered by channel, then score descending, then raster order.
    """
    if nms_kernel < 1 or nms_kernel % 2 != 1:
        raise ValueError(f"nms_kernel must be a positive odd integer, got {nms_kernel}")
    out: list[Center] = []
    for c in range(center_map.shape[0]):
        m = center_map[c]
        pooled = ndimage.maximum_filter(m, size=nms_kernel, mode="constant", cval=-np.inf)
        keep = (m == pooled) & (m > threshold)
        if region is not None:
            keep &= region[c] if region.ndim == 3 else region
        ys, xs = np.nonzero(keep)
        scores = m[ys, xs]
        order = np.lexsort((np.arange(len(ys)), -scores))
        out += [Center(int(channel_classes[c]), float(ys[i]), float(xs[i]), float(scores[i])) for i in order]
    return out


def cluster_centers(
    offset: np.ndarray,
    region: np.ndarray,
    *,
    magnitude_threshold: float = 2.5,
    area: int = CLUSTER_AREA,
    epsilon: int = 3,
    inclusive: bool = True,
) -> np.ndarray:
    """Centre clustering (BESTIE appendix): (K, 2) float (y, x) centroids of the 4-connected
    components of ``(|offset| < magnitude_threshold) & region`` whose area lies within
    ``area ± epsilon`` — both bounds included (``inclusive``, the paper's "between") or excluded
    (the release's strict comparison)."""
    mag = np.hypot(offset[0], offset[1])
    labels, n = component_labels((mag < magnitude_threshold) & region, connectivity=4)
    if n == 0:
        return np.zeros((0, 2), dtype=np.float64)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    lo, hi = area - epsilon, area + epsilon
    ok = (sizes >= lo) & (sizes <= hi) if inclusive else (sizes > lo) & (sizes < hi)
    ids = np.flatnonzero(ok) + 1
    if not len(ids):
        return np.zeros((0, 2), dtype=np.float64)
    return np.asarray(ndimage.center_of_mass(np.ones_like(mag), labels, ids), dtype=np.float64).reshape(-1, 2)


def merge_centers(detected: list[Center], clustered: list[Center], *, min_distance: float) -> list[Center]:
    """The detected centres plus the clustered ones of the same class that lie farther than
    ``min_distance`` (Euclidean px) from every detected centre (0 = add them all)."""
    out = list(detected)
    for c in clustered:
        if all(d.cls != c.cls or np.hypot(d.y - c.y, d.x - c.x) > min_distance for d in detected):
            out.append(c)
    return out


def group_pixels(offset: np.ndarray, region: np.ndarray, centers_yx: np.ndarray) -> np.ndarray:
    """Eq. (1): (H, W) int32 map, ``k + 1`` where a pixel of ``region`` joins centre k, i.e. the centre
    nearest to (pixel + offset); 0 outside the region or without centres. Ties: the lower index."""
    out = np.zeros(region.shape, dtype=np.int32)
    centers_yx = np.asarray(centers_yx, dtype=np.float64).reshape(-1, 2)
    if not len(centers_yx):
        return out
    ys, xs = np.nonzero(region)
    if not len(ys):
        return out
    ty = ys + offset[0, ys, xs].astype(np.float64)
    tx = xs + offset[1, ys, xs].astype(np.float64)
    d2 = (ty[:, None] - centers_yx[None, :, 0]) ** 2 + (tx[:, None] - centers_yx[None, :, 1]) ** 2
    out[ys, xs] = np.argmin(d2, axis=1).astype(np.int32) + 1
    return out
