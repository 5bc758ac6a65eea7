"""Instance maps from the network outputs: self-refinement labels (Sec. 3.5) and inference (Sec. 3.2).

- :func:`group_to_points` — point setting (Sec. 4.3, release): the WSSS foreground of each class
  grouped by the predicted offsets to the class's GT points (Eq. 1).
- :func:`segment_instances` — the image-setting refinement and the inference of both settings:
  per class, connected components (>= ``min_area`` px) of a semantic map, each split by
  :func:`component_instances` as the release's ``get_instance_segmentation`` does: peaks of the centre
  map masked to the component (threshold + NMS), complemented by clustered centres; a component with
  more than ``max_per_component`` centres is left out; Eq. (1) inside the component; score = centre
  score × mean class probability of the mask (the release's two rules, or the mean class probability
  alone: ``score_rule``). A component
  without a centre becomes one instance at inference (``keep_centerless``) and is left unlabelled
  during refinement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from scipy import ndimage

from .grouping import Center, cluster_centers, find_centers, group_pixels, merge_centers
from .transfer import component_labels

__all__ = ["ClusterConfig", "Instance", "InferenceScore", "SCORE_RULES", "ScoreRule", "component_instances",
           "group_to_points", "segment_instances"]


@dataclass(frozen=True)
class ClusterConfig:
    """Centre clustering (appendix): |o| < magnitude_threshold, area within area ± epsilon
    (``inclusive`` bounds: paper; strict: release), kept only where the component's centre map exceeds
    ``min_center`` (release: 0.05; the paper is silent), added only farther than ``min_distance`` px
    from every detected centre of the component (release: 100 px; 0 = always). A clustered centre is the
    cluster's centroid (``"centroid"``, paper) or that centroid truncated to integers (``"centroid-int"``,
    the release's ``np.int32`` in ``get_instance_segmentation``), the point pixels are grouped to."""

    magnitude_threshold: float = 2.5
    area: int = 21
    epsilon: int = 3
    inclusive: bool = True
    min_distance: float = 0.0
    min_center: float = 0.05
    center: Literal["centroid", "centroid-int"] = "centroid"


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


InferenceScore = Literal["center-class", "class"]  # bestie.score
ScoreRule = Literal[InferenceScore, "refinement"]
SCORE_RULES: tuple[ScoreRule, ...] = get_args(ScoreRule)


def _instance_score(peak: float, seg: float, rule: ScoreRule, threshold: float) -> float:
    """The confidence of one grouped mask from ``peak`` (the highest centre value in the mask, an added
    clustered centre counting as 1.0) and ``seg`` (its mean class probability):

    - ``center-class`` (the release's inference, ``get_ins_map``): peak × seg, where a peak ≥ 1 (a
      clustered centre) counts as seg;
    - ``class``: seg alone, the score the release gives every mask of its ``--val_clean`` point
      inference (``get_ins_map_with_point``), here for masks grouped to detected centres;
    - ``refinement`` (``refine_label_generation``, the soft weight W of Eq. 2): peak × seg clipped to
      [0, 1], or seg alone when the peak is below the refinement threshold.
    """
    if rule == "center-class":
        return (seg if peak >= 1.0 else peak) * seg
    if rule == "class":
        return seg
    if rule == "refinement":
        return seg if peak < threshold else min(max(peak * seg, 0.0), 1.0)
    raise ValueError(f"score rule must be one of {', '.join(map(repr, SCORE_RULES))}, got {rule!r}")


