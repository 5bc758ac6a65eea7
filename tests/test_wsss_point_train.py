"""Point-supervised semantic training (methods/wsss/point_train.py): Point2Mask Eq. 5 loop."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from methods.wsss import point_train as pt
from methods.wsss.point_train import (
    PointWsssConfig,
    compute_losses,
    point_label_maps,
    predict_semantic,
    train_point_wsss,
)

# Small, fast network for every test: resnet18 stem + layer1-2, 16-channel decoder.
FAST = dict(out_indices=(1, 2), decoder_channels=16, device="cpu", batch_size=4, lr=3e-3, loss_stride=1,
            point_square=3)


def _two_class_set(n: int = 8, size: int = 32, seed: int = 0):
    """Images with a dark background (class 0) and one bright rectangle (class 1), one point each."""
    rng = np.random.default_rng(seed)
    images, points = [], []
    for _ in range(n):
        im = np.full((size, size, 3), 30, np.uint8) + rng.integers(0, 10, (size, size, 3), dtype=np.uint8)
        y0, x0 = rng.integers(2, size // 2, 2)
        h, w = rng.integers(size // 4, size // 2 + 1, 2)
        im[y0:y0 + h, x0:x0 + w] = (220, 60, 40)
        pm = np.full((size, size), 255, np.uint8)
        pm[y0 + h // 2, x0 + w // 2] = 1
        by, bx = (size - 2, size - 2) if y0 + h < size - 2 or x0 + w < size - 2 else (1, 1)
        pm[by, bx] = 0
        images.append(im)
        points.append(pm)
    return images, points


def test_loss_decreases_on_two_class_set():
    images, points = _two_class_set()
    losses: list[float] = []
    cfg = PointWsssConfig(iterations=30, seed=0, **{**FAST, "loss_stride": 2})
    model = train_point_wsss(images=images, point_maps=points, num_classes=2, config=cfg, progress=False,
                             on_step=lambda s, v: losses.append(v["loss"]))
    assert len(losses) == 30 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert not model.training
    preds = predict_semantic(model, images, batch_size=3)
    assert len(preds) == 8 and all(p.dtype == np.uint8 and p.shape == (32, 32) for p in preds)


def test_same_seed_same_predictions_and_different_seed_differs():
    images, points = _two_class_set(n=6)

    def run(seed):
        cfg = PointWsssConfig(iterations=6, seed=seed, **FAST)
        model = train_point_wsss(images=images, point_maps=points, num_classes=2, config=cfg, progress=False)
        params = torch.cat([p.detach().flatten() for p in model.parameters()])
        return predict_semantic(model, images), params

    before = torch.are_deterministic_algorithms_enabled()  # other tests in this process may have set it
    (p1, w1), (p2, w2), (_, w3) = run(0), run(0), run(1)
    assert all(np.array_equal(a, b) for a, b in zip(p1, p2))
    assert torch.equal(w1, w2)
    assert not torch.equal(w1, w3)
    assert torch.are_deterministic_algorithms_enabled() == before  # restored after training


@pytest.mark.parametrize("use_lab,use_rgb", [(False, False), (True, False), (False, True), (True, True)])
def test_switches_select_the_computed_terms(monkeypatch, use_lab, use_rgb):
    calls = {"lab": 0, "rgb": 0}
    lab, rgb = pt.lab_pairwise_loss, pt.rgb_tree_loss

    def lab_spy(*a, **k):
        calls["lab"] += 1
        return lab(*a, **k)

    def rgb_spy(*a, **k):
        calls["rgb"] += 1
        return rgb(*a, **k)

    monkeypatch.setattr(pt, "lab_pairwise_loss", lab_spy)
    monkeypatch.setattr(pt, "rgb_tree_loss", rgb_spy)
    images, points = _two_class_set(n=4, size=16)
    keys: list[set] = []
    cfg = PointWsssConfig(iterations=2, use_lab=use_lab, use_rgb=use_rgb, **FAST)
    train_point_wsss(images=images, point_maps=points, num_classes=2, config=cfg, progress=False,
                     on_step=lambda s, v: keys.append(set(v)))
    assert calls == {"lab": 2 * use_lab, "rgb": 2 * use_rgb}
    expected = {"loss", "partial"} | ({"lab"} if use_lab else set()) | ({"rgb"} if use_rgb else set())
    assert keys == [expected, expected]


def test_total_is_weighted_sum():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 16, 16)
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    labels = torch.full((2, 16, 16), 255)
    labels[0, 3, 3], labels[1, 10, 12] = 2, 0
    cfg = PointWsssConfig(alpha_lab=2.0, alpha_rgb=5.0, loss_stride=1, point_square=3)
    out = compute_losses(logits, images, labels, cfg)
    assert torch.allclose(out["loss"], out["partial"] + 2 * out["lab"] + 5 * out["rgb"])
    half = compute_losses(logits, images, labels, PointWsssConfig(loss_stride=2, point_square=3))
    assert set(half) == {"loss", "partial", "lab", "rgb"} and torch.isfinite(half["loss"])


def test_nan_guard_reports_the_step(monkeypatch):
    real = pt.partial_cross_entropy
    count = {"n": 0}

    def flaky(logits, labels, **k):
        count["n"] += 1
        out = real(logits, labels, **k)
        return out * float("nan") if count["n"] == 3 else out

    monkeypatch.setattr(pt, "partial_cross_entropy", flaky)
    images, points = _two_class_set(n=4, size=16)
    cfg = PointWsssConfig(iterations=5, use_lab=False, use_rgb=False, **FAST)
    before = torch.are_deterministic_algorithms_enabled()  # other tests in this process may have set it
    with pytest.raises(FloatingPointError, match="step 3"):
        train_point_wsss(images=images, point_maps=points, num_classes=2, config=cfg, progress=False)
    assert torch.are_deterministic_algorithms_enabled() == before  # restored after the failed run


def test_input_checks():
    images, points = _two_class_set(n=2, size=16)
    cfg = PointWsssConfig(iterations=1, **FAST)
    with pytest.raises(ValueError, match="outside"):
        train_point_wsss(images=images, point_maps=points, num_classes=1, config=cfg, progress=False)
    with pytest.raises(ValueError, match="differs"):
        train_point_wsss(images=[images[0], images[1][:8]], point_maps=[points[0], points[1][:8]], num_classes=2,
                         config=cfg, progress=False)
    with pytest.raises(ValueError):
        PointWsssConfig(point_square=4)
    with pytest.raises(FrozenInstanceError):
        cfg.lr = 1.0  # type: ignore[misc]


def test_point_label_maps_put_class_at_y_x():
    infos = [SimpleNamespace(id=7, height=10, width=12), SimpleNamespace(id=9, height=5, width=6)]
    split = SimpleNamespace(name="train", __iter__=None)
    split = type("Split", (), {"name": "train", "__iter__": lambda self: iter(infos)})()
    classes = [30, 10, 20]  # semantic index = position of the category id
    dataset = SimpleNamespace(semantic_index=classes.index, split=lambda name: split)
    points = {"points": [
        {"id": 1, "image_id": 7, "category_id": 20, "x": 11, "y": 2},
        {"id": 2, "image_id": 7, "category_id": 30, "x": 0, "y": 9},
        {"id": 3, "image_id": 9, "category_id": 10, "x": 5, "y": 0},
    ]}
    maps = point_label_maps(points, split, dataset)
    assert set(maps) == {7, 9}
    assert maps[7].shape == (10, 12) and maps[7].dtype == np.uint8
    assert maps[7][2, 11] == 2 and maps[7][9, 0] == 0 and maps[9][0, 5] == 1
    assert (maps[7] != 255).sum() == 2 and (maps[9] != 255).sum() == 1
    assert point_label_maps(points, "train", dataset)[7][2, 11] == 2  # split given by name
    with pytest.raises(ValueError, match="outside"):
        point_label_maps({"points": [{"image_id": 9, "category_id": 10, "x": 6, "y": 0}]}, split, dataset)
    with pytest.raises(ValueError, match="not in split"):
        point_label_maps({"points": [{"image_id": 1, "category_id": 10, "x": 0, "y": 0}]}, split, dataset)


def test_pairwise_ramp_rises_linearly_over_the_warmup_then_stays_at_one():
    from methods.wsss.point_train import pairwise_ramp

    config = PointWsssConfig(iterations=10, pairwise_warmup=0.5)  # 5 warm-up steps
    assert [pairwise_ramp(step, config) for step in (1, 2, 5, 6, 10)] == [0.2, 0.4, 1.0, 1.0, 1.0]
    assert pairwise_ramp(1, PointWsssConfig(iterations=10, pairwise_warmup=0.0)) == 1.0


def test_a_zero_pairwise_scale_leaves_only_the_partial_ce():
    from methods.wsss.point_train import compute_losses

    torch.manual_seed(0)
    logits = torch.randn(1, 3, 16, 16)
    images = torch.full((1, 3, 16, 16), 128, dtype=torch.uint8)  # one colour: every pair is "similar"
    labels = torch.full((1, 16, 16), 255, dtype=torch.long)
    labels[0, 8, 8] = 1
    config = PointWsssConfig(loss_stride=1, point_square=1)
    losses = compute_losses(logits, images, labels, config, pairwise_scale=0.0)
    assert losses["lab"] > 0 and losses["rgb"] > 0
    assert torch.equal(losses["loss"], losses["partial"])
