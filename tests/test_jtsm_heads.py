"""JTSM mining branch (Sec. 3.2): WSDDN scores, the MIL loss (Eq. 2), OICR pseudo labels and loss
(Eq. 3), the instance and semantic losses (Eq. 9-10), and segment overlaps from superpixels."""

import math

import numpy as np
import pytest
import torch

from methods.jtsm.heads import WsddnHead, segment_softmax
from methods.jtsm.losses import (RefineTargets, instance_mask_loss, mil_loss, refine_loss, refine_targets,
                                 semantic_loss)
from methods.jtsm.segments import SegmentBatch, mask_iou, superpixels_from_masks


def _batch(boxes, masks=None):
    boxes = np.asarray(boxes, np.float32)
    if masks is None:
        masks = np.zeros((len(boxes), 40, 40), bool)
        for k, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
            masks[k, y0:y1, x0:x1] = True
    sp, members = superpixels_from_masks(masks)
    return SegmentBatch.from_arrays([(sp, members, boxes, np.ones(len(boxes)))])


def test_wsddn_proposal_scores_sum_to_the_image_scores():
    torch.manual_seed(0)
    head = WsddnHead(6, 4)
    x = torch.randn(7, 6)
    batch = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    scores, image = head(x, batch, 2)
    assert torch.allclose(image[0], scores[:3].sum(0)) and torch.allclose(image[1], scores[3:].sum(0))
    assert ((image > 0) & (image < 1)).all()  # Σ_p softmax_c · softmax_p ≤ 1
    d = segment_softmax(torch.randn(7, 4), batch, 2)
    assert torch.allclose(d[:3].sum(0), torch.ones(4)) and torch.allclose(d[3:].sum(0), torch.ones(4))


def test_mil_loss_is_the_multi_label_cross_entropy_of_eq2():
    y = torch.tensor([[0.8, 0.1, 0.5]])
    t = torch.tensor([[1.0, 0.0, 0.0]])
    assert mil_loss(y, t).item() == pytest.approx(-(math.log(0.8) + math.log(0.9) + math.log(0.5)), rel=1e-6)


def test_oicr_labels_pick_the_top_proposal_and_give_its_neighbours_its_class():
    # proposals: 0 top for class 0; 1 overlaps 0 by IoU 0.6; 2 overlaps it by 0.25; 3 top for class 2; 4 far away
    boxes = [(0, 0, 10, 10), (0, 0, 10, 6), (0, 0, 5, 5), (20, 20, 30, 30), (30, 0, 40, 8)]
    seg = _batch(boxes)
    previous = torch.tensor([[0.9, 0.0, 0.1], [0.5, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.2, 0.8], [0.0, 0.9, 0.0]])
    image = torch.tensor([[0.7, 0.9, 0.6]])
    labels = torch.tensor([[1.0, 0.0, 1.0]])  # class 1 absent: proposal 4's high class-1 score is no seed
    t = refine_targets(previous, image, labels, seg, threshold=0.5)
    assert t.seeds.tolist() == [0, 3] and t.seed_classes.tolist() == [0, 2]
    assert t.classes.tolist() == [0, 0, 3, 2, 3]  # 3 = background
    assert t.weights.tolist() == pytest.approx([0.7, 0.7, 0.7, 0.6, 0.7])  # y of the nearest seed's class
    masked = refine_targets(previous, image, labels, seg, threshold=0.5, overlap="mask")
    assert masked.classes.tolist() == [0, 0, 3, 2, 3]


def test_refine_loss_weights_each_proposal_cross_entropy():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    targets = RefineTargets(torch.tensor([0, 1]), torch.tensor([0.5, 0.0]), torch.zeros(0), torch.zeros(0))
    expected = 0.5 * -torch.log_softmax(logits[0], 0)[0] / 2
    assert refine_loss(logits, targets).item() == pytest.approx(expected.item())


def test_instance_loss_reads_only_the_pseudo_class_channel():
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 1] = 10.0  # class 1 predicts foreground everywhere
    logits[0, 0] = -10.0
    target = torch.ones(1, 2, 2)
    low = instance_mask_loss(logits, torch.tensor([1]), target, torch.tensor([1.0]))
    high = instance_mask_loss(logits, torch.tensor([0]), target, torch.tensor([1.0]))
    assert low.item() < 1e-4 and high.item() == pytest.approx(10.0, abs=1e-3)
    assert instance_mask_loss(logits, torch.tensor([0]), target, torch.tensor([0.5])).item() == pytest.approx(5.0, abs=1e-3)


def test_semantic_loss_ignores_unlabelled_pixels():
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 0] = 5.0
    target = torch.full((1, 4, 4), 255)
    assert semantic_loss(logits, target).item() == 0.0
    target[0, 0, 0] = 1
    assert semantic_loss(logits, target).item() == pytest.approx(-torch.log_softmax(torch.tensor([5.0, 0.0]), 0)[1].item())


def test_mask_iou_from_superpixels_equals_the_pixel_iou():
    rng = np.random.default_rng(0)
    masks = rng.random((4, 40, 40)) < 0.5
    boxes = [(0, 0, 40, 40)] * 4
    seg = _batch(boxes, masks)
    iou = mask_iou(seg, torch.arange(4), torch.arange(4))
    dense = np.array([[(a & b).sum() / (a | b).sum() for b in masks] for a in masks])
    assert np.allclose(iou.numpy(), dense, atol=1e-6)
    assert torch.equal(seg.dense_masks(), torch.from_numpy(masks))
