"""Release mode against a literal re-implementation of the release's pseudo-mask path
(tests/fixtures/point2mask_release.py) on synthetic VOC-like scenes: >= 99.9 % equal pixels."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures.point2mask_release import release_panoptic, release_pseudo_label

from bench.benchmarks.bench_point2mask_ot import run_ours, synthetic_scene
from methods.point2mask import Point2MaskConfig


@pytest.mark.parametrize("size, points", [(128, 6), (192, 10)])
def test_release_mode_matches_the_release(one_thread, size, points):
    scene = synthetic_scene(size, points, seed=points)
    thing_point = scene.is_thing[scene.point_classes]
    masks, semantics = release_pseudo_label(
        scene.probs, scene.boundary_logits, scene.embedding, scene.points_xy[:, ::-1].copy(),
        scene.point_classes, thing_point, int(scene.is_thing.sum()))
    reference = release_panoptic(masks, semantics, scene.point_classes, thing_point)
    ours = run_ours(scene, Point2MaskConfig.release())
    assert set(range(1, points + 1)) <= set(np.unique(reference).tolist())  # every point owns pixels
    assert np.mean(ours == reference) >= 0.999
