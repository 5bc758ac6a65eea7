"""Instance maps from the network outputs: self-refinement labels (Sec. 3.5) and inference (Sec. 3.2).

- :func:`group_to_points` — point setting (Sec. 4.3, release): the WSSS foreground of each class
  grouped by the predicted offsets to the class's GT points (Eq. 1).
- :func:`segment_instances` — the image-setting refinement and the inference of both settings:
  per class, connected components (>= ``min_area`` px) of a semantic map; centres from the
  predicted centre map (threshold + NMS), complemented by centre clustering; at most
  ``max_per_component`` centres per component; Eq. (1) inside the component; score = centre score
  × mean class probability of the mask. A component without a centre becomes one instance at
  inference (``keep_centerless``) and is left unlabelled during refinement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .grouping import Center, cluster_centers, find_centers, group_pixels, merge_centers
from .transfer import component_labels

__all__ = ["ClusterConfig", "Instance", "group_to_points", "segment_instances"]


@dataclass(frozen=True)
class ClusterConfig:
    """Centre clustering (appendix): |o| < magnitude_threshold, area within area ± epsilon
    (``inclusive`` bounds: paper; strict: release), added only farther than ``min_distance`` px
    from every detected centre (release: 100 px; 0 = always)."""

    magnitude_threshold: float = 2.5
    area: int = 21
    epsilon: int = 3
    inclusive: bool = True
    min_distance: float = 0.0


@dataclass(frozen=True)
class Instance:
    """One predicted instance: mask, semantic class, score and the centre it was grouped to."""

    mask: np.ndarray
    cls: int
    score: float
    center: tuple[float, float]


def group_to_points(
    offset: np.ndarray, semantic: np.ndarray, points_yx: np.ndarray, point_classes: np.ndarray
) -> np.ndarray:
    """(H, W) int32: ``p + 1`` where a pixel of class ``point_classes[p]`` in ``semantic`` joins point p
    by Eq. (1) among the points of its class; 0 elsewhere (other classes, classes without points)."""
    out = np.zeros(semantic.shape, dtype=np.int32)
    points_yx = np.asarray(points_yx, dtype=np.float64).reshape(-1, 2)
    point_classes = np.asarray(point_classes).reshape(-1)
    for cls in np.unique(point_classes):
        members = np.flatnonzero(point_classes == cls)
        grouped = group_pixels(offset, semantic == cls, points_yx[members])
        sel = grouped > 0
        out[sel] = members[grouped[sel] - 1] + 1
    return out


def segment_instances(
    semantic: np.ndarray,
    class_prob: np.ndarray,
    center_map: np.ndarray,
    offset: np.ndarray,
    channel_classes: np.ndarray,
    *,
    threshold: float,
    nms_kernel: int,
    min_area: int,
    cluster: ClusterConfig | None,
    max_per_component: int | None,
    keep_centerless: bool,
) -> list[Instance]:
    """Instances of one image from a semantic map and the network's centre/offset outputs.

    Args:
        semantic: (H, W) semantic indices (the predicted argmax at inference; the WSSS map in the
            image-setting refinement).
        class_prob: (S, H, W) softmax of the semantic head (for the mean class probability).
        center_map: (C, H, W) class-wise centre heatmap; channel c is semantic class
            ``channel_classes[c]``.
        offset: (2, H, W) predicted offsets [dy, dx].
        threshold, nms_kernel: centre extraction (inference 0.1 / 41, refinement 0.3 / 41).
        min_area: smaller components are dropped.
        cluster: centre clustering, or None (off).
        max_per_component: keep the highest-scoring centres of a component (refinement: 5).
        keep_centerless: a component without a centre becomes one instance (inference).
    """
    out: list[Instance] = []
    for c, cls in enumerate(np.asarray(channel_classes).reshape(-1)):
        region = semantic == cls
        if not region.any():
            continue
        labels, n = component_labels(region, 8)
        areas = np.bincount(labels.ravel(), minlength=n + 1)
        centers = find_centers(center_map[c : c + 1], np.array([cls]), threshold=threshold,
                               nms_kernel=nms_kernel, region=region)
        if cluster is not None:
            yx = cluster_centers(offset, region, magnitude_threshold=cluster.magnitude_threshold,
                                 area=cluster.area, epsilon=cluster.epsilon, inclusive=cluster.inclusive)
            extra = []
            for y, x in yx:
                iy, ix = int(round(y)), int(round(x))
                extra.append(Center(int(cls), float(y), float(x), float(center_map[c, iy, ix])))
            centers = merge_centers(centers, extra, min_distance=cluster.min_distance)
        at = [int(labels[int(round(ct.y)), int(round(ct.x))]) for ct in centers]
        for k in range(1, n + 1):
            if areas[k] < min_area:
                continue
            mask_k = labels == k
            mine = sorted((ct for ct, lab in zip(centers, at) if lab == k), key=lambda ct: -ct.score)
            if max_per_component is not None:
                mine = mine[:max_per_component]
            prob = class_prob[cls]
            if not mine:
                if keep_centerless:
                    score = float(center_map[c][mask_k].max()) * float(prob[mask_k].mean())
                    ys, xs = np.nonzero(mask_k)
                    out.append(Instance(mask_k, int(cls), score, (float(ys.mean()), float(xs.mean()))))
                continue
            grouped = group_pixels(offset, mask_k, np.array([[ct.y, ct.x] for ct in mine]))
            for j, ct in enumerate(mine):
                m = grouped == j + 1
                if m.any():
                    out.append(Instance(m, int(cls), ct.score * float(prob[m].mean()), (ct.y, ct.x)))
    return out
