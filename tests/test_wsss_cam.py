"""Image-level CAM / PAM classifier (methods/wsss/cam.py): BESTIE Sec. 3.1 and appendix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from methods.wsss.cam import CamConfig, CamNet, cam_peaks, iter_cams, label_masked_cam, semantic_from_cam, train_cam
from methods.wsss.pam import PeakAttention

# A small, fast classifier for the training tests: resnet18 stem + layer1 (stride 4), 16-channel extra convs.
FAST = dict(feature_index=1, extra_channels=16, input_size=32, batch_size=4, lr=3e-3, device="cpu")


class _FirstChannel(nn.Module):
    """A stand-in backbone: the image's first channel as the (only) feature map."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x[:, :1]]


def _identity_net(use_pam: bool, *, alpha: float = 0.5) -> CamNet:
    """CamNet whose one 3x3 conv and 1x1 classifier are identities: class map = act(feature)."""
    cfg = CamConfig(use_pam=use_pam, pam_alpha=alpha, extra_convs=1, extra_channels=1, pam_layers=(1,))
    net = CamNet(1, cfg, backbone_module=_FirstChannel(), in_channels=1)
    with torch.no_grad():
        net.extra[0].weight.zero_()
        net.extra[0].weight[0, 0, 1, 1] = 1.0
        net.extra[0].bias.zero_()
        net.classifier.weight.fill_(1.0)
        net.classifier.bias.zero_()
    return net


