"""detectron2 backend: a clean stop with the fix when it is missing; its conversion helpers work without it;
where detectron2 is installed (`.ci/run` installs the wheel in ../shared/wheels/), the stage trains a few steps
through it, predicts, is scored by `bench evaluate`, resumes only a run of the same fingerprint."""

import contextlib
import importlib.util
import io
import json
import os
import sys
from pathlib import Path

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
    resnet_depth,
    timm_resnet_to_detectron2,
)

HAVE_DETECTRON2 = importlib.util.find_spec("detectron2") is not None
needs_detectron2 = pytest.mark.skipif(not HAVE_DETECTRON2, reason="detectron2 is not installed (docs/segmentor.md; "
                                                                  ".ci/run installs ../shared/wheels/detectron2-*.whl)")


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


def test_the_stage_stops_before_any_work(tmp_path, monkeypatch, capsys):
    from bench.cli import main

    monkeypatch.setitem(sys.modules, "detectron2", None)  # as if not installed: its import raises
    raw = render_profile("smoke")
    raw["tracking"]["enabled"] = False
    raw["segmentor"]["backend"] = "detectron2"
    (tmp_path / "params.yaml").write_text(__import__("yaml").safe_dump(raw))
    monkeypatch.chdir(tmp_path)  # no data/ here: any data access would fail with another message
    assert main(["segment", "--dataset", "voc", "--labels", "ground-truth", "--row", "segmentor/mrcnn-gt"]) == 2
    err = capsys.readouterr().err
    assert "detectron2 cannot be imported" in err and "segmentor.backend=torchvision" in err
    assert "uv sync --inexact --group detectron2" in err
    assert not (tmp_path / "runs").exists()


def test_only_resnets_map_onto_detectron2s_backbone():
    assert [resnet_depth(f"resnet{d}") for d in (18, 34, 50, 101, 152)] == [18, 34, 50, 101, 152]
    with pytest.raises(BackendUnavailable, match="segmentor.backbone = 'hrnet_w48'.*resnet18"):
        resnet_depth("hrnet_w48")


def test_timm_resnet_names_become_detectron2_names():
    state = {"conv1.weight": 1, "bn1.running_mean": 2, "layer1.0.conv2.weight": 3, "layer1.0.bn2.bias": 4,
             "layer4.1.downsample.0.weight": 5, "layer4.1.downsample.1.weight": 6, "fc.weight": 7}
    assert timm_resnet_to_detectron2(state) == {
        "stem.conv1.weight": 1, "stem.conv1.norm.running_mean": 2, "res2.0.conv2.weight": 3,
        "res2.0.conv2.norm.bias": 4, "res5.1.shortcut.weight": 5, "res5.1.shortcut.norm.weight": 6}


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


# ------------------------------------------------------------------ with detectron2 installed
def _settings(**overrides):
    from bench.config.schema import SegmentorParams
    from bench.segmentation import schedule
    from methods.segmentor.detectron2_backend import Detectron2Settings

    p = SegmentorParams.model_validate(render_profile("smoke")["segmentor"])
    m, (iterations, steps) = p.mask_rcnn, schedule(p, 10)
    values = dict(
        config_name=p.detectron2_config, depth=18, fpn_channels=p.fpn_channels, anchor_sizes=tuple(m.anchor_sizes),
        aspect_ratios=tuple(m.aspect_ratios), rpn_pre_nms_top_n_train=m.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=m.rpn_post_nms_top_n_train, rpn_pre_nms_top_n_test=m.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=m.rpn_post_nms_top_n_test, rpn_batch_size_per_image=m.rpn_batch_size_per_image,
        box_batch_size_per_image=m.box_batch_size_per_image, representation_size=m.representation_size,
        mask_head_layers=m.mask_head_layers, box_nms_thresh=m.box_nms_thresh, ims_per_batch=p.batch_size,
        base_lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay, max_iter=iterations, steps=steps,
        gamma=p.lr_gamma, warmup_iters=p.warmup_iters, warmup_factor=p.warmup_factor, checkpoint_period=1,
        min_size_train=tuple(p.min_size), max_size=p.max_size, hflip=p.hflip, mask_threshold=0.3,
        detections_per_image=p.detections_per_image, score_threshold=p.score_threshold, seed=0, amp=True, workers=0)
    return Detectron2Settings(**{**values, **overrides})


