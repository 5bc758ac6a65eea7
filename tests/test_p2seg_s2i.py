"""P2Seg S2I (Sec. 3.1): "points first" pseudo instances — Eq. 1 split, Eq. 2 offsets, default boxes."""

from __future__ import annotations

import numpy as np
import pytest

from methods.bestie.transfer import offset_field, pseudo_instances
from methods.p2seg.s2i import S2IStats, nearest_point, points_first_instances, s2i_targets


def _touching_pair() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 10×20 class-1 rectangle (two touching objects) with one point on each half."""
    sem = np.zeros((12, 24), np.uint8)
    sem[1:11, 2:22] = 1  # rows 1..10, cols 2..21
    return sem, np.array([[5, 4], [5, 15]]), np.array([1, 1])


def test_touching_objects_are_split_along_the_perpendicular_bisector() -> None:
    sem, pts, cls = _touching_pair()
    found, stats = points_first_instances(sem, pts, cls, min_area=1)
    assert [i.point for i in found] == [0, 1] and [i.source for i in found] == ["separated"] * 2
    left, right = np.zeros_like(sem, bool), np.zeros_like(sem, bool)
    left[1:11, 2:10] = True  # x ≤ 9: closer to x = 4 (bisector at x = 9.5)
    right[1:11, 10:22] = True
    assert np.array_equal(found[0].mask, left) and np.array_equal(found[1].mask, right)
    assert found[0].center == (5.0, 4.0) and found[1].center == (5.0, 15.0)
    assert stats.separated_components == 1 and stats.separated_points == 2 and stats.single == 0


def test_offsets_of_each_part_point_to_its_point() -> None:
    sem, pts, cls = _touching_pair()
    targets, _ = s2i_targets(sem, pts, cls, min_area=1)
    assert targets.instance_map[1, 9] == 1 and targets.instance_map[1, 10] == 2 and targets.instance_map[0, 0] == 0
    off = offset_field(targets.instance_map, targets.centers)  # Eq. 2: e_k − m
    assert tuple(off[:, 1, 9]) == (4.0, -5.0) and tuple(off[:, 10, 21]) == (-5.0, -6.0)
    assert np.array_equal(targets.classes, [1, 1]) and np.array_equal(targets.cues, pts)


def test_single_point_component_is_one_instance_with_the_chosen_centre() -> None:
    sem = np.zeros((10, 10), np.uint8)
    sem[2:5, 3:7] = 2  # rows 2..4, cols 3..6: centroid (3, 4.5)
    sem[2, 7] = 2  # + (2, 7): 13 px, centroid (38/13, 61/13)
    for rule, center in [("point", (4.0, 3.0)), ("centroid", (38 / 13, 61 / 13)), ("centroid-int", (2.0, 4.0))]:
        (inst,), stats = points_first_instances(sem, np.array([[4, 3]]), np.array([2]), min_area=1,
                                                single_point_target=rule)
        assert inst.source == "single" and np.array_equal(inst.mask, sem == 2) and inst.semantic_class == 2
        assert inst.center == pytest.approx(center) and stats.single == 1


def test_point_with_absent_class_gets_a_default_box_centred_on_it() -> None:
    sem = np.zeros((40, 40), np.uint8)
    (inst,), stats = points_first_instances(sem, np.array([[20, 20]]), np.array([3]), min_area=1)
    box = np.zeros_like(sem, bool)
    box[12:28, 12:28] = True  # 16×16: rows/cols [20 − 8, 20 + 8)
    assert inst.source == "default-box" and np.array_equal(inst.mask, box) and inst.center == (20.0, 20.0)
    assert inst.semantic_class == 3 and stats.unmatched_points == 1 and stats.default_boxes == 1


def test_default_box_is_clipped_at_the_border() -> None:
    sem = np.zeros((40, 40), np.uint8)
    (inst,), _ = points_first_instances(sem, np.array([[2, 38]]), np.array([3]), min_area=1, default_box=16)
    box = np.zeros_like(sem, bool)
    box[0:10, 30:40] = True  # rows [−6, 10) and cols [30, 46) clipped
    assert np.array_equal(inst.mask, box)


def test_no_default_box_when_disabled() -> None:
    sem = np.zeros((40, 40), np.uint8)
    found, stats = points_first_instances(sem, np.array([[20, 20]]), np.array([3]), min_area=1, default_box=None)
    assert found == [] and stats.unmatched_points == 1 and stats.default_boxes == 0


def test_default_box_never_takes_pixels_of_component_instances() -> None:
    sem = np.zeros((30, 30), np.uint8)
    sem[10:20, 10:20] = 1
    found, _ = points_first_instances(sem, np.array([[15, 15], [15, 8]]), np.array([1, 2]), min_area=1, default_box=8)
    comp, box = found
    assert comp.source == "single" and box.source == "default-box"
    expected = np.zeros_like(sem, bool)
    expected[11:19, 4:10] = True  # box cols [4, 12) minus the component's cols 10, 11
    assert np.array_equal(box.mask, expected) and not (comp.mask & box.mask).any()


def test_overlapping_default_boxes_split_by_nearest_point() -> None:
    sem = np.zeros((20, 20), np.uint8)
    found, _ = points_first_instances(sem, np.array([[10, 6], [10, 9]]), np.array([1, 1]), min_area=1, default_box=6)
    a, b = found  # boxes cols [3, 9) and [6, 12); cols 6, 7 nearer x = 6, col 8 nearer x = 9
    assert set(np.nonzero(a.mask)[1]) == {3, 4, 5, 6, 7} and set(np.nonzero(b.mask)[1]) == {8, 9, 10, 11}


def test_point_on_a_component_of_another_class_is_unmatched() -> None:
    sem = np.zeros((30, 30), np.uint8)
    sem[5:15, 5:15] = 1
    found, stats = points_first_instances(sem, np.array([[10, 10]]), np.array([2]), min_area=1, default_box=None)
    assert found == [] and stats.unmatched_points == 1 and stats.no_point == 0


def test_component_under_min_area_is_skipped_and_its_point_gets_a_box() -> None:
    sem = np.zeros((20, 20), np.uint8)
    sem[0:7, 0:7] = 1  # 49 px < 50
    found, stats = points_first_instances(sem, np.array([[3, 3]]), np.array([1]), min_area=50, default_box=None)
    assert found == [] and stats.too_small == 1 and stats.unmatched_points == 1
    (inst,), _ = points_first_instances(sem, np.array([[3, 3]]), np.array([1]), min_area=50, default_box=4)
    assert inst.source == "default-box" and inst.mask.sum() == 16
    sem[7, 0] = 1  # 50 px: accepted
    (inst,), _ = points_first_instances(sem, np.array([[3, 3]]), np.array([1]), min_area=50)
    assert inst.source == "single" and inst.mask.sum() == 50


def test_component_without_point_is_ignored() -> None:
    sem = np.zeros((20, 20), np.uint8)
    sem[1:5, 1:5] = 1
    sem[10:15, 10:15] = 1  # no point
    (inst,), stats = points_first_instances(sem, np.array([[2, 2]]), np.array([1]), min_area=1)
    assert inst.mask.sum() == 16 and stats.no_point == 1 and stats.single == 1


def test_three_points_in_one_component_give_three_voronoi_parts() -> None:
    sem = np.ones((9, 9), np.uint8)
    pts = np.array([[0, 0], [0, 8], [8, 4]])
    found, stats = points_first_instances(sem, pts, np.array([1, 1, 1]), min_area=1)
    assert len(found) == 3 and stats.separated_points == 3
    owner = sum((k + 1) * i.mask.astype(int) for k, i in enumerate(found))
    assert (owner > 0).all()  # a partition of the component
    yy, xx = np.mgrid[:9, :9]
    d = np.stack([(yy - y) ** 2 + (xx - x) ** 2 for y, x in pts])
    assert np.array_equal(owner - 1, np.argmin(d, axis=0))


def test_ties_go_to_the_lowest_point_index() -> None:
    sem = np.zeros((3, 5), np.uint8)
    sem[1, :] = 1  # pixels (1, 0..4); points at x = 0 and x = 4: x = 2 is equidistant
    for pts, first_owns in [([[1, 0], [1, 4]], {0, 1, 2}), ([[1, 4], [1, 0]], {2, 3, 4})]:
        found, _ = points_first_instances(sem, np.array(pts), np.array([1, 1]), min_area=1)
        assert set(np.nonzero(found[0].mask)[1]) == first_owns
    assert np.array_equal(nearest_point(np.zeros(3), np.array([0.0, 2, 4]), np.array([[0, 0], [0, 4]])), [0, 0, 1])


def test_duplicate_points_leave_the_second_without_pixels() -> None:
    sem = np.ones((4, 4), np.uint8)
    found, stats = points_first_instances(sem, np.array([[1, 1], [1, 1]]), np.array([1, 1]), min_area=1)
    assert [i.point for i in found] == [0] and found[0].mask.all() and stats.empty_parts == 1


def test_masks_are_disjoint_and_at_most_one_per_point() -> None:
    sem = np.zeros((30, 30), np.uint8)
    sem[2:12, 2:22] = 1
    sem[15:25, 5:15] = 2
    pts = np.array([[5, 4], [5, 15], [20, 10], [22, 16], [40, 40]])  # (22, 16): box over instance 2
    found, stats = points_first_instances(sem, pts, np.array([1, 1, 2, 1, 2]), min_area=1)
    assert [i.point for i in found] == [0, 1, 2, 3] and stats.points_outside_image == 1
    assert sum(i.mask.astype(int) for i in found).max() == 1


def test_bestie_drops_the_touching_pair_that_s2i_keeps() -> None:
    """Table 6's premise: "semantic results first" (BESTIE) loses adjacent objects, "points first" keeps them."""
    sem, pts, cls = _touching_pair()
    bestie, bstats = pseudo_instances(sem, pts, cls, min_area=1)
    s2i, _ = points_first_instances(sem, pts, cls, min_area=1)
    assert len(bestie) == 0 and bstats.several_cues == 1 and len(s2i) == 2


def test_stats_add_and_to_dict() -> None:
    a, b = S2IStats(single=1, default_boxes=2), S2IStats(single=2, too_small=1)
    a.add(b)
    assert a.to_dict()["single"] == 3 and a.to_dict()["default_boxes"] == 2 and a.to_dict()["too_small"] == 1