def component_instances(
    component: np.ndarray,
    cls: int,
    class_prob: np.ndarray,
    center_map: np.ndarray,
    offset: np.ndarray,
    *,
    threshold: float,
    nms_kernel: int,
    cluster: ClusterConfig | None,
    max_per_component: int | None,
    keep_centerless: bool,
    score_rule: ScoreRule,
) -> list[Instance]:
    """The instances of one semantic component (the release's ``get_instance_segmentation`` on it).

    The class's centre map is masked to the component (0 outside) before peak finding, so a peak is a
    local maximum within the component; clustered centres (appendix) whose masked centre value exceeds
    ``cluster.min_center`` complement them (only those farther than ``cluster.min_distance`` from every
    peak of the component when it has peaks; at the cluster's centroid or its integer truncation,
    ``cluster.center``); Eq. (1) groups the component to the centres. A component
    with more than ``max_per_component`` centres yields nothing (release: "too many centers in single
    contour"); one without centres yields itself when ``keep_centerless`` (inference) and nothing
    otherwise. Scores: :func:`_instance_score`. Each instance's ``center`` is the centre it was grouped
    to (the component's centroid for a centre-less one); with the ``refinement`` rule it is the release's
    refined centre instead: the highest value of the (cluster-marked) centre map inside the mask, or the
    contour's int-truncated centroid when that value is below ``threshold``.

    Args:
        component: (H, W) bool mask; class_prob: (H, W) probability of ``cls``; center_map: (H, W) the
            class's centre heatmap; offset: (2, H, W) [dy, dx] — the whole image or any window that
            holds the component; masks and centres come back in that window's coordinates.
    """
    roi = np.where(component, center_map, 0.0)
    centers = find_centers(roi[None], np.array([cls]), threshold=threshold, nms_kernel=nms_kernel, region=component)
    marked = roi.copy()
    if cluster is not None:
        yx = cluster_centers(offset, component, magnitude_threshold=cluster.magnitude_threshold, area=cluster.area,
                             epsilon=cluster.epsilon, inclusive=cluster.inclusive)
        pixels = [(int(y), int(x)) for y, x in yx]  # the release's int32 truncation of the centroid
        if cluster.center == "centroid-int":
            yx = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
        clustered = [Center(cls, float(y), float(x), 1.0) for (y, x), (iy, ix) in zip(yx, pixels)
                     if roi[iy, ix] > cluster.min_center]
        merged = merge_centers(centers, clustered, min_distance=cluster.min_distance)
        for ct in merged[len(centers):]:
            marked[int(ct.y), int(ct.x)] = 1.0  # the release marks an added cluster as a peak of value 1
        centers = merged
    if max_per_component is not None and len(centers) > max_per_component:
        return []
    if centers:
        grouped = group_pixels(offset, component, np.array([[ct.y, ct.x] for ct in centers]))
        masks = [(grouped == j + 1, (ct.y, ct.x)) for j, ct in enumerate(centers)]
    elif keep_centerless:
        masks = [(component, _centroid(component))]
    else:
        return []
    out: list[Instance] = []
    for mask, center in masks:
        if not mask.any():
            continue
        ys, xs = np.nonzero(mask)
        top = int(np.argmax(marked[ys, xs]))  # the first maximum in row-major order, as torch's argmax
        peak, seg = float(marked[ys[top], xs[top]]), float(class_prob[mask].mean())
        if score_rule == "refinement":  # release: the refined centre is the mask's centre-map maximum,
            center = ((float(ys[top]), float(xs[top])) if peak >= threshold  # or the contour's (int) centroid
                      else tuple(float(int(v)) for v in _centroid(component)))
        out.append(Instance(mask, cls, _instance_score(peak, seg, score_rule, threshold), center))
    return out


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(ys.mean()), float(xs.mean())


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
    score_rule: ScoreRule,
) -> list[Instance]:
    """Instances of one image from a semantic map and the network's centre/offset outputs: per thing
    class, the 8-connected components of ``semantic == class`` with at least ``min_area`` pixels, each
    split by :func:`component_instances` on its bounding box padded by ``nms_kernel // 2`` (the same
    result as on the whole image, in a fraction of the time: ``bench/benchmarks/bench_instances.py``).

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
        max_per_component: a component with more centres is left out (refinement: 5); None = no limit.
        keep_centerless: a component without a centre becomes one instance (inference).
        score_rule: ``center-class``, ``class`` or ``refinement`` scores (:func:`_instance_score`).
    """
    out: list[Instance] = []
    height, width = semantic.shape
    pad = nms_kernel // 2  # every NMS window of a component pixel stays inside its padded box
    for c, cls in enumerate(np.asarray(channel_classes).reshape(-1)):
        region = semantic == cls
        if not region.any():
            continue
        labels, n = component_labels(region, 8)
        areas = np.bincount(labels.ravel(), minlength=n + 1)
        for k, (rows, cols) in enumerate(ndimage.find_objects(labels), start=1):
            if areas[k] < min_area:
                continue
            y0, x0 = max(rows.start - pad, 0), max(cols.start - pad, 0)
            box = (slice(y0, min(rows.stop + pad, height)), slice(x0, min(cols.stop + pad, width)))
            for f in component_instances(labels[box] == k, int(cls), class_prob[cls][box], center_map[c][box],
                                         offset[(slice(None), *box)], threshold=threshold, nms_kernel=nms_kernel,
                                         cluster=cluster, max_per_component=max_per_component,
                                         keep_centerless=keep_centerless, score_rule=score_rule):
                mask = np.zeros((height, width), dtype=bool)
                mask[box] = f.mask
                out.append(Instance(mask, f.cls, f.score, (f.center[0] + y0, f.center[1] + x0)))
    return out