@needs_detectron2
def test_the_segmentor_params_set_detectron2s_config(tmp_path):
    from methods.segmentor.detectron2_backend import build_config

    cfg = build_config(_settings(hflip=False), dataset="x", num_classes=6, output_dir=tmp_path, device="cpu")
    m = cfg.MODEL
    assert cfg.INPUT.MASK_FORMAT == "bitmask" and cfg.INPUT.RANDOM_FLIP == "none"
    assert (m.BACKBONE.FREEZE_AT, m.RESNETS.NORM, m.RESNETS.DEPTH, m.RESNETS.RES2_OUT_CHANNELS) == (0, "BN", 18, 64)
    assert m.WEIGHTS == "" and m.FPN.OUT_CHANNELS == 16 and m.ROI_MASK_HEAD.CONV_DIM == 16
    assert m.ANCHOR_GENERATOR.SIZES == [[8], [16], [32], [64], [128]]
    assert (m.RPN.BATCH_SIZE_PER_IMAGE, m.ROI_HEADS.BATCH_SIZE_PER_IMAGE, m.ROI_BOX_HEAD.FC_DIM) == (32, 16, 32)
    assert (m.ROI_MASK_HEAD.NUM_CONV, m.ROI_HEADS.NUM_CLASSES) == (1, 6)
    assert (cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TRAIN) == ((64,), 64, 64)
    assert (cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS, cfg.SOLVER.AMP.ENABLED) == (2, (1,), False)


