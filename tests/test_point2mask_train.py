"""Point2Mask's network and training loop (methods/point2mask/model.py, train.py): hand cases."""

import numpy as np
import pytest
import torch

from methods.point2mask import Point2MaskConfig
from methods.point2mask.train import Sample, TrainConfig, build_model, panoptic_targets, predict_panoptic, train_point2mask

TINY = dict(backbone="resnet18", out_indices=(1, 2), decoder_channels=16, head_channels=16, neck_channels=8,
            batch_size=4, lr=3e-3, weight_decay=0.0, center_sigma=2.0, nms_kernel=5, min_area=4, stuff_min_area=4)


def _scene(k: int, size: int = 32) -> Sample:
    """A grey background (stuff, class 0) with one bright square (thing, class 1) and its two points."""
    rng = np.random.default_rng(k)
    image = np.full((size, size, 3), 60, np.uint8)
    y, x = rng.integers(2, size - 14, 2)
    image[y:y + 12, x:x + 12] = (220, 40, 40)
    gt = np.ones((size, size), np.int32)  # segment 1 = background, 2 = the square
    gt[y:y + 12, x:x + 12] = 2
    points = np.array([[y + 6, x + 6], [0 if y > 10 else size - 1, 0]], np.int64)  # (y, x): thing, stuff
    return Sample(image, points, np.array([1, 0]), f"image {k}", gt, np.array([0, 1]))


def test_panoptic_targets_of_a_hand_map():
    segments = np.zeros((5, 6), np.int32)
    segments[:, :3] = 1  # stuff, class 0
    segments[1:4, 3:6] = 2  # thing, class 2 (centre of mass (2, 4))
    targets = panoptic_targets(segments, np.array([0, 2]), np.array([False, False, True]), np.array([-1, -1, 0]),
                               sigma=1.0)
    assert (targets["semantic"][:, :3] == 0).all() and (targets["semantic"][1:4, 3:] == 2).all()
    assert targets["semantic"][0, 4] == 255  # void
    assert targets["center"].shape == (1, 5, 6) and targets["center"][0, 2, 4] == pytest.approx(1.0)
    assert targets["offset"][:, 1, 3].tolist() == [1.0, 1.0]  # (dy, dx) from (1, 3) to (2, 4)
    assert targets["offset_weight"].sum() == 9


def test_the_panoptic_segformer_head_is_refused_by_name():
    with pytest.raises(ValueError, match="point2mask.panoptic_head = 'panoptic-segformer'.*not implemented"):
        TrainConfig(panoptic_head="panoptic-segformer")


def test_transferred_weights_keep_fresh_class_heads():
    config, p2m = TrainConfig(**TINY), Point2MaskConfig()
    torch.manual_seed(0)
    source = build_model(5, 3, config, p2m)
    target = build_model(3, 1, config, p2m)  # other classes: the class heads differ in shape
    before = target.semantic_head[-1].weight.clone()
    skipped = target.load_transferred(source.state_dict())
    assert skipped and all(k.startswith(("semantic_head.", "center_head.", "weak_semantic_head.")) for k in skipped)
    assert torch.equal(target.neck[0].weight, source.neck[0].weight)
    assert torch.equal(target.semantic_head[-1].weight, before)


def test_points_training_runs_the_pseudo_branch_and_lowers_l_sem():
    samples = [_scene(k) for k in range(4)]
    config = TrainConfig(**TINY, iterations=12, sem_loss_stride=1)
    result = train_point2mask(samples, num_semantic=2, thing_classes=[1], config=config,
                              p2m=Point2MaskConfig(point_square=3), supervision="points")
    history = result.history
    assert {"sem", "bou", "full", "full_center", "full_offset"} <= set(history[0])
    assert result.pseudo_seconds > 0 and result.seconds > result.pseudo_seconds
    assert np.mean([h["sem"] for h in history[-3:]]) < np.mean([h["sem"] for h in history[:3]])


def test_fully_supervised_training_learns_the_squares():
    samples = [_scene(k) for k in range(4)]
    config = TrainConfig(**TINY, iterations=40)
    result = train_point2mask(samples, num_semantic=2, thing_classes=[1], config=config, p2m=Point2MaskConfig(),
                              supervision="full")
    assert result.pseudo_seconds == 0 and "sem" not in result.history[0]
    ious = []
    for s in samples:
        segments, instances = predict_panoptic(result.model, s.image, [1], [0], config)
        truth = s.gt_segments == 2
        found = [m for m, c in segments if c == 1]
        best = max((np.logical_and(m, truth).sum() / np.logical_or(m, truth).sum() for m in found), default=0.0)
        ious.append(best)
    assert np.mean(ious) > 0.5, ious  # a trivial prediction (no thing) scores 0