def _squares(n: int = 8, size: int = 32, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Grey images with a red square (class 0), a blue square (class 1), both or neither."""
    rng = np.random.default_rng(seed)
    images, labels = [], np.zeros((n, 2), np.float32)
    for k in range(n):
        im = np.full((size, size, 3), 100, np.uint8) + rng.integers(0, 10, (size, size, 3), dtype=np.uint8)
        for c, colour in ((0, (230, 30, 30)), (1, (30, 30, 230))):
            if (k >> c) & 1:
                y, x = rng.integers(0, size - 10, 2)
                im[y:y + 10, x:x + 10] = colour
                labels[k, c] = 1
        images.append(im)
    return images, labels


# --------------------------------------------------------------------------------- network


def test_logits_are_the_global_average_of_the_class_maps():
    net = _identity_net(use_pam=False)
    x = torch.tensor([[[[-1.0, 2.0], [4.0, 6.0]]]])
    logits, maps = net(x)
    assert torch.equal(maps, torch.tensor([[[[0.0, 2.0], [4.0, 6.0]]]]))  # ReLU between conv and classifier
    assert logits.item() == pytest.approx(3.0)


def test_pam_zeroes_the_last_layer_below_alpha_times_the_channel_max():
    x = torch.tensor([[[[-1.0, 2.0], [4.0, 6.0]]]])
    _, maps = _identity_net(use_pam=True, alpha=0.5)(x)
    assert torch.equal(maps, torch.tensor([[[[0.0, 0.0], [4.0, 6.0]]]]))  # 2 < 0.5 * 6 dropped, 4 kept


@pytest.mark.parametrize("use_pam, pam_layers, expected", [
    (False, (-1,), [nn.ReLU, nn.ReLU, nn.ReLU]),
    (True, (-1,), [nn.ReLU, nn.ReLU, PeakAttention]),  # paper Table 8: the last layer (layer 6) only
    (True, (3,), [nn.ReLU, nn.ReLU, PeakAttention]),  # the same, counted from the front
    (True, (1, 2, 3), [PeakAttention, PeakAttention, PeakAttention]),  # appendix Fig. 10 / release
    (True, (1, 3), [PeakAttention, nn.ReLU, PeakAttention]),  # Table 8's layer 4 + layer 6
    (True, (2,), [nn.ReLU, PeakAttention, nn.ReLU]),  # Table 8's layer 5
])
def test_pam_sits_after_the_listed_extra_convs(use_pam, pam_layers, expected):
    cfg = CamConfig(use_pam=use_pam, pam_layers=pam_layers, pam_alpha=0.7)
    net = CamNet(3, cfg, backbone_module=_FirstChannel(), in_channels=1)
    assert [type(a) for a in net.acts] == expected
    assert all(a.alpha == 0.7 for a in net.acts if isinstance(a, PeakAttention))


@pytest.mark.parametrize("pam_layers", [(3,), (0,), (-3,), (), (1, 1), (2, -1)])
def test_config_rejects_pam_layers_that_are_not_distinct_extra_convs(pam_layers):
    with pytest.raises(ValueError, match="pam_layers"):
        CamConfig(extra_convs=2, pam_layers=pam_layers)


# --------------------------------------------------------------------------------- CAMs


def test_label_masked_cam_relus_zeroes_absent_classes_and_normalises():
    maps = torch.tensor([[[[-2.0, 1.0], [2.0, 4.0]], [[5.0, 5.0], [5.0, 5.0]]]])
    cam = label_masked_cam(maps, torch.tensor([[1.0, 0.0]]), (2, 2))
    assert torch.allclose(cam[0, 0], torch.tensor([[0.0, 0.25], [0.5, 1.0]]), atol=1e-5)
    assert torch.equal(cam[0, 1], torch.zeros(2, 2))  # absent class: zero, whatever the network says


def test_iter_cams_flip_averages_and_upsamples_to_each_image_size():
    net = _identity_net(use_pam=False)
    im = np.zeros((4, 6, 3), np.uint8)
    im[:, :3] = 255  # bright left half: the class map is high there, the flipped view's mapped back
    (result,) = list(iter_cams(net, [im], np.ones((1, 1)), input_size=6))
    assert result.cam.shape == (1, 4, 6)
    assert result.labels.tolist() == [1]
    assert torch.all(result.cam[0, :, :2] > 0.9) and torch.all(result.cam[0, :, 4:] == 0)
    (unflipped,) = list(iter_cams(net, [im], np.ones((1, 1)), input_size=6, flip=False))
    assert torch.allclose(result.cam, unflipped.cam, atol=1e-5)  # a left-right consistent net: same CAM


def test_iter_cams_without_labels_keeps_the_predicted_classes():
    net = _identity_net(use_pam=False)
    with torch.no_grad():
        net.classifier.bias.fill_(-100.0)  # logit < 0 everywhere: the class is predicted absent
    (result,) = list(iter_cams(net, [np.full((4, 4, 3), 255, np.uint8)], None, input_size=4))
    assert result.labels.tolist() == [0] and torch.equal(result.cam, torch.zeros(1, 4, 4))


# ----------------------------------------------------------------------------- semantic maps


def test_semantic_map_is_the_argmax_over_the_background_threshold_and_the_cams():
    cam = torch.tensor([
        [[0.9, 0.3, 0.1], [0.25, 0.0, 0.6]],  # channel 0 -> semantic index 4
        [[0.5, 0.2, 0.0], [0.0, 0.0, 0.7]],  # channel 1 -> semantic index 2
        [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],  # an absent class (zeroed CAM) never wins
    ])
    sem = semantic_from_cam(cam, [4, 2, 5], bg_threshold=0.25)
    assert sem.dtype == np.uint8
    assert sem.tolist() == [[4, 4, 0], [0, 0, 2]]  # 0.25 == threshold -> background (ties to background)


def test_unsure_margin_writes_ignore_near_the_threshold_and_background_index_is_used():
    cam = torch.tensor([[[0.9, 0.32, 0.18, 0.0]]])
    sem = semantic_from_cam(cam, [1], bg_threshold=0.25, background_index=255, unsure_margin=0.1)
    assert sem.tolist() == [[1, 255, 255, 255]]
    assert semantic_from_cam(cam, [1], bg_threshold=0.25, background_index=7).tolist() == [[1, 1, 7, 7]]


def test_peaks_come_only_from_labelled_classes_and_pass_the_threshold():
    cam = torch.zeros(2, 32, 32)
    cam[0, 8, 8] = cam[1, 20, 20] = 1.0
    cam[0, 25, 5] = 0.6
    peaks = cam_peaks(cam, np.array([1, 0]), kernel=5, threshold=0.1, smooth_kernel=None)
    assert [(p.cls, p.x, p.y, p.score) for p in peaks] == [(0, 8, 8, 1.0), (0, 5, 25, pytest.approx(0.6))]
    assert cam_peaks(cam, np.array([1, 0]), kernel=5, threshold=0.7, smooth_kernel=None)[0][:3] == (0, 8, 8)
    assert len(cam_peaks(cam, np.array([1, 0]), kernel=5, threshold=0.7, smooth_kernel=None)) == 1
    assert cam_peaks(cam, np.array([0, 0])) == []


# --------------------------------------------------------------------------------- training


@pytest.mark.slow
def test_short_training_reduces_the_multilabel_loss():
    images, labels = _squares()
    losses: list[float] = []
    model = train_cam(images=images, labels=labels, config=CamConfig(iterations=25, seed=0, **FAST), progress=False,
                      on_step=lambda step, v: losses.append(v["loss"]))
    assert len(losses) == 25 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert not model.training


def test_training_is_deterministic_on_cpu_and_depends_on_the_seed():
    images, labels = _squares(n=4)

    def weights(seed: int) -> torch.Tensor:
        model = train_cam(images=images, labels=labels, progress=False,
                          config=CamConfig(iterations=2, seed=seed, use_pam=True, **FAST))
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    first = weights(0)
    assert torch.equal(first, weights(0))
    assert not torch.equal(first, weights(1))


def test_sgd_follows_the_paper_schedule():
    images, labels = _squares(n=4)
    lrs: list[float] = []
    train_cam(images=images, labels=labels, progress=False, on_step=lambda step, v: lrs.append(v["lr"]),
              config=CamConfig(iterations=3, seed=0, optimizer="sgd", **{**FAST, "lr": 1e-3}))
    # backbone group; lr x0.1 after 1/3 and 2/3 of the steps (release: epochs 5 and 10 of 15)
    assert lrs == pytest.approx([1e-3, 1e-4, 1e-5])


def test_bad_labels_are_rejected():
    images, labels = _squares(n=4)
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        train_cam(images=images, labels=labels[:3], config=CamConfig(**FAST), progress=False)
    with pytest.raises(ValueError, match="0/1"):
        train_cam(images=images, labels=labels * 2, config=CamConfig(**FAST), progress=False)
