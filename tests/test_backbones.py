"""Backbone pre-training (the synthetic stand-in for ImageNet weights) and backbone checkpoints:
the classification image stream, the training loop, loading weights into any method, ``backbone_init``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.config.loader import ParamsError, render_profile, validate_params
from bench.paths import backbone_checkpoint
from datasets.synthetic import generate, render_classification_set
from datasets.synthetic.registry import make_params
from methods.backbones import (
    PretrainConfig,
    classification_scores,
    feature_extractor,
    load_backbone_weights,
    pretrain_classifier,
)
from methods.bestie.model import BestieNet

SMALL_VOC = {"image_size": (48, 48), "num_thing_classes": 3}


# ----------------------------------------------------------------------------- the image stream


def test_classification_set_labels_are_the_classes_of_the_annotated_instances() -> None:
    images, labels = render_classification_set("synth-voc", 6, progress=False, **SMALL_VOC)
    assert images.shape == (6, 48, 48, 3) and images.dtype == np.uint8
    assert labels.shape == (6, 3) and set(np.unique(labels)) <= {0.0, 1.0}
    assert (labels.sum(1) >= 1).all()  # every scene holds an instance


def test_classification_set_is_deterministic_and_indexed_by_stream_position() -> None:
    a, la = render_classification_set("synth-voc", 4, progress=False, **SMALL_VOC)
    b, lb = render_classification_set("synth-voc", 2, offset=2, progress=False, **SMALL_VOC)
    np.testing.assert_array_equal(a[2:], b)
    np.testing.assert_array_equal(la[2:], lb)


def test_classification_set_never_repeats_a_dataset_image(tmp_path: Path) -> None:
    """The stream is seeded apart from the splits: none of its images is a train image of the dataset."""
    import cv2

    root = tmp_path / "voc"
    generate("synth-voc", root, progress=False, num_train=4, num_val=0, num_sbd_only=0, **SMALL_VOC)
    train = [cv2.imread(str(p))[..., ::-1] for p in sorted(root.rglob("JPEGImages/*.jpg"))]
    stream, _ = render_classification_set("synth-voc", 4, progress=False, **SMALL_VOC)
    for img in train:  # JPEG round trip: compare with a tolerance far below the difference of two scenes
        assert min(np.abs(img.astype(int) - s.astype(int)).mean() for s in stream) > 10


def test_a_split_name_is_not_a_pretraining_stream() -> None:
    with pytest.raises(ValueError, match="'val' is a split"):
        render_classification_set("synth-voc", 1, stream="val", progress=False, **SMALL_VOC)


def test_coco_like_labels_have_one_column_per_thing_class() -> None:
    params = {"image_size": (48, 48), "num_thing_classes": 4, "num_stuff_classes": 2}
    _, labels = render_classification_set("synth-coco", 3, progress=False, **params)
    assert labels.shape == (3, make_params("synth-coco", **params).num_thing_classes)


# ----------------------------------------------------------------------------- training


def test_learning_rate_warms_up_linearly_then_decays_to_zero_by_cosine() -> None:
    c = PretrainConfig(iterations=100, warmup_fraction=0.1)
    assert c.lr_factor(0) == pytest.approx(0.1) and c.lr_factor(9) == pytest.approx(1.0)
    assert c.lr_factor(10) == pytest.approx(1.0)
    assert c.lr_factor(55) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert c.lr_factor(100) == pytest.approx(0.0)


def test_scores_of_a_perfect_and_an_inverted_classifier() -> None:
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], np.float32)
    perfect = classification_scores(labels * 0.8 + 0.1, labels)
    assert perfect == {"mAP": 100.0, "label_accuracy": 100.0, "exact_match": 100.0}
    inverted = classification_scores(1 - (labels * 0.8 + 0.1), labels)
    assert inverted["label_accuracy"] == 0.0 and inverted["exact_match"] == 0.0


def _colour_task(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class 0 present = a red square somewhere, class 1 = a blue one: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    images = np.full((n, 32, 32, 3), 128, np.uint8)
    labels = rng.integers(0, 2, (n, 2)).astype(np.float32)
    for i in range(n):
        for c, colour in ((0, (255, 0, 0)), (1, (0, 0, 255))):
            if labels[i, c]:
                y, x = rng.integers(0, 24, 2)
                images[i, y:y + 8, x:x + 8] = colour
    return images, labels


@pytest.mark.slow
def test_pretraining_learns_a_separable_task_and_is_deterministic() -> None:
    images, labels = _colour_task(64, 0)
    val, val_labels = _colour_task(32, 1)
    config = PretrainConfig(iterations=40, batch_size=16, lr=3e-3, eval_every=20)
    runs = []
    for global_seed in (123, 456):  # the global random state before the call does not matter
        torch.manual_seed(global_seed)
        runs.append(pretrain_classifier("resnet10t", images, labels, val, val_labels, config, progress=False))
    first, second = runs
    assert first.metrics["val.mAP"] > 90.0
    assert [h["step"] for h in first.history] == [20.0, 40.0]
    assert first.history == second.history
    for key in first.state_dict:
        assert torch.equal(first.state_dict[key], second.state_dict[key]), key


# ----------------------------------------------------------------------------- checkpoints


def test_a_full_checkpoint_loads_into_an_extractor_of_fewer_levels(tmp_path: Path) -> None:
    torch.manual_seed(0)
    full = feature_extractor("resnet10t")
    torch.save(full.state_dict(), tmp_path / "resnet10t.pt")
    torch.manual_seed(1)
    net = BestieNet(3, 2, backbone="resnet10t", out_indices=(1, 2), decoder_channels=8, head_channels=8,
                    backbone_weights=tmp_path / "resnet10t.pt")
    for key, value in net.backbone.state_dict().items():
        assert torch.equal(value, full.state_dict()[key]), key


def test_missing_checkpoint_names_the_parameter_and_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"segmentor.backbone_weights: .*nope.pt does not exist"):
        load_backbone_weights(feature_extractor("resnet10t"), tmp_path / "nope.pt", param="segmentor.backbone_weights")


def test_checkpoint_of_another_model_is_rejected_naming_missing_keys(tmp_path: Path) -> None:
    torch.save({"fc.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="lacks .* keys of the feature extractor"):
        load_backbone_weights(feature_extractor("resnet10t"), tmp_path / "other.pt")


@pytest.mark.parametrize("init,expected", [
    ("scratch", None),
    ("pretrain", "runs/voc/pretrain/regnetx_002.pt"),
    ("weights/imagenet", "weights/imagenet/regnetx_002.pt"),
])
def test_backbone_init_names_a_checkpoint_per_backbone(init: str, expected: str | None) -> None:
    assert backbone_checkpoint("voc", init, "regnetx_002") == expected


def test_pretrain_init_requires_the_backbone_to_be_pretrained() -> None:
    raw = render_profile("embedded")
    raw["mdm"]["resnet_backbone_init"] = "pretrain"  # the ResNet row's resnet18 is not in pretrain.backbones
    with pytest.raises(ParamsError, match=r"mdm.resnet_backbone_init: pretrain needs backbone 'resnet18'"):
        validate_params(raw)
    raw["pretrain"]["backbones"] = ["regnetx_002", "resnet18"]
    validate_params(raw)
