"""Segmentor training labels: pseudo-label / instances JSON → per-image targets, validated and counted."""

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from bench.predictions import encode_mask
from datasets.errors import DatasetError
from fixtures.official import uncompressed_rle
from methods.segmentor.labels import CategoryMap, DetectionDataset, make_target, parse_training_labels

SIZES = {1: (6, 8), 2: (6, 8)}  # image id -> (height, width)
CATS = CategoryMap([3, 7])


def _mask(rows: slice, cols: slice, shape=(6, 8)) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[rows, cols] = 1
    return m


def _result(image_id=1, category_id=3, mask=None, **extra):
    mask = _mask(slice(1, 3), slice(2, 5)) if mask is None else mask
    return {"image_id": image_id, "category_id": category_id, "segmentation": encode_mask(mask),
            "bbox": [0, 0, 1, 1], "score": 0.9, **extra}


def _parse(data, **kw):
    return parse_training_labels(data, source="pseudo.json", image_sizes=SIZES, categories=CATS, **kw)


def test_category_map_is_sorted_ids_to_contiguous_labels_with_background_zero():
    cats = CategoryMap([7, 3, 12])
    assert [cats.label(c) for c in (3, 7, 12)] == [1, 2, 3]
    assert [cats.category(k) for k in (1, 2, 3)] == [3, 7, 12]
    assert cats.num_classes == 4


def test_results_list_becomes_a_target_with_tight_box_label_mask_and_unit_weight():
    labels = _parse([_result(category_id=7)])
    (inst,) = labels.by_image[1]
    assert labels.by_image[2] == []
    target = make_target([inst], 6, 8, CATS)
    assert target["boxes"].tolist() == [[2.0, 1.0, 5.0, 3.0]]  # x1 y1 x2 y2, x2 = last column + 1
    assert target["labels"].tolist() == [2]
    assert target["masks"].dtype == torch.uint8
    assert np.array_equal(target["masks"][0].numpy(), _mask(slice(1, 3), slice(2, 5)))
    assert target["weights"].tolist() == [1.0]


def test_instances_dict_with_polygon_and_uncompressed_rle_is_accepted():
    poly = [[2.0, 1.0, 6.0, 1.0, 6.0, 4.0, 2.0, 4.0]]
    m = _mask(slice(0, 2), slice(0, 3))
    rle = mask_utils.encode(np.asfortranarray(m))
    data = {"images": [{"id": 1, "file_name": "a.jpg", "height": 6, "width": 8}],
            "annotations": [{"id": 5, "image_id": 1, "category_id": 3, "segmentation": poly, "iscrowd": 0},
                            {"id": 6, "image_id": 1, "category_id": 7, "iscrowd": 0,
                             "segmentation": uncompressed_rle(m)}],
            "categories": []}
    insts = _parse(data).by_image[1]
    assert [i.category_id for i in insts] == [3, 7]
    assert mask_utils.area(insts[0].rle) > 0
    assert np.array_equal(mask_utils.decode(insts[1].rle), mask_utils.decode(rle))


def test_empty_small_and_crowd_instances_are_dropped_and_counted():
    data = [_result(mask=np.zeros((6, 8), np.uint8)),
            _result(mask=_mask(slice(0, 1), slice(0, 2))),  # 2 pixels
            _result(iscrowd=1),
            _result()]
    labels = _parse(data, min_area=3)
    assert len(labels.by_image[1]) == 1
    assert labels.dropped == {"crowd": 1, "empty": 1, "small": 1}
    assert labels.counts()["instances"] == 1


def test_weight_field_wins_and_score_is_a_weight_only_with_soft_weights():
    data = [_result(score=0.25), _result(score=0.25, weight=0.5)]
    assert [i.weight for i in _parse(data).by_image[1]] == [1.0, 0.5]
    assert [i.weight for i in _parse(data, soft_weights=True).by_image[1]] == [0.25, 0.5]


@pytest.mark.parametrize("record, message", [
    (_result(image_id=99), r"pseudo.json, record 0: image id 99 is not an image of the training split"),
    (_result(category_id=4),
     r"pseudo.json, record 0: category id 4 is not a thing category of the dataset \(\[3, 7\]\)"),
    (_result(mask=np.ones((5, 8), np.uint8)), r"record 0: mask size 8x5 \(WxH\) differs from the image 8x6"),
    (_result(weight=-1), r"record 0: weight/score -1.0 must be finite and >= 0"),
    ({"image_id": 1, "category_id": 3}, r"record 0: missing segmentation"),
    (_result(segmentation="abc"), r"record 0: segmentation must be an RLE dict or a list of polygons"),
])
def test_bad_records_stop_with_file_and_record_named(record, message):
    with pytest.raises(DatasetError, match=message):
        _parse([record])


def test_a_bad_record_is_named_by_its_position_and_id():
    data = {"annotations": [{"id": 1, **_result()}, {"id": 42, **_result(category_id=5)}]}
    with pytest.raises(DatasetError, match=r"record 1 \(id 42\): category id 5"):
        _parse(data)


def test_neither_list_nor_instances_dict_is_rejected():
    with pytest.raises(DatasetError, match="pseudo.json: expected a COCO results list"):
        _parse({"images": []})


def test_instances_dict_with_a_different_image_size_is_rejected():
    data = {"images": [{"id": 1, "file_name": "a.jpg", "height": 5, "width": 8}], "annotations": []}
    with pytest.raises(DatasetError, match=r"images\[0\]: image 1 is 8x5 \(WxH\) here, 8x6 in the dataset"):
        _parse(data)


def test_training_set_skips_images_without_instances_and_yields_unit_range_images():
    labels = _parse([_result(image_id=2)])
    images = {1: np.zeros((6, 8, 3), np.uint8), 2: np.full((6, 8, 3), 255, np.uint8)}
    data = DetectionDataset(labels, SIZES, images.__getitem__, CATS)
    assert (len(data), data.skipped_images) == (1, 1)
    image, target = data[0]
    assert image.shape == (3, 6, 8) and float(image.max()) == 1.0
    assert target["labels"].tolist() == [1]