@needs_detectron2
def test_timm_resnet_weights_load_into_detectron2s_resnet_with_the_same_features(tmp_path):
    import timm
    import torch
    from detectron2.modeling import build_model

    from methods.segmentor.detectron2_backend import _load_backbone, build_config

    torch.manual_seed(0)
    timm_model = timm.create_model("resnet18", pretrained=False).eval()
    torch.save(timm_model.state_dict(), tmp_path / "r18.pt")
    cfg = build_config(_settings(), dataset="x", num_classes=6, output_dir=tmp_path, device="cpu")
    model = build_model(cfg).eval()
    _load_backbone(model, tmp_path / "r18.pt")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = model.backbone.bottom_up(x)["res5"]
        theirs = timm_model.forward_features(x)
    assert torch.allclose(ours, theirs, atol=1e-4)
    with pytest.raises(ValueError, match="not a ResNet checkpoint of this depth"):
        torch.save(timm.create_model("resnet34", pretrained=False).state_dict(), tmp_path / "r34.pt")
        cfg50 = build_config(_settings(depth=50), dataset="x", num_classes=6, output_dir=tmp_path, device="cpu")
        _load_backbone(build_model(cfg50), tmp_path / "r34.pt")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A repo-like folder: smoke params (tiny segmentor, 3 steps, checkpoint every step), prepared smoke VOC
    data, the report specs (`bench evaluate` reads them)."""
    import yaml

    from bench.commands.data import prepare

    root = tmp_path_factory.mktemp("d2ws")
    raw = render_profile("smoke")
    raw["tracking"]["enabled"] = False
    raw["segmentor"].update(backend="detectron2", iterations=3, lr_steps=[2], checkpoint_every=1,
                            mask_threshold=0.3, backbone="resnet18", backbone_init="scratch")  # a ResNet maps
    params = validate_params(raw)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    (root / "reports").mkdir()
    (root / "reports" / "specs").symlink_to(Path(__file__).resolve().parents[1] / "reports" / "specs")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        prepare(params.data.voc, root / "data" / "canonical" / "voc")
    finally:
        os.chdir(cwd)
    return root


def _segment(*extra: str) -> int:
    from bench.cli import main

    return main(["segment", "--dataset", "voc", "--labels", "ground-truth", "--seed", "0", *extra])


@needs_detectron2
@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_the_stage_trains_through_detectron2_and_writes_the_run_contract(workspace, monkeypatch):
    import torch

    from bench.cli import main
    from bench.io import read_json

    monkeypatch.chdir(workspace)
    assert _segment("--row", "segmentor/mrcnn-gt-detectron2") == 0
    out = Path("runs/voc/segmentor/mrcnn-gt-detectron2/seed0")
    assert sorted(p.name for p in out.iterdir()) == ["model.pt", "run.json", "timing.json", "val_instances.json"]
    assert not out.with_name("seed0.partial").exists()
    run = read_json(out / "run.json")
    training = run["training"]
    assert (run["segmentor"]["backend"], training["backend"], training["iterations"]) == ("detectron2",) * 2 + (3,)
    assert training["resumed_from"] == 0 and training["train_images"] > 0 and training["skipped_images"] >= 0
    assert {"loss", "loss_cls", "loss_mask", "loss_rpn_cls", "lr"} <= set(training["last_losses"])
    assert all(np.isfinite(v) for v in training["last_losses"].values())
    assert training["last_losses"]["loss"] < 20  # a from-scratch model with frozen random layers starts at ~500
    assert "soft_weights" in training["detectron2"]["not_mapped"] and training["detectron2"]["resnet_depth"] == 18
    timing = read_json(out / "timing.json")
    assert timing["train_seconds"] > 0 and timing["seconds_per_step"] > 0
    weights = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert {"model", "arch", "backend", "num_classes", "category_ids", "segmentor", "config"} <= set(weights)
    assert any(k.startswith("backbone.bottom_up.res5") for k in weights["model"])
    assert "MASK_FORMAT: bitmask" in weights["config"]

    assert main(["evaluate", "--dataset", "voc", "--method", "segmentor", "--variant", "mrcnn-gt-detectron2",
                 "--seed", "0"]) == 0
    metrics = read_json(Path("metrics/voc/segmentor/mrcnn-gt-detectron2/seed0.json"))["metrics"]
    assert {"voc.mAP50", "coco.segm.AP"} <= set(metrics)


@needs_detectron2
@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_a_rerun_resumes_only_checkpoints_of_the_same_fingerprint(workspace, monkeypatch):
    import methods.segmentor.detectron2_backend as d2
    from bench.io import read_json

    monkeypatch.chdir(workspace)
    row = "segmentor/d2-resume"
    partial = Path("runs/voc/segmentor/d2-resume/seed0.partial/detectron2")
    resumed_from: list[int] = []
    real_train = d2.train

    def spy(*args, **kwargs):
        outcome = real_train(*args, **kwargs)
        resumed_from.append(outcome.resumed_from)
        return outcome

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    def interrupted(*args: str) -> None:
        with monkeypatch.context() as m:
            m.setattr(d2, "predict", crash)  # training finishes, then the stage dies (the CLI reports SIGINT)
            try:
                assert main(list(args)) != 0
            except KeyboardInterrupt:
                pass

    from bench.cli import main

    monkeypatch.setattr(d2, "train", spy)
    interrupted("segment", "--dataset", "voc", "--labels", "ground-truth", "--seed", "0", "--row", row)
    assert (partial / "model_final.pth").is_file() and (partial / d2.FINGERPRINT_FILE).is_file()
    stale = (partial / d2.FINGERPRINT_FILE).read_text()

    # other labels (the ground truth less its first image's instances): those checkpoints are not resumed
    data = json.loads(Path("data/canonical/voc/train_aug/instances.json").read_text())
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != data["images"][0]["id"]]
    Path("other.json").write_text(json.dumps(data))
    args = ["segment", "--dataset", "voc", "--labels", "other.json", "--seed", "0", "--row", row]
    interrupted(*args)
    assert resumed_from == [0, 0] and (partial / d2.FINGERPRINT_FILE).read_text() != stale

    # the same labels again: resumed at the end, nothing trained twice
    assert main(args) == 0
    run = read_json(Path("runs/voc/segmentor/d2-resume/seed0/run.json"))
    assert resumed_from == [0, 0, 3] and run["training"]["resumed_from"] == 3
    assert run["labels"]["file"] == "other.json" and not partial.parent.exists()
