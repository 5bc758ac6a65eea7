"""Point2Mask unit numbers (Sec. 3.3.3, Eq. 4, Tables 5-6) on a hand-checkable strip.

Two touching objects of one class fill a 3 x 20 strip (A: columns 0-9, B: 10-19) with nothing
between them; the boundary map is 0.5 everywhere and diagonals are not lengthened, so every edge
costs beta * 0.5 and the cost is the chessboard distance times 0.05. A's point sits at its corner
(row 0, column 0), B's at (row 1, column 15).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from methods.point2mask import Point2MaskConfig, transport_cost, unit_numbers

ROWS, COLS, CLASSES = np.array([0, 1]), np.array([0, 15]), np.array([1, 1])
PROBS = torch.stack([torch.zeros(3, 20), torch.ones(3, 20)])
BOUND = torch.full((1, 3, 20), 0.5)
BASE = Point2MaskConfig(diagonal_sqrt2=False)


def k_of(config: Point2MaskConfig) -> list[float]:
    def cost_from(rows, cols):
        return transport_cost(PROBS, BOUND, None, rows, cols, CLASSES, config)

    consumers = torch.ones(3, 20, dtype=torch.bool)
    return unit_numbers(cost_from(ROWS, COLS), consumers, ROWS, COLS, config, cost_from=cost_from).tolist()


def test_nearest_point_k_is_biased_by_a_corner_point():
    # column x goes to A while x < 15 - x: columns 0-7 (24 pixels), B takes 8-19 (36).
    assert k_of(replace(BASE, unit_number="nearest-point")) == [24.0, 36.0]


def test_nearest_centroid_k_when_the_point_sits_at_the_corner():
    # centroids of the initial masks: A (row 1, column 3), B (row 1, column 13); column 8 is
    # 5 from both, a tie that goes to the first point: A 0-8 (27 pixels), B 9-19 (33).
    assert k_of(BASE) == [27.0, 33.0]


def test_second_centroid_iteration_reaches_the_true_split():
    # centroids (1, 4) and (1, 14); column 9 ties to A: 30 / 30, the objects' true sizes.
    assert k_of(replace(BASE, centroid_iterations=2)) == [30.0, 30.0]


def test_equal_division():
    assert k_of(replace(BASE, unit_number="equal")) == pytest.approx([30.0, 30.0])
