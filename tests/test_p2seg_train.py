"""P2Seg training on a tiny synthetic set: the I2S term is in the loss and it falls, stages chain
through the I2S map, the export gives one instance per point (a default box for a point with no
region), deterministic on CPU, and the stage's config reads the `mdm` section."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from bench.commands.p2seg import VARIANTS, make_p2seg_config
from bench.config.schema import Params
from method_configs import bestie_config, p2seg_config
from methods.bestie import Instance
from methods.bestie.train import BestieConfig
from methods.p2seg.train import (
    P2SegConfig,
    affinity_targets,
    build_samples,
    empty_point_instances,
    export_instances,
    train_p2seg,
)

pytestmark = pytest.mark.usefixtures("one_thread")

BESTIE = bestie_config(supervision="points", flip_tta=False, backbone="regnetx_002", decoder_channels=16,
                      head_channels=16, iterations=10, batch_size=2, lr=3e-3, warmup_iterations=0, crop_size=32,
                      scale_range=(1.0, 1.0), sigma=2.0, min_area=4, nms_kernel=5, hard_pixel_ratio=0.5,
                      offset_loss="smooth-l1", optimizer="adamw", refined_offset_target="center", device="cpu")
CONFIG = p2seg_config(BESTIE, embed_dim=8, default_box=4, chunk_size=100, stages=1,
                     semantic_from_affinity=False)  # the embedded pipeline's setting


def _tiny_set() -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Four 32×32 images, each two touching 8×8 squares of class 1 (one 8×16 component) with a point
    at each square's centre; image 3 also has a point of class 2 on the background."""
    images, maps, points, classes = [], [], [], []
    for k in range(4):
        image = np.full((32, 32, 3), 100, np.uint8)
        sem = np.zeros((32, 32), np.uint8)
        y, x = 6 + 3 * k, 4 + 2 * k
        image[y:y + 8, x:x + 8] = (230, 40, 40)
        image[y:y + 8, x + 8:x + 16] = (200, 60, 60)
        sem[y:y + 8, x:x + 16] = 1
        pts = [(y + 3, x + 3), (y + 3, x + 11)] + ([(26, 26)] if k == 3 else [])
        cls = [1, 1] + ([2] if k == 3 else [])
        images.append(image)
        maps.append(sem)
        points.append(np.array(pts, np.int64))
        classes.append(np.array(cls, np.int64))
    return images, maps, points, classes


def _train(config: P2SegConfig, losses: list[dict[str, float]] | None = None):
    images, maps, points, classes = _tiny_set()
    return train_p2seg(images=images, maps=maps, points=points, point_classes=classes, num_semantic=3,
                       thing_classes=[1, 2], config=config, progress=False,
                       on_step=None if losses is None else lambda stage, step, v: losses.append(v))


def test_points_first_keeps_the_touching_pair_that_semantic_first_drops() -> None:
    images, maps, points, classes = _tiny_set()
    s2i, s2i_stats = build_samples(images, maps, points, classes, CONFIG)
    bestie, bestie_stats = build_samples(images, maps, points, classes, replace(CONFIG, s2i="semantic-first"))
    assert s2i_stats["separated_points"] == 8 and bestie_stats["several_cues"] == 4
    assert all(np.unique(s.targets.instance_map[s.semantic == 1]).tolist() == [1, 2] for s in s2i)
    assert all(not (s.targets.instance_map > 0).any() for s in bestie)


@pytest.mark.parametrize("semantic_from_affinity", [False, True])
def test_the_i2s_term_is_in_the_loss_and_the_loss_falls(semantic_from_affinity: bool) -> None:
    losses: list[dict[str, float]] = []
    _train(replace(CONFIG, semantic_from_affinity=semantic_from_affinity, bestie=replace(BESTIE, iterations=14)),
           losses)
    assert all("i2s" in v and np.isfinite(v["loss"]) for v in losses)
    total = [v["loss"] for v in losses]
    assert np.mean(total[-3:]) < 0.8 * np.mean(total[:3])


def test_without_i2s_there_is_no_affinity_term_and_no_refined_map() -> None:
    losses: list[dict[str, float]] = []
    (result,) = _train(replace(CONFIG, i2s=False, bestie=replace(BESTIE, iterations=2)), losses)
    assert result.refined is None and all("i2s" not in v for v in losses)


