"""SOLOv2 (methods/segmentor/solov2.py): helpers on hand-checkable inputs, API contract, tiny training.

Models here are tiny (timm ``resnet10t`` FPN of 32 channels, 64-px images, 4 small grids) so the
file runs in seconds on two CPU cores.
"""

from __future__ import annotations

import math

import pytest
import torch

from methods.segmentor.backbone import TimmFPN
from methods.segmentor.solov2 import (
    LevelTargets,
    SOLOv2,
    SOLOv2Config,
    assign_targets,
    center_of_mass,
    dice_loss,
    masks_to_boxes,
    matrix_nms,
    points_nms,
)

TINY = dict(
    grids=(8, 6, 4, 3),
    scale_ranges=((1, 24), (12, 48), (24, 96), (48, 128)),
    head_channels=32,
    head_convs=2,
    mask_feat_channels=32,
    mask_out_channels=32,
    norm_groups=8,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed: int = 0, num_classes: int = 3, **overrides: object) -> SOLOv2:
    torch.manual_seed(seed)
    backbone = TimmFPN("resnet10t", out_channels=32, extra_pool=False)
    return SOLOv2(num_classes, backbone, min_size=64, max_size=96, **{**TINY, **overrides})


def rect_mask(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    m = torch.zeros(h, w, dtype=torch.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def two_rectangles() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A 64x64 image with a red 20x24 and a green 24x28 rectangle, and their targets."""
    g = torch.Generator().manual_seed(0)
    img = 0.05 * torch.rand(3, 64, 64, generator=g)
    img[0, 8:28, 10:34] = 1.0
    img[1, 36:60, 30:58] = 1.0
    masks = torch.stack([rect_mask(64, 64, 8, 28, 10, 34), rect_mask(64, 64, 36, 60, 30, 58)])
    target = {
        "boxes": torch.tensor([[10.0, 8, 34, 28], [30, 36, 58, 60]]),
        "labels": torch.tensor([1, 2]),
        "masks": masks,
    }
    return img, target


# ------------------------------------------------------------------------------------------------
# Matrix NMS
# ------------------------------------------------------------------------------------------------


def row_masks(*spans: tuple[int, int], width: int = 10) -> torch.Tensor:
    """1 x width masks covering the half-open column spans."""
    out = torch.zeros(len(spans), 1, width, dtype=torch.bool)
    for i, (a, b) in enumerate(spans):
        out[i, 0, a:b] = True
    return out


def test_matrix_nms_identical_masks_decay_the_lower_score() -> None:
    masks = row_masks((0, 4), (0, 4))
    scores = torch.tensor([0.9, 0.8])
    labels = torch.tensor([1, 1])
    gauss = matrix_nms(masks, labels, scores, kernel="gaussian", sigma=2.0)
    linear = matrix_nms(masks, labels, scores, kernel="linear")
    assert gauss[0] == pytest.approx(0.9)
    assert gauss[1] == pytest.approx(0.8 * math.exp(-2.0))  # IoU 1
    assert linear.tolist() == pytest.approx([0.9, 0.0])


def test_matrix_nms_leaves_disjoint_masks_and_other_classes_untouched() -> None:
    disjoint = matrix_nms(row_masks((0, 4), (5, 9)), torch.tensor([1, 1]), torch.tensor([0.9, 0.8]))
    assert disjoint.tolist() == pytest.approx([0.9, 0.8])
    other_class = matrix_nms(row_masks((0, 4), (0, 4)), torch.tensor([1, 2]), torch.tensor([0.9, 0.8]))
    assert other_class.tolist() == pytest.approx([0.9, 0.8])


def test_matrix_nms_gaussian_and_linear_formulas_on_two_masks() -> None:
    # A = cols 0..3, B = cols 2..5: intersection 2, union 6, IoU 1/3. B is given first (input order kept).
    masks = row_masks((2, 6), (0, 4))
    labels = torch.tensor([3, 3])
    scores = torch.tensor([0.6, 0.9])
    gauss = matrix_nms(masks, labels, scores, kernel="gaussian", sigma=2.0)
    linear = matrix_nms(masks, labels, scores, kernel="linear")
    assert gauss.tolist() == pytest.approx([0.6 * math.exp(-2.0 / 9.0), 0.9])
    assert linear.tolist() == pytest.approx([0.6 * (1 - 1 / 3), 0.9])


def test_matrix_nms_compensates_masks_that_are_themselves_suppressed() -> None:
    # A > B > C; IoU(A,B) = 0.5, IoU(B,C) = 0.25, IoU(A,C) = 0: B is decayed, but C is not, because
    # B's own overlap with A (0.5) exceeds its overlap with C (paper Sec. 3.3 compensation term).
    masks = row_masks((0, 6), (2, 8), (6, 10))
    out = matrix_nms(masks, torch.tensor([1, 1, 1]), torch.tensor([0.9, 0.8, 0.7]))
    assert out.tolist() == pytest.approx([0.9, 0.8 * math.exp(-2 * 0.25), 0.7])


# ------------------------------------------------------------------------------------------------
# Dice loss, small helpers
# ------------------------------------------------------------------------------------------------


def test_dice_loss_is_zero_for_perfect_and_one_for_disjoint_masks() -> None:
    target = torch.stack([rect_mask(8, 8, 0, 4, 0, 4), rect_mask(8, 8, 0, 4, 0, 4)]).float()
    pred = torch.stack([target[0], rect_mask(8, 8, 4, 8, 4, 8).float()])
    loss = dice_loss(pred, target)
    assert loss[0].item() == pytest.approx(0.0, abs=1e-4)
    assert loss[1].item() == pytest.approx(1.0)


def test_points_nms_keeps_only_local_maxima_of_2x2_windows() -> None:
    heat = torch.tensor([[0.2, 0.9], [0.5, 0.1]])[None, None]
    # each cell is compared with its window of itself and the cells above / left of it
    assert points_nms(heat)[0, 0].flatten().tolist() == pytest.approx([0.2, 0.9, 0.5, 0.0])


def test_center_of_mass_and_mask_boxes() -> None:
    m = rect_mask(10, 12, 2, 6, 3, 9)[None]
    assert center_of_mass(m)[0].tolist() == pytest.approx([3.5, 5.5])
    boxes = masks_to_boxes(torch.cat([m, torch.zeros_like(m)]))
    assert boxes.tolist() == [[3.0, 2.0, 9.0, 6.0], [0.0, 0.0, 0.0, 0.0]]


# ------------------------------------------------------------------------------------------------
# Target assignment
# ------------------------------------------------------------------------------------------------


def assign_one(mask: torch.Tensor, box: list[float], *, sigma: float = 0.2, weight: float | None = None,
               grids: tuple[int, ...] = (8,), ranges: tuple[tuple[float, float], ...] = ((1, 100),),
               ) -> list[LevelTargets]:
    weights = None if weight is None else torch.tensor([weight])
    return assign_targets(torch.tensor([box]), torch.tensor([2]), mask[None], weights,
                          grids=grids, scale_ranges=ranges, sigma=sigma)


def positive_cells(labels: torch.Tensor, s: int) -> set[tuple[int, int]]:
    return {(int(i) // s, int(i) % s) for i in (labels > 0).nonzero().flatten()}


def test_small_object_centred_in_a_cell_marks_only_that_cell() -> None:
    # 64x64 image, 8x8 grid of 8-px cells; an 8x8 object on cell (4, 2), sigma box of +-0.8 px.
    level = assign_one(rect_mask(64, 64, 32, 40, 16, 24), [16, 32, 24, 40])[0]
    assert positive_cells(level.labels, 8) == {(4, 2)}
    assert int(level.labels[4 * 8 + 2]) == 2
    assert int(level.instance[4 * 8 + 2]) == 0
    assert int((level.instance >= 0).sum()) == 1


def test_centre_region_follows_sigma_box_and_is_capped_to_3x3() -> None:
    mask = rect_mask(64, 64, 16, 48, 16, 48)  # centre of mass (31.5, 31.5) -> cell (3, 3)
    box = [16, 16, 48, 48]
    # sigma 0.2: half-size 3.2 px -> rows/cols 28.3..34.7 -> cells 3..4
    assert positive_cells(assign_one(mask, box, sigma=0.2)[0].labels, 8) == {(3, 3), (3, 4), (4, 3), (4, 4)}
    # sigma 1.0: 15.5..47.5 -> cells 1..5, capped to the 3x3 neighbourhood 2..4
    cells = positive_cells(assign_one(mask, box, sigma=1.0)[0].labels, 8)
    assert cells == {(i, j) for i in (2, 3, 4) for j in (2, 3, 4)}


def test_object_goes_to_the_level_whose_scale_range_holds_it() -> None:
    grids, ranges = (8, 4), ((1, 16), (17, 64))
    small = assign_one(rect_mask(64, 64, 8, 16, 8, 16), [8, 8, 16, 16], grids=grids, ranges=ranges)
    large = assign_one(rect_mask(64, 64, 8, 40, 8, 40), [8, 8, 40, 40], grids=grids, ranges=ranges)
    assert [bool((lv.labels > 0).any()) for lv in small] == [True, False]
    assert [bool((lv.labels > 0).any()) for lv in large] == [False, True]


def test_instance_weights_propagate_to_its_positive_cells_only() -> None:
    level = assign_one(rect_mask(64, 64, 32, 40, 16, 24), [16, 32, 24, 40], weight=0.3)[0]
    pos = level.labels > 0
    assert level.weights[pos].tolist() == pytest.approx([0.3])
    assert bool((level.weights[~pos] == 1).all())


# ------------------------------------------------------------------------------------------------
# Model contract
# ------------------------------------------------------------------------------------------------


def test_config_defaults_are_the_paper_ones_and_unknown_options_raise() -> None:
    cfg = SOLOv2Config()
    assert cfg.grids == (40, 36, 24, 16, 12)
    assert cfg.scale_ranges[0] == (1.0, 96.0) and cfg.scale_ranges[-1] == (384.0, 2048.0)
    assert (cfg.sigma, cfg.mask_loss_weight, cfg.focal_alpha, cfg.focal_gamma) == (0.2, 3.0, 0.25, 2.0)
    assert ((cfg.nms_kernel, cfg.nms_sigma, cfg.score_thr, cfg.update_thr, cfg.nms_pre)
            == ("gaussian", 2.0, 0.1, 0.05, 500))
    with pytest.raises(TypeError):
        tiny_model(no_such_option=1)


def test_eval_outputs_at_original_size_for_images_of_different_sizes() -> None:
    # Permissive thresholds so the untrained model returns detections.
    model = tiny_model(score_thr=0.0, mask_thr=0.0, update_thr=0.0, max_per_img=5).eval()
    images = [torch.rand(3, 48, 64), torch.rand(3, 70, 40)]
    with torch.no_grad():
        outputs = model(images)
    assert len(outputs) == 2
    for out, img in zip(outputs, images):
        n = out["scores"].shape[0]
        assert 1 <= n <= 5
        assert out["masks"].shape == (n, 1, *img.shape[-2:])
        assert out["masks"].dtype == torch.float32 and 0 <= out["masks"].min() and out["masks"].max() <= 1
        assert out["boxes"].shape == (n, 4)
        assert out["labels"].dtype == torch.int64 and set(out["labels"].tolist()) <= {1, 2}
        assert bool((out["scores"][:-1] >= out["scores"][1:]).all())
        assert float(out["boxes"][:, 2].max()) <= img.shape[-1] and float(out["boxes"][:, 3].max()) <= img.shape[-2]


def test_eval_with_no_detection_returns_empty_tensors_of_the_right_shape() -> None:
    model = tiny_model(score_thr=0.99).eval()
    with torch.no_grad():
        out = model([torch.rand(3, 50, 30)])[0]
    assert out["masks"].shape == (0, 1, 50, 30)
    assert out["boxes"].shape == (0, 4) and out["labels"].shape == (0,) and out["scores"].shape == (0,)


def test_training_batch_of_mixed_sizes_gives_finite_float32_losses_under_autocast() -> None:
    model = tiny_model().train()
    img, target = two_rectangles()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
             "masks": torch.zeros(0, 50, 70, dtype=torch.uint8)}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model([img, torch.rand(3, 50, 70)], [target, empty])
    assert set(losses) == {"loss_cate", "loss_mask"}
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


def test_same_seed_gives_the_same_loss_on_cpu() -> None:
    img, target = two_rectangles()
    first = tiny_model(seed=3).train()([img], [target])
    second = tiny_model(seed=3).train()([img], [target])
    for key in first:
        assert torch.equal(first[key], second[key])


def test_weight_zero_instance_contributes_no_loss() -> None:
    model = tiny_model().train()
    img, target = two_rectangles()
    holed = target["masks"].clone()
    holed[1, 44:52, 40:48] = 0  # same box and centre of mass -> same cells, different mask

    def losses(labels: list[int], masks: torch.Tensor, weights: list[float]) -> dict[str, torch.Tensor]:
        t = {**target, "labels": torch.tensor(labels), "masks": masks, "weights": torch.tensor(weights)}
        with torch.no_grad():
            return model([img], [t])

    base = losses([1, 2], target["masks"], [1.0, 0.0])
    changed = losses([1, 1], holed, [1.0, 0.0])
    assert base["loss_cate"].item() == pytest.approx(changed["loss_cate"].item(), rel=1e-6)
    assert base["loss_mask"].item() == pytest.approx(changed["loss_mask"].item(), rel=1e-6)
    counted = losses([1, 1], holed, [1.0, 1.0])  # with weight 1 the same change matters
    assert counted["loss_cate"].item() != pytest.approx(base["loss_cate"].item(), rel=1e-3)
    assert counted["loss_mask"].item() != pytest.approx(base["loss_mask"].item(), rel=1e-3)


# ------------------------------------------------------------------------------------------------
# Tiny training
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def overfit() -> tuple[list[dict[str, float]], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Train a tiny model 25 Adam steps on the two-rectangle image; return losses and a prediction."""
    model = tiny_model().train()
    img, target = two_rectangles()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    history: list[dict[str, float]] = []
    for _ in range(25):
        losses = model([img], [target])
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        history.append({k: v.item() for k, v in losses.items()})
    model.eval()
    with torch.no_grad():
        prediction = model([img])[0]
    return history, target, prediction


@pytest.mark.slow
def test_training_reduces_both_losses(overfit) -> None:
    history, _, _ = overfit
    for key in ("loss_cate", "loss_mask"):
        assert history[-1][key] < 0.2 * history[0][key]


@pytest.mark.slow
def test_overfit_model_finds_both_rectangles(overfit) -> None:
    _, target, pred = overfit
    binary = pred["masks"][:, 0] > 0.5
    for gt, label in zip(target["masks"].bool(), target["labels"].tolist()):
        inter = (binary & gt).sum((1, 2)).float()
        union = (binary | gt).sum((1, 2)).float()
        matched = (inter / union > 0.5) & (pred["labels"] == label)
        assert bool(matched.any())
        assert float(pred["scores"][matched].max()) > 0.3
