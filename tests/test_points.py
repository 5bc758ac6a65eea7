"""Point sampling: modes, determinism per (seed, image, annotation), and crowd exclusion."""

import numpy as np
import pytest

from datasets.points import Target, points_for_targets, sample_points


def _target(mask, image_id=1, annotation_id=1):
    return Target(image_id=image_id, annotation_id=annotation_id, category_id=3, isthing=True, mask=mask)


def test_center_point_is_the_mask_pixel_nearest_the_centroid():
    mask = np.zeros((7, 7), bool)
    mask[1:6, 1:6] = True  # centroid (3, 3) is in the mask
    assert sample_points(_target(mask), mode="center", seed=0) == [(3, 3)]


def test_center_point_of_a_ring_lies_on_the_ring():
    mask = np.zeros((9, 9), bool)
    mask[1:8, 1:8] = True
    mask[2:7, 2:7] = False  # centroid (4, 4) is outside the mask
    (x, y), = sample_points(_target(mask), mode="center", seed=0)
    assert mask[y, x]
    # nearest ring pixels to (4,4) are at distance 3; first in row-major order is (4, 1)
    assert (x, y) == (4, 1)


@pytest.mark.parametrize("mode", ["uniform", "p10"])
def test_sampled_points_lie_inside_the_mask(mode):
    rng = np.random.default_rng(0)
    mask = rng.random((20, 20)) > 0.7
    for x, y in sample_points(_target(mask), mode=mode, seed=3):
        assert mask[y, x]


def test_p10_gives_ten_distinct_pixels_when_the_mask_is_large_enough():
    mask = np.ones((10, 10), bool)
    pts = sample_points(_target(mask), mode="p10", seed=0, count=10)
    assert len(pts) == 10 and len(set(pts)) == 10


def test_a_point_depends_only_on_seed_image_and_annotation():
    mask = np.ones((30, 30), bool)
    a = sample_points(_target(mask, image_id=5, annotation_id=9), mode="uniform", seed=1)
    others = [_target(mask, image_id=i, annotation_id=j) for i, j in [(1, 1), (5, 8), (6, 9)]]
    together = list(points_for_targets([*others, _target(mask, 5, 9)], mode="uniform", seed=1))
    assert [(p.x, p.y) for p in together if (p.image_id, p.annotation_id) == (5, 9)] == a


def test_different_seeds_move_uniform_points():
    mask = np.ones((50, 50), bool)
    draws = {tuple(sample_points(_target(mask), mode="uniform", seed=s)[0]) for s in range(10)}
    assert len(draws) > 1


def test_uniform_points_are_uniform_over_the_mask():
    mask = np.zeros((2, 2), bool)
    mask[0, :] = True  # two pixels
    xs = [sample_points(_target(mask, annotation_id=k), mode="uniform", seed=0)[0][0] for k in range(2000)]
    assert 0.45 < np.mean(xs) < 0.55


def test_empty_mask_is_an_error_naming_the_record():
    with pytest.raises(ValueError, match="image 4 annotation 7"):
        sample_points(_target(np.zeros((3, 3), bool), image_id=4, annotation_id=7), mode="center", seed=0)
