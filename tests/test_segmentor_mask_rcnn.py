"""Mask R-CNN with per-instance loss weights: weight 1 is torchvision's loss, weight 0 contributes nothing,
weights scale the RoI-head losses, the RPN stays unweighted."""

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection.roi_heads import fastrcnn_loss, maskrcnn_loss

from methods.segmentor.backbone import TimmFPN
from methods.segmentor.mask_rcnn import (
    MaskRCNNOptions,
    WeightedRoIHeads,
    build_mask_rcnn,
    weighted_fastrcnn_loss,
    weighted_maskrcnn_loss,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _head_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = [torch.tensor([1, 0, 2]), torch.tensor([2, 0])]
    logits = torch.randn(5, 3, generator=g)
    regression = torch.randn(5, 12, generator=g)
    targets = [torch.randn(3, 4, generator=g), torch.randn(2, 4, generator=g)]
    return logits, regression, labels, targets


def test_unit_weights_reproduce_torchvision_fastrcnn_loss():
    logits, regression, labels, targets = _head_inputs()
    ones = [torch.ones(3), torch.ones(2)]
    got = weighted_fastrcnn_loss(logits, regression, labels, targets, ones)
    want = fastrcnn_loss(logits, regression, labels, targets)
    torch.testing.assert_close(got, want)


def test_zero_weight_proposals_drop_out_of_the_classification_sum():
    logits, regression, labels, targets = _head_inputs()
    weights = [torch.tensor([1.0, 1.0, 0.0]), torch.ones(2)]
    cls, _ = weighted_fastrcnn_loss(logits, regression, labels, targets, weights)
    ce = F.cross_entropy(logits, torch.cat(labels), reduction="none")
    torch.testing.assert_close(cls, (ce.sum() - ce[2]) / 5)


def test_unit_weights_reproduce_torchvision_mask_loss_and_weights_scale_it():
    g = torch.Generator().manual_seed(1)
    masks = [(torch.rand(2, 16, 16, generator=g) > 0.5).to(torch.uint8)]
    proposals = [torch.tensor([[0.0, 0.0, 8.0, 8.0], [4.0, 4.0, 16.0, 12.0], [2.0, 2.0, 10.0, 14.0]])]
    gt_labels = [torch.tensor([1, 2])]
    matched = [torch.tensor([0, 1, 1])]
    logits = torch.randn(3, 3, 7, 7, generator=g)
    want = maskrcnn_loss(logits, proposals, masks, gt_labels, matched)
    got = weighted_maskrcnn_loss(logits, proposals, masks, gt_labels, matched, [torch.ones(3)])
    torch.testing.assert_close(got, want)
    doubled = weighted_maskrcnn_loss(logits, proposals, masks, gt_labels, matched, [torch.full((3,), 2.0)])
    torch.testing.assert_close(doubled, 2 * want)
    none = weighted_maskrcnn_loss(logits, proposals, masks, gt_labels, matched, [torch.zeros(3)])
    assert float(none) == 0.0


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    backbone = TimmFPN("resnet18", out_channels=16)
    options = MaskRCNNOptions(anchor_sizes=(8, 16, 32, 64, 128), rpn_batch_size_per_image=32,
                              box_batch_size_per_image=16, representation_size=32, mask_head_layers=1,
                              rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50)
    model = build_mask_rcnn(3, backbone, min_size=64, max_size=64, options=options)
    model.train()
    return model


def _batch(weight: float):
    masks = torch.zeros(2, 64, 64, dtype=torch.uint8)
    masks[0, 8:30, 10:40] = 1
    masks[1, 36:60, 30:50] = 1
    target = {"boxes": torch.tensor([[10.0, 8.0, 40.0, 30.0], [30.0, 36.0, 50.0, 60.0]]),
              "labels": torch.tensor([1, 2]), "masks": masks, "weights": torch.full((2,), weight)}
    return [torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(3))], [target]


def _losses(model, weight: float) -> dict[str, float]:
    images, targets = _batch(weight)
    torch.manual_seed(7)  # same proposal sampling for every call
    with torch.no_grad():
        return {k: float(v) for k, v in model(images, targets).items()}


def test_the_model_uses_weighted_roi_heads(tiny_model):
    assert isinstance(tiny_model.roi_heads, WeightedRoIHeads)


def test_doubling_every_weight_doubles_box_and_mask_losses_and_leaves_the_rpn_alone(tiny_model):
    one, two = _losses(tiny_model, 1.0), _losses(tiny_model, 2.0)
    assert one["loss_box_reg"] > 0 and one["loss_mask"] > 0
    assert two["loss_box_reg"] == pytest.approx(2 * one["loss_box_reg"], rel=1e-5)
    assert two["loss_mask"] == pytest.approx(2 * one["loss_mask"], rel=1e-5)
    assert two["loss_objectness"] == one["loss_objectness"]
    assert two["loss_rpn_box_reg"] == one["loss_rpn_box_reg"]


def test_weight_zero_instances_contribute_no_box_or_mask_loss(tiny_model):
    zero = _losses(tiny_model, 0.0)
    assert zero["loss_box_reg"] == 0.0 and zero["loss_mask"] == 0.0
    assert zero["loss_classifier"] < _losses(tiny_model, 1.0)["loss_classifier"] + 1e-9  # background terms only


def test_anchor_sizes_must_match_the_pyramid():
    with pytest.raises(ValueError, match="3 anchor sizes for 4 FPN levels \\+ pool; give 5"):
        build_mask_rcnn(3, TimmFPN("resnet18", out_channels=16), min_size=64, max_size=64,
                        options=MaskRCNNOptions(anchor_sizes=(8, 16, 32)))
