"""BESTIE training on a tiny synthetic set (loss falls, deterministic) and the pseudo-label export."""

from __future__ import annotations

import contextlib
import io
from dataclasses import replace

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

from bench.bestie_family import pseudo_records
from method_configs import bestie_config
from methods.bestie import Instance
from methods.bestie.train import BestieConfig, Sample, build_pseudo_targets, predict_outputs, train_bestie

CONFIG = bestie_config(supervision="points", flip_tta=False, backbone="regnetx_002", decoder_channels=16,
                      head_channels=16, iterations=12, batch_size=2, lr=3e-3, warmup_iterations=0, crop_size=32,
                      scale_range=(1.0, 1.0), sigma=2.0, min_area=4, nms_kernel=5, device="cpu")


def _tiny_set() -> list[Sample]:
    """Four 32×32 images: one or two coloured squares of class 1 or 2 on grey, points at the centres."""
    samples = []
    for k in range(4):
        image = np.full((32, 32, 3), 100, np.uint8)
        sem = np.zeros((32, 32), np.uint8)
        cues, classes = [], []
        for j, (y, x) in enumerate([(4 + 2 * k, 4), (16, 18 - k)][: 1 + k % 2]):
            cls = 1 + (k + j) % 2
            image[y:y + 9, x:x + 9] = (230, 40, 40) if cls == 1 else (40, 40, 230)
            sem[y:y + 9, x:x + 9] = cls
            cues.append((y + 4, x + 4))
            classes.append(cls)
        targets, _ = build_pseudo_targets(sem, np.array(cues), np.array(classes), CONFIG)
        samples.append(Sample(image, sem, targets))
    return samples


def _train(config: BestieConfig) -> tuple[torch.nn.Module, list[float]]:
    torch.set_num_threads(2)
    losses: list[float] = []
    model = train_bestie(samples=_tiny_set(), num_semantic=3, thing_classes=[1, 2], config=config, progress=False,
                         on_step=lambda step, v: losses.append(v["loss"]))
    return model, losses


def test_short_training_loss_falls() -> None:
    _, losses = _train(CONFIG)
    assert len(losses) == CONFIG.iterations and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])


def test_training_is_deterministic_on_cpu() -> None:
    config = replace(CONFIG, iterations=3)
    (m1, l1), (m2, l2) = _train(config), _train(config)
    assert l1 == l2
    image = _tiny_set()[0].image
    o1, o2 = next(predict_outputs(m1, [image])), next(predict_outputs(m2, [image]))
    assert all(np.array_equal(o1[k], o2[k]) for k in o1)


def test_image_setting_trains_with_refinement() -> None:
    _, losses = _train(replace(CONFIG, supervision="image", iterations=3))
    assert len(losses) == 3 and all(np.isfinite(losses))


def test_export_records_load_in_pycocotools_with_point_ids() -> None:
    mask = np.zeros((8, 10), bool)
    mask[2:5, 3:7] = True
    found = [(Instance(mask, 2, 0.75, (3.0, 5.0)), 1), (Instance(~mask, 1, 0.5, (6.0, 1.0)), None)]
    records = pseudo_records(7, found, semantic_classes=[3, 1, 2], annotation_ids=[40, 41])
    assert [r["point_annotation_id"] for r in records] == [41, None]
    assert [r["category_id"] for r in records] == [2, 1]
    gt = COCO()
    gt.dataset = {"images": [{"id": 7, "height": 8, "width": 10, "file_name": "a.png"}], "annotations": [],
                  "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        res = gt.loadRes(records)
    anns = res.loadAnns(res.getAnnIds())
    assert len(anns) == 2 and anns[0]["area"] == 12 and anns[0]["bbox"] == [3.0, 2.0, 4.0, 3.0]
    assert anns[0]["score"] == pytest.approx(0.75)


def test_centre_and_offset_heads_start_at_zero():
    import torch

    from methods.bestie.model import BestieNet

    torch.manual_seed(0)
    net = BestieNet(3, 2, backbone="resnet10t", out_indices=(1, 2), decoder_channels=8, head_channels=8).eval()
    out = net(torch.randn(1, 3, 32, 32))
    assert torch.count_nonzero(out["center"]) == 0 and torch.count_nonzero(out["offset"]) == 0
    assert torch.count_nonzero(out["semantic"]) > 0  # the semantic head keeps its default init


def test_checkpoints_see_the_model_at_the_requested_steps_and_leave_training_unchanged() -> None:
    """Fig. 6's checkpoints run inference mid-training; the trained weights must not depend on them."""
    config = replace(CONFIG, iterations=4)
    seen: list[tuple[int, bool]] = []
    torch.set_num_threads(2)
    with_checkpoints = train_bestie(samples=_tiny_set(), num_semantic=3, thing_classes=[1, 2], config=config,
                                    progress=False, checkpoints=[2, 4],
                                    on_checkpoint=lambda step, m: (seen.append((step, m.training)),
                                                                   list(predict_outputs(m, [_tiny_set()[0].image]))))
    without, _ = _train(config)
    assert seen == [(2, False), (4, False)]
    for (name, a), (_, b) in zip(with_checkpoints.state_dict().items(), without.state_dict().items()):
        assert torch.equal(a, b), name


def test_curve_steps_are_evenly_spaced_and_end_at_the_last_step() -> None:
    from bench.bestie_family import curve_steps

    assert curve_steps(200, 4) == [50, 100, 150, 200]
    assert curve_steps(10, 3) == [3, 7, 10]
    assert curve_steps(2, 4) == [1, 2]  # fewer steps than points: each step once
    assert curve_steps(200, 0) == []


def test_an_interrupted_run_resumes_from_its_checkpoint_to_the_uninterrupted_weights(tmp_path) -> None:
    from methods.checkpointing import Checkpointing

    config = replace(CONFIG, iterations=5)
    checkpointing = Checkpointing(tmp_path / "last.pt", fingerprint="run-a", every=2)

    def stop_at_4(step: int, values: dict) -> None:
        if step == 4:
            raise KeyboardInterrupt  # killed after the checkpoint of step 2, before the one of step 4

    torch.set_num_threads(2)
    with pytest.raises(KeyboardInterrupt):
        train_bestie(samples=_tiny_set(), num_semantic=3, thing_classes=[1, 2], config=config, progress=False,
                     on_step=stop_at_4, checkpointing=checkpointing)
    resumed_steps: list[int] = []
    resumed = train_bestie(samples=_tiny_set(), num_semantic=3, thing_classes=[1, 2], config=config, progress=False,
                           on_step=lambda step, v: resumed_steps.append(step), checkpointing=checkpointing)
    straight, _ = _train(config)
    assert resumed_steps == [3, 4, 5]
    for (name, a), (_, b) in zip(resumed.state_dict().items(), straight.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_checkpoint_of_another_run_is_ignored(tmp_path) -> None:
    from methods.checkpointing import Checkpointing

    config = replace(CONFIG, iterations=3)
    torch.set_num_threads(2)
    train_bestie(samples=_tiny_set(), num_semantic=3, thing_classes=[1, 2], config=config, progress=False,
                 checkpointing=Checkpointing(tmp_path / "last.pt", fingerprint="other", every=1))
    steps: list[int] = []
    train_bestie(samples=_tiny_set(), num_semantic=3, thing_classes=[1, 2], config=config, progress=False,
                 on_step=lambda step, v: steps.append(step),
                 checkpointing=Checkpointing(tmp_path / "last.pt", fingerprint="mine", every=1))
    assert steps == [1, 2, 3]


def test_a_finished_checkpoint_gives_its_weights_without_training(tmp_path) -> None:
    from methods.checkpointing import Checkpointing

    config = replace(CONFIG, iterations=3)
    checkpointing = Checkpointing(tmp_path / "last.pt", fingerprint="run-a", every=10)  # saved at the last step
    torch.set_num_threads(2)
    first = train_bestie(samples=_tiny_set(), num_semantic=3, thing_classes=[1, 2], config=config, progress=False,
                         checkpointing=checkpointing)
    steps: list[int] = []
    again = train_bestie(samples=_tiny_set(), num_semantic=3, thing_classes=[1, 2], config=config, progress=False,
                         on_step=lambda step, v: steps.append(step), checkpointing=checkpointing)
    assert steps == []
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))


