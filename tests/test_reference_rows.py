"""Oracle grouping: the ground-truth semantic map split among each class's points by nearest point."""

import numpy as np

from methods.reference import group_by_nearest_point


def test_a_class_region_is_split_at_the_midpoint_between_its_points():
    semantic = np.array([[1, 1, 1, 1, 1, 1]])
    points = np.array([[0, 0], [5, 0]])  # (x, y)
    out = group_by_nearest_point(semantic, points, np.array([1, 1]))
    assert out.tolist() == [[1, 1, 1, 2, 2, 2]]


def test_ties_go_to_the_lower_point_index():
    semantic = np.array([[1, 1, 1]])
    out = group_by_nearest_point(semantic, np.array([[0, 0], [2, 0]]), np.array([1, 1]))
    assert out.tolist() == [[1, 1, 2]]  # pixel 1 is 1 from both points


def test_pixels_only_join_points_of_their_own_class():
    semantic = np.array([[1, 1, 2, 2]])
    points = np.array([[3, 0], [0, 0]])  # point 0 is class 1 but sits on class-2 pixels
    out = group_by_nearest_point(semantic, points, np.array([1, 2]))
    assert out.tolist() == [[1, 1, 2, 2]]


def test_void_background_and_classes_without_points_stay_unassigned():
    semantic = np.array([[0, 255, 1, 3]])
    out = group_by_nearest_point(semantic, np.array([[2, 0]]), np.array([1]))
    assert out.tolist() == [[0, 0, 1, 0]]


def test_no_points_gives_an_empty_map():
    out = group_by_nearest_point(np.ones((2, 2), np.uint8), np.zeros((0, 2), np.int64), np.zeros(0, np.int64))
    assert not out.any()
