"""BESTIE semantic knowledge transfer (Sec. 3.3) and centre clustering / grouping (Eq. 1, appendix)."""

from __future__ import annotations

import numpy as np
import pytest

from methods.bestie import cluster_centers, gaussian_center_map, group_pixels, offset_field, pseudo_instances
from methods.bestie.instances import group_to_points


def _square(shape: tuple[int, int], y0: int, x0: int, size: int, value: int,
            out: np.ndarray | None = None) -> np.ndarray:
    out = np.zeros(shape, np.uint8) if out is None else out
    out[y0:y0 + size, x0:x0 + size] = value
    return out


def test_component_with_two_points_is_rejected() -> None:
    sem = _square((20, 20), 2, 2, 8, 1)
    found, stats = pseudo_instances(sem, np.array([[3, 3], [8, 8]]), np.array([1, 1]), min_area=1)
    assert found == [] and stats.several_cues == 1 and stats.accepted == 0


def test_component_with_one_point_is_accepted_and_other_classes_ignored() -> None:
    sem = _square((20, 20), 2, 2, 8, 1)
    sem[12:18, 12:18] = 2  # a class-2 component with no point: no pseudo instance
    found, stats = pseudo_instances(sem, np.array([[3, 3]]), np.array([1]), min_area=1)
    assert len(found) == 1 and found[0].mask.sum() == 64 and found[0].cue == 0 and stats.accepted == 1


def test_component_under_min_area_is_skipped() -> None:
    sem = _square((20, 20), 0, 0, 7, 1)  # 49 px < 50
    found, stats = pseudo_instances(sem, np.array([[3, 3]]), np.array([1]), min_area=50)
    assert found == [] and stats.too_small == 1 and stats.cues_outside == 1
    sem = _square((20, 20), 0, 0, 7, 1)
    sem[7, 0] = 1  # 50 px: kept
    found, _ = pseudo_instances(sem, np.array([[3, 3]]), np.array([1]), min_area=50)
    assert len(found) == 1


def test_components_are_eight_connected() -> None:
    sem = np.zeros((6, 6), np.uint8)
    sem[1, 1] = sem[2, 2] = 1  # diagonal neighbours: one component with two points → rejected
    found, stats = pseudo_instances(sem, np.array([[1, 1], [2, 2]]), np.array([1, 1]), min_area=1)
    assert found == [] and stats.several_cues == 1


def test_offsets_point_to_centroid_or_to_the_point() -> None:
    sem = _square((20, 20), 2, 4, 5, 1)  # rows 2..6, cols 4..8 → centroid (4, 6)
    sem[2, 9] = 1  # one extra pixel: centroid (2*... ) becomes fractional
    ys, xs = np.nonzero(sem)
    cy, cx = ys.mean(), xs.mean()
    cue = np.array([[3, 5]])
    (inst,), _ = pseudo_instances(sem, cue, np.array([1]), min_area=1, offset_target="centroid")
    assert inst.center == pytest.approx((cy, cx))
    off = offset_field(inst.mask.astype(np.int32), [inst.center])
    assert off[0, 2, 4] == pytest.approx(cy - 2) and off[1, 2, 4] == pytest.approx(cx - 4)
    assert np.all(off[:, ~inst.mask] == 0)
    (inst,), _ = pseudo_instances(sem, cue, np.array([1]), min_area=1, offset_target="centroid-int")
    assert inst.center == (float(int(cy)), float(int(cx)))
    (inst,), _ = pseudo_instances(sem, cue, np.array([1]), min_area=1, offset_target="point")
    off = offset_field(inst.mask.astype(np.int32), [inst.center])
    assert inst.center == (3.0, 5.0) and off[0, 6, 8] == -3 and off[1, 6, 8] == -3


def test_gaussian_center_map_peaks_at_centres_per_class() -> None:
    m = gaussian_center_map((30, 30), np.array([[10, 10], [20, 5]]), np.array([0, 1]), 2, sigma=2.0)
    assert m[0, 10, 10] == 1.0 and m[1, 20, 5] == 1.0 and m[0, 20, 5] == 0.0
    assert m[0, 10, 12] == pytest.approx(np.exp(-4 / 8))


def test_gaussian_window_is_the_release_kernel_of_6_sigma_plus_3_pixels() -> None:
    """σ 6 at (30, 30): the release's kernel covers rows/cols 30 − 19 … 30 + 19, symmetric; one pixel
    further on either side is 0 (the far side once held exp(−400/72) ≈ 0.0039)."""
    m = gaussian_center_map((64, 64), np.array([[30, 30]]), np.array([0]), 1, sigma=6.0)[0]
    rows, cols = np.nonzero(m)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (11, 49, 11, 49)
    assert m[50, 30] == 0.0 and m[10, 30] == 0.0 and m[30, 50] == 0.0
    assert m[49, 30] == pytest.approx(np.exp(-361 / 72)) and m[11, 30] == m[49, 30]


def test_perfect_offsets_group_two_touching_instances() -> None:
    """Two touching same-class squares with exact offsets to their centres: Eq. 1 separates them."""
    inst = np.zeros((12, 20), np.int32)
    inst[2:9, 2:9] = 1  # centre (5, 5)
    inst[2:9, 9:16] = 2  # centre (5, 12), touching at columns 8 | 9
    centers = [(5.0, 5.0), (5.0, 12.0)]
    off = offset_field(inst, centers)
    grouped = group_pixels(off, inst > 0, np.array(centers))
    assert np.array_equal(grouped, inst)
    # point setting: the same via the class's points
    sem = (inst > 0).astype(np.uint8)
    assert np.array_equal(group_to_points(off, sem, np.array(centers), np.array([1, 1])), inst)


def test_clustering_finds_exactly_the_21_pixel_cores() -> None:
    inst = np.zeros((30, 40), np.int32)
    inst[2:15, 2:15] = 1
    inst[2:15, 20:33] = 2
    centers = [(8.0, 8.0), (8.0, 26.0)]
    off = offset_field(inst, centers)
    mag = np.hypot(off[0], off[1])
    assert ((mag < 2.5) & (inst == 1)).sum() == 21
    found = cluster_centers(off, inst > 0)
    assert found.tolist() == [[8.0, 8.0], [8.0, 26.0]]


@pytest.mark.parametrize("area,inclusive,expected", [(18, True, 1), (18, False, 0), (24, True, 1), (24, False, 0),
                                                     (17, True, 0), (19, False, 1)])
def test_clustering_area_bounds_strict_vs_inclusive(area: int, inclusive: bool, expected: int) -> None:
    """A zero-offset blob of ``area`` pixels (one row) against 21 ± 3."""
    off = np.full((2, 5, 40), 9.0, np.float32)
    off[:, 2, 1:1 + area] = 0.0
    assert len(cluster_centers(off, np.ones((5, 40), bool), inclusive=inclusive)) == expected