def test_stage_two_trains_on_the_i2s_map_of_stage_one() -> None:
    first, second = _train(replace(CONFIG, stages=2, bestie=replace(BESTIE, iterations=2)))
    assert first.refined is not None
    assert all(np.array_equal(a, b) for a, b in zip(second.semantic, first.refined))
    assert all(m.shape == (32, 32) and m.dtype == np.uint8 for m in first.refined)


def test_export_gives_each_point_one_instance_and_a_box_to_the_point_without_region() -> None:
    config = replace(CONFIG, export_semantic="input", bestie=replace(BESTIE, iterations=2))
    (result,) = _train(config)
    images, _, points, classes = _tiny_set()
    exported = list(export_instances(result, images, points, classes, [1, 2], config))
    assert [sorted(k for _, k in found) for found in exported] == [[0, 1], [0, 1], [0, 1], [0, 1, 2]]
    box, k = exported[3][-1]
    assert k == 2 and box.cls == 2 and box.score == config.export_box_score
    ys, xs = np.nonzero(box.mask)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (24, 27, 24, 27)  # 4×4 around (26, 26)
    for found in exported:  # the two squares' pixels are split between their two points
        masks = [inst.mask for inst, _ in found]
        assert not np.logical_and(masks[0], masks[1]).any()


def test_training_is_deterministic_on_cpu() -> None:
    config = replace(CONFIG, bestie=replace(BESTIE, iterations=3))
    l1: list[dict[str, float]] = []
    l2: list[dict[str, float]] = []
    (r1,), (r2,) = _train(config, l1), _train(config, l2)
    assert l1 == l2
    for a, b in zip(r1.model.state_dict().values(), r2.model.state_dict().values()):
        assert torch.equal(a, b)


def test_the_stage_config_reads_mdm_and_the_sweep_fixes_the_ratio() -> None:
    params = Params.model_validate({"mdm": {"hard_pixel_ratio": 0.4, "beta": 2.0, "affinity_normalize": "none"}})
    assert make_p2seg_config(Params.model_validate({"mdm": {"semantic_from_affinity": True}}), VARIANTS.get("hrnet"),
                             seed=0).semantic_from_affinity
    default = make_p2seg_config(params, VARIANTS.get("hrnet"), seed=3)
    assert default.bestie.hard_pixel_ratio == 0.4 and default.beta == 2.0 and default.affinity_normalize is None
    assert default.bestie.seed == 3 and default.bestie.optimizer == "adamw"
    assert not default.semantic_from_affinity  # embedded default: S only after training (docs/p2seg.md)
    assert default.bestie.offset_loss == "smooth-l1"
    assert make_p2seg_config(params, VARIANTS.get("hpr-0.1"), seed=0).bestie.hard_pixel_ratio == 0.1
    s2i = make_p2seg_config(params, VARIANTS.get("s2i"), seed=0)
    assert not s2i.i2s and s2i.stages == 1
    assert make_p2seg_config(params, VARIANTS.get("bestie-s2i-i2s"), seed=0).s2i == "semantic-first"
    resnet = make_p2seg_config(params, VARIANTS.get("resnet"), seed=0).bestie
    assert (resnet.backbone, resnet.decoder) == (params.mdm.resnet_backbone, "panoptic-deeplab")
    assert default.bestie.decoder == "fuse"


def test_a_rerun_of_two_checkpointed_stages_resumes_both_to_the_same_weights(tmp_path) -> None:
    """Each stage checkpoints under its own name; a finished stage reloads instead of re-training."""
    from methods.checkpointing import Checkpointing

    config = replace(CONFIG, stages=2, bestie=replace(BESTIE, iterations=2))
    images, maps, points, classes = _tiny_set()
    calls: list[tuple[int, int]] = []

    def checkpointing(stage: int, bestie: BestieConfig, samples: list) -> Checkpointing:
        calls.append((stage, bestie.seed))
        return Checkpointing(tmp_path / f"stage{stage}.pt", fingerprint=f"s{stage}", every=1)

    def run(steps: list[int]):
        return train_p2seg(images=images, maps=maps, points=points, point_classes=classes, num_semantic=3,
                           thing_classes=[1, 2], config=config, progress=False, checkpointing=checkpointing,
                           on_step=lambda stage, step, v: steps.append(step))

    first_steps, again_steps = [], []
    first, again = run(first_steps), run(again_steps)
    assert calls == [(0, 0), (1, 1), (0, 0), (1, 1)]  # stage k trains with seed bestie.seed + k
    assert first_steps == [1, 2, 1, 2] and again_steps == []
    for a, b in zip(first, again):
        assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))


