"""Reference rows that need no training and bound what point supervision can reach.

- ``ground-truth``: the ground truth scored as a prediction — every metric must read 100;
  a self-check of the whole evaluation chain.
- ``oracle-grouping``: the ground-truth semantic map split among the points of each class,
  every pixel going to its nearest point (Euclidean) — the ceiling of point grouping given
  a perfect semantic map (what BESTIE's "semantic results first" rule and P2Seg's
  "points first" S2I (its Eq. 1) approximate from a predicted map).
"""

from __future__ import annotations

import numpy as np


def group_by_nearest_point(
    semantic: np.ndarray, points_xy: np.ndarray, point_classes: np.ndarray
) -> np.ndarray:
    """Split each class region of ``semantic`` among that class's points by nearest point.

    Args:
        semantic: (H, W) semantic index map (255 = void).
        points_xy: (P, 2) integer pixel coordinates (x, y).
        point_classes: (P,) semantic index of each point.

    Returns:
        (H, W) int32 map with ``p + 1`` where pixel joins point ``p``, 0 elsewhere (classes
        without points, void). Ties go to the lower point index.
    """
    out = np.zeros(semantic.shape, dtype=np.int32)
    for cls in np.unique(point_classes):
        members = np.flatnonzero(point_classes == cls)
        ys, xs = np.nonzero(semantic == cls)
        if len(ys) == 0:
            continue
        px = points_xy[members, 0].astype(np.int64)
        py = points_xy[members, 1].astype(np.int64)
        d2 = (ys[:, None].astype(np.int64) - py[None]) ** 2 + (xs[:, None].astype(np.int64) - px[None]) ** 2
        out[ys, xs] = members[np.argmin(d2, axis=1)] + 1
    return out