def _crop(semantic: np.ndarray, instance_map: np.ndarray, centers, cues, cue_classes):
    """An augmented crop as the training loop sees it (grey image, one instance class 1)."""
    from methods.bestie.train import _Aug

    return _Aug(np.full((*semantic.shape, 3), 100, np.uint8), semantic, instance_map,
                np.asarray(centers, np.float64).reshape(-1, 2), np.ones(len(centers), np.int64),
                np.asarray(cues, np.int64).reshape(-1, 2), np.asarray(cue_classes, np.int64))


@pytest.mark.parametrize("source,peak", [("instances", (5, 6)), ("cues", (3, 4))])
def test_image_setting_centre_map_at_the_int_centroid_of_each_instance_or_at_the_cues(source, peak) -> None:
    """A 7×8 component (centroid (5.0, 6.5)) with a PAM cue at (3, 4): with the release's int-truncated
    centroid as the instance centre, ``instances`` puts the Gaussian at (5, 6) (the release's
    ``pseudo_label_generation`` for sup = 'cls'); ``cues`` at the cue."""
    from methods.bestie.train import _pseudo_batch

    semantic = np.zeros((20, 20), np.uint8)
    semantic[2:9, 3:11] = 1
    config = bestie_config(supervision="image", center_map_source=source, offset_target="centroid-int", min_area=1)
    targets, _ = build_pseudo_targets(semantic, np.array([[3, 4]]), np.array([1]), config)
    assert targets.centers.tolist() == [[5.0, 6.0]]
    crop = _crop(semantic, targets.instance_map, targets.centers, targets.cues, targets.cue_classes)
    center = _pseudo_batch([crop], np.array([1]), config)["center"][0, 0]
    assert np.unravel_index(center.argmax(), center.shape) == peak and center.max() == 1.0


@pytest.mark.parametrize("border,labelled", [("keep", 9), ("drop", 0)])
def test_the_point_setting_refinement_keeps_or_drops_a_point_on_row_0(border, labelled) -> None:
    """A 3×3 class-1 crop with its only point at (y 0, x 1) and zero offsets: grouped to the point it is
    one 9-px instance; the release reads y = 0 as padding and refines nothing."""
    from methods.bestie.train import _refined_batch

    semantic = np.ones((3, 3), np.uint8)
    crop = _crop(semantic, np.zeros((3, 3), np.int32), np.zeros((0, 2)), [[0, 1]], [1])
    config = bestie_config(refine_border_points=border)
    refined = _refined_batch([crop], {"offset": np.zeros((1, 2, 3, 3), np.float32)}, np.array([1]),
                             np.zeros((1, 1, 3, 3), np.float32), config)
    assert (refined["instance"][0] > 0).sum() == labelled and (refined["weight"][0] > 0).sum() == labelled