@pytest.mark.parametrize("grid", ["max-pool", "sample"])
def test_the_affinity_cell_of_a_single_class_pixel_off_its_corner(grid) -> None:
    """A 4×4 image with one class-1 pixel at (1, 1): max-pooled (release) the cell is class 1; sampled at
    its top-left pixel it is background."""
    semantic = torch.zeros(1, 4, 4, dtype=torch.long)
    semantic[0, 1, 1] = 1
    config = replace(CONFIG, affinity_labels=grid)
    _, sem, valid = affinity_targets(semantic, torch.zeros_like(semantic), (1, 1), config)
    assert valid is None
    assert (sem.tolist() == [[[[True]]]]) if grid == "max-pool" else (sem.tolist() == [[[0]]])


@pytest.mark.parametrize("grid", ["max-pool", "sample"])
def test_ignored_pixels_are_background_or_in_no_pair_of_the_affinity_loss(grid) -> None:
    """Two cells: the left all 255, the right class 1. As background (release) the left cell is in no
    mask and every cell is valid; dropped, the left cell is invalid."""
    semantic = torch.full((1, 4, 8), 255, dtype=torch.long)
    semantic[..., 4:] = 1
    inst = torch.zeros_like(semantic)
    config = replace(CONFIG, affinity_labels=grid)
    _, sem, valid = affinity_targets(semantic, inst, (1, 2), replace(config, affinity_ignore="background"))
    assert valid is None
    assert (sem[0, :, 0].tolist() == [[False, True]]) if grid == "max-pool" else (sem.tolist() == [[[0, 1]]])
    _, _, valid = affinity_targets(semantic, inst, (1, 2), replace(config, affinity_ignore="drop"))
    assert valid.tolist() == [[[False, True]]]


def test_max_pooled_affinity_labels_refuse_sampled_pairs() -> None:
    with pytest.raises(ValueError, match="max_pairs"):
        replace(CONFIG, affinity_labels="max-pool", max_pairs=64)


def _export_case():
    """60×60, class 1 on rows 0-15 × cols 0-50 (point 0 at (10, 10) holds it all); point 1 (class 1) at
    (20, 30) without pixels; points 2 (14, 40) and 3 (20, 10) of class 2, absent from the map."""
    semantic = np.zeros((60, 60), np.uint8)
    semantic[:16, :51] = 1
    found = [(Instance(semantic == 1, 1, 0.9, (10.0, 10.0)), 0)]
    return semantic, found, np.array([[10, 10], [20, 30], [14, 40], [20, 10]], np.float64), np.array([1, 1, 2, 2])


def test_points_without_pixels_get_default_boxes_minus_other_masks() -> None:
    semantic, found, points, classes = _export_case()
    config = replace(CONFIG, default_box=8, export_box_score=0.5, export_empty_points="box")
    out = empty_point_instances(semantic, found, points, classes, config)
    assert [(k, inst.cls, int(inst.mask.sum()), inst.score) for inst, k in out] == [
        (1, 1, 64, 0.5), (2, 2, 16, 0.5), (3, 2, 64, 0.5)]  # point 2's box loses rows 10-15 to point 0


def test_the_release_export_gives_present_classes_empty_masks_and_whole_boxes_by_its_coordinate_test() -> None:
    """Release: point 1 (class present) an empty mask of score 0; point 2 the whole 8×8 box [10, 18) ×
    [36, 44) over point 0's pixels (its y 14 is no recorded point's y); point 3 nothing (its y 20 and x 10
    are those of recorded points 1 and 0)."""
    semantic, found, points, classes = _export_case()
    config = replace(CONFIG, default_box=8, export_box_score=0.5, export_empty_points="release")
    out = empty_point_instances(semantic, found, points, classes, config)
    assert [(k, inst.cls, int(inst.mask.sum()), inst.score) for inst, k in out] == [(1, 1, 0, 0.0), (2, 2, 64, 0.5)]
    ys, xs = np.nonzero(out[1][0].mask)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (10, 17, 36, 43)
