"""Panoptic output (Sec. 3.1, Fig. 2): scored thing segments and a stuff map merged into one panoptic
label map — things by descending score, each keeping only pixels no higher-scored thing took and dropped
when less than ``overlap`` of it stays visible; then stuff fills the free pixels (the Panoptic FPN
heuristic, the paper's reference [3]); stuff regions under ``stuff_area_limit`` pixels stay void."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PanopticSegment", "merge_panoptic"]


@dataclass(frozen=True)
class PanopticSegment:
    """One segment of the label map: ``id`` (≥ 1; 0 is void), ``category`` (index over thing + stuff
    classes, things first), ``isthing``, ``score`` (stuff: 1.0) and ``area`` in pixels."""

    id: int
    category: int
    isthing: bool
    score: float
    area: int


def merge_panoptic(thing_masks: np.ndarray, thing_classes: np.ndarray, thing_scores: np.ndarray,
                   stuff_map: np.ndarray, *, num_things: int, overlap: float = 0.5, score_threshold: float = 0.05,
                   stuff_area_limit: int = 64) -> tuple[np.ndarray, list[PanopticSegment]]:
    """(H, W) int32 segment-id map and its segments. ``thing_masks`` (K, H, W) bool with thing class
    indices and scores; ``stuff_map`` (H, W) int stuff index per pixel (-1 = none), category
    ``num_things + index``."""
    h, w = stuff_map.shape
    ids = np.zeros((h, w), np.int32)
    segments: list[PanopticSegment] = []
    for k in np.argsort(-np.asarray(thing_scores, np.float64), kind="stable"):
        if thing_scores[k] < score_threshold:
            continue
        mask = thing_masks[k].astype(bool)
        area = int(mask.sum())
        visible = mask & (ids == 0)
        if area == 0 or visible.sum() < overlap * area:
            continue
        seg_id = len(segments) + 1
        ids[visible] = seg_id
        segments.append(PanopticSegment(seg_id, int(thing_classes[k]), True, float(thing_scores[k]),
                                        int(visible.sum())))
    for s in np.unique(stuff_map[stuff_map >= 0]):
        region = (stuff_map == s) & (ids == 0)
        if region.sum() < stuff_area_limit:
            continue
        seg_id = len(segments) + 1
        ids[region] = seg_id
        segments.append(PanopticSegment(seg_id, num_things + int(s), False, 1.0, int(region.sum())))
    return ids, segments
