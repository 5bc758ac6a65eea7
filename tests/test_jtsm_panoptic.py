"""JTSM outputs: the panoptic merge, the test-time views, per-class NMS detections."""

import numpy as np
import pytest
import torch

from methods.jtsm.inference import average_over_views, detections, view_of
from methods.jtsm.panoptic import merge_panoptic
from methods.jtsm.segments import SegmentBatch, superpixels_from_masks


def test_merge_orders_things_by_score_drops_hidden_ones_and_fills_stuff():
    things = np.zeros((3, 20, 20), bool)
    things[0, 0:10, 0:10] = True          # score 0.9
    things[1, 0:10, 0:12] = True          # score 0.8: 20 of 120 pixels visible → dropped
    things[2, 12:20, 12:20] = True        # score 0.01: under the threshold
    stuff = np.full((20, 20), -1)
    stuff[:, 10:] = 0
    stuff[15:, :3] = 1                    # 15 pixels < stuff_area_limit
    ids, segs = merge_panoptic(things, np.array([2, 1, 0]), np.array([0.9, 0.8, 0.01]), stuff, num_things=3,
                               stuff_area_limit=20)
    assert [(s.id, s.category, s.isthing, s.area) for s in segs] == [(1, 2, True, 100), (2, 3, False, 200)]
    assert (ids[0:10, 0:10] == 1).all() and (ids[:, 10:] == 2).all() and (ids[10:, :10] == 0).all()


def test_a_flipped_view_mirrors_boxes_and_superpixels():
    masks = np.zeros((1, 8, 16), bool)
    masks[0, 2:6, 1:5] = True
    sp, members = superpixels_from_masks(masks)
    seg = SegmentBatch.from_arrays([(sp, members, np.array([[1, 2, 5, 6]]), np.ones(1))])
    image = torch.rand(1, 3, 8, 16)
    img, view = view_of(image, seg, size=(16, 32), flip=True)
    assert img.shape == (1, 3, 16, 32)
    assert view.boxes.tolist() == [[22.0, 4.0, 30.0, 12.0]]
    dense = view.dense_masks()[0]
    assert dense[4:12, 22:30].all() and int(dense.sum()) == 64


def test_view_average_and_per_class_nms():
    masks = np.zeros((2, 10, 10), bool)
    masks[0, :5, :5] = masks[1, :6, :5] = True
    sp, members = superpixels_from_masks(masks)
    seg = SegmentBatch.from_arrays([(sp, members, np.array([[0, 0, 5, 5], [0, 0, 5, 6]]), np.ones(2))])
    calls = []

    def score_fn(img, view):
        calls.append((img.shape[-2:], bool(view.boxes[0, 0] > 0)))
        return torch.tensor([[0.9, 0.2], [0.5, 0.6]]) * img.shape[-1] / 10

    scores = average_over_views(score_fn, torch.rand(1, 3, 10, 10), seg, scales=(10, 20), flip=True)
    assert len(calls) == 4 and torch.allclose(scores, torch.tensor([[0.9, 0.2], [0.5, 0.6]]) * 1.5)
    boxes, s, cls = detections(seg.boxes, torch.tensor([[0.9, 0.2], [0.5, 0.6]]), nms_threshold=0.5)
    # class 0: proposal 1 (IoU 25/30 with 0) suppressed; class 1: proposal 0 suppressed by proposal 1
    assert s.tolist() == pytest.approx([0.9, 0.6]) and cls.tolist() == [0, 1]
