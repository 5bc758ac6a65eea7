"""detectron2 backend: a clean stop with the fix when it is missing; its conversion helpers work without it."""

import contextlib
import importlib.util
import io

import numpy as np
import pytest
from pycocotools.coco import COCO

from bench.config.loader import ParamsError, render_profile, validate_params
from bench.predictions import encode_mask
from methods.segmentor.detectron2_backend import (
    BackendUnavailable,
    coco_instances_json,
    contiguous_ids,
    predictions_from_fields,
    require_detectron2,
)

HAVE_DETECTRON2 = importlib.util.find_spec("detectron2") is not None


def _importer(missing: str, error: Exception):
    def importer(name: str):
        if name == missing:
            raise error
        return object()

    return importer


def test_missing_detectron2_says_how_to_install_it_or_switch_backend():
    with pytest.raises(BackendUnavailable) as err:
        require_detectron2(_importer("detectron2", ModuleNotFoundError("No module named 'detectron2'")))
    message = str(err.value)
    assert "segmentor.backend = detectron2, but detectron2 cannot be imported" in message
    assert "git+https://github.com/facebookresearch/detectron2.git" in message
    assert "segmentor.backend=torchvision" in message


def test_the_pkg_resources_pitfall_is_named():
    error = ModuleNotFoundError("No module named 'pkg_resources'")
    with pytest.raises(BackendUnavailable, match=r"pkg_resources.*setuptools<81"):
        require_detectron2(_importer("detectron2.model_zoo", error))


@pytest.mark.skipif(HAVE_DETECTRON2, reason="detectron2 is installed here")
def test_require_detectron2_fails_on_this_machine():
    with pytest.raises(BackendUnavailable):
        require_detectron2()


@pytest.mark.skipif(HAVE_DETECTRON2, reason="detectron2 is installed here")
def test_the_stage_stops_before_any_work(tmp_path, monkeypatch, capsys):
    from bench.cli import main

    raw = render_profile("smoke")
    raw["tracking"]["enabled"] = False
    raw["segmentor"]["backend"] = "detectron2"
    (tmp_path / "params.yaml").write_text(__import__("yaml").safe_dump(raw))
    monkeypatch.chdir(tmp_path)  # no data/ here: any data access would fail with another message
    assert main(["segment", "--dataset", "voc", "--labels", "ground-truth", "--row", "segmentor/mrcnn-gt"]) == 2
    err = capsys.readouterr().err
    assert "detectron2 cannot be imported" in err and "segmentor.backend=torchvision" in err
    assert not (tmp_path / "runs").exists()


def test_detectron2_trains_mask_rcnn_only():
    raw = render_profile("embedded")
    raw["segmentor"].update(backend="detectron2", arch="solov2")
    with pytest.raises(ParamsError, match="backend detectron2 trains Mask R-CNN only"):
        validate_params(raw)


def test_contiguous_ids_follow_detectron2s_sorted_order():
    assert contiguous_ids([7, 3, 12]) == {3: 0, 7: 1, 12: 2}


def test_training_json_is_a_coco_instances_file_without_weight_zero_instances():
    m = np.zeros((6, 8), np.uint8)
    m[1:3, 2:5] = 1
    rle = encode_mask(m)
    data = coco_instances_json(
        [{"id": 1, "file_name": "a.jpg", "height": 6, "width": 8, "extra": 0}],
        {1: [(3, rle, 1.0), (7, rle, 0.0)]},
        [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
    )
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    (ann,) = coco.loadAnns(coco.getAnnIds())
    assert (ann["category_id"], ann["bbox"], ann["area"], ann["iscrowd"]) == (3, [2.0, 1.0, 3.0, 2.0], 6.0, 0)
    assert np.array_equal(coco.annToMask(ann), m)
    assert data["images"] == [{"id": 1, "file_name": "a.jpg", "height": 6, "width": 8}]


def test_predicted_instances_map_back_to_dataset_ids_best_first_without_empty_masks():
    masks = np.zeros((3, 4, 4), bool)
    masks[0, :2] = True
    masks[2, 2:] = True  # masks[1] is empty
    out_masks, cats, scores = predictions_from_fields(masks, np.array([0, 1, 2]), np.array([0.2, 0.9, 0.5]),
                                                      {0: 3, 1: 7, 2: 12}, max_detections=1)
    assert cats.tolist() == [12] and scores.tolist() == [0.5]
    assert np.array_equal(out_masks[0], masks[2])
