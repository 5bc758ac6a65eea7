"""The generic segmentor engine: LR schedule, seeded batches, training, exact resume, prediction format."""

import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from torch import nn

from bench.predictions import instance_records
from methods.segmentor.backbone import TimmFPN
from methods.segmentor.engine import (
    CHECKPOINT_NAME,
    EngineConfig,
    batch_indices,
    hflip,
    load_checkpoint,
    lr_factor,
    predict,
    train,
)
from methods.segmentor.mask_rcnn import MaskRCNNOptions, build_mask_rcnn

SIZE = 64


pytestmark = pytest.mark.usefixtures("one_thread")


class ShapesSet:
    """Two classes of bright rectangles on dark noise: an easy set a tiny Mask R-CNN can overfit."""

    def __init__(self, n: int = 4, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.items = []
        for _ in range(n):
            image = rng.uniform(0, 0.2, (3, SIZE, SIZE)).astype(np.float32)
            masks, boxes, labels = [], [], []
            for label in (1, 2):
                h, w = rng.integers(12, 24, 2)
                y, x = rng.integers(0, SIZE - 24, 2)
                m = np.zeros((SIZE, SIZE), np.uint8)
                m[y:y + h, x:x + w] = 1
                image[label - 1, y:y + h, x:x + w] = 1.0
                masks.append(m)
                boxes.append([x, y, x + w, y + h])
                labels.append(label)
            self.items.append((torch.from_numpy(image), {
                "boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels),
                "masks": torch.from_numpy(np.stack(masks)), "weights": torch.ones(2)}))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]


def tiny_mask_rcnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    options = MaskRCNNOptions(anchor_sizes=(8, 16, 32, 64, 128), rpn_batch_size_per_image=32,
                              box_batch_size_per_image=16, representation_size=32, mask_head_layers=1,
                              rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50,
                              rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=20)
    return build_mask_rcnn(3, TimmFPN("resnet18", out_channels=16), min_size=SIZE, max_size=SIZE, options=options)


def _config(**kw) -> EngineConfig:
    base = dict(iterations=6, batch_size=2, lr=0.01, warmup_iters=2, lr_steps=(4,), checkpoint_every=2, seed=0,
                device="cpu")
    return EngineConfig(**{**base, **kw})


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------ schedule
def test_lr_warms_up_linearly_then_decays_at_each_step():
    c = EngineConfig(iterations=100, batch_size=1, lr=1.0, warmup_iters=10, warmup_factor=0.1, lr_steps=(50, 80),
                     lr_gamma=0.1)
    assert lr_factor(0, c) == pytest.approx(0.1)
    assert lr_factor(5, c) == pytest.approx(0.55)
    assert lr_factor(10, c) == 1.0
    assert lr_factor(49, c) == 1.0
    assert lr_factor(50, c) == pytest.approx(0.1)
    assert lr_factor(80, c) == pytest.approx(0.01)


def test_batches_cover_each_epoch_once_and_depend_only_on_seed_and_step():
    epoch = [i for step in range(5) for i in batch_indices(step, 10, 2, seed=3)]
    assert sorted(epoch) == list(range(10))
    assert batch_indices(7, 10, 2, seed=3) == batch_indices(7, 10, 2, seed=3)
    assert [batch_indices(s, 10, 2, seed=3) for s in range(5)] != [batch_indices(s, 10, 2, seed=4) for s in range(5)]


def test_hflip_mirrors_image_boxes_and_masks_together():
    image = torch.zeros(3, 4, 10)
    image[:, 1:3, 1:4] = 1
    masks = (image[:1] > 0).to(torch.uint8)
    target = {"boxes": torch.tensor([[1.0, 1.0, 4.0, 3.0]]), "masks": masks, "labels": torch.tensor([1])}
    flipped, t = hflip(image, target)
    assert t["boxes"].tolist() == [[6.0, 1.0, 9.0, 3.0]]
    ys, xs = torch.nonzero(t["masks"][0], as_tuple=True)
    assert (int(xs.min()), int(xs.max()) + 1) == (6, 9)
    assert torch.equal(flipped[0] > 0, t["masks"][0] > 0)


# ------------------------------------------------------------------------------------ training
@pytest.mark.slow
def test_training_reduces_the_loss_on_a_tiny_overfit_set():
    losses = []
    model = tiny_mask_rcnn()
    train(model, ShapesSet(), _config(iterations=20, lr=0.02, warmup_iters=3, lr_steps=(), checkpoint_every=0),
          on_step=lambda step, v: losses.append(v["loss"]), progress=False)
    assert len(losses) == 20
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    model = tiny_mask_rcnn()
    result = train(model, ShapesSet(), _config(), checkpoint_dir=tmp_path_factory.mktemp("full"), progress=False)
    return model, result


def test_same_seed_gives_identical_weights_on_cpu(uninterrupted):
    again = tiny_mask_rcnn()
    train(again, ShapesSet(), _config(), progress=False)
    assert _same_weights(again, uninterrupted[0])


def test_an_interrupted_run_resumes_from_its_last_checkpoint_and_ends_identical(uninterrupted, tmp_path):
    def interrupt(step, values):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_mask_rcnn(), ShapesSet(), _config(), checkpoint_dir=tmp_path, on_step=interrupt, progress=False)
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["iteration"] == 4

    resumed = tiny_mask_rcnn(seed=123)  # fresh weights: everything must come from the checkpoint
    result = train(resumed, ShapesSet(), _config(), checkpoint_dir=tmp_path, progress=False)
    assert result.resumed_from == 4
    assert _same_weights(resumed, uninterrupted[0])
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["iteration"] == 6


def test_a_checkpoint_of_another_configuration_is_not_resumed(tmp_path):
    train(tiny_mask_rcnn(), ShapesSet(), _config(iterations=2), checkpoint_dir=tmp_path, fingerprint="a",
          progress=False)
    result = train(tiny_mask_rcnn(), ShapesSet(), _config(iterations=2), checkpoint_dir=tmp_path, fingerprint="b",
                   progress=False)
    assert result.resumed_from == 0


class _NanModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, images, targets=None):
        return {"loss_a": self.w * 1.0, "loss_b": self.w * float("nan")}


def test_a_non_finite_loss_stops_training_naming_the_iteration():
    with pytest.raises(FloatingPointError, match=r"non-finite loss at iteration 1: .*loss_b"):
        train(_NanModel(), ShapesSet(n=1), _config(iterations=3), progress=False)


# ----------------------------------------------------------------------------------- prediction
class _FixedOutputs(nn.Module):
    """A convention-following model in eval mode with known outputs (3 detections, one empty mask)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, images, targets=None):
        outs = []
        for image in images:
            h, w = image.shape[-2:]
            masks = torch.zeros(3, 1, h, w)
            masks[0, 0, :2, :2] = 0.9
            masks[1, 0, 2:, 2:] = 0.6
            masks[2, 0] = 0.4  # below the threshold everywhere: dropped
            outs.append({"boxes": torch.zeros(3, 4), "labels": torch.tensor([1, 2, 1]),
                         "scores": torch.tensor([0.3, 0.8, 0.95]), "masks": masks})
        return outs


def test_predictions_are_best_first_thresholded_capped_and_loadable_by_pycocotools(tmp_path):
    images = [np.zeros((4, 5, 3), np.uint8)] * 3
    preds = list(predict(_FixedOutputs(), images, batch_size=2, mask_threshold=0.5, max_detections=2))
    assert len(preds) == 3
    assert preds[0].scores.tolist() == pytest.approx([0.8, 0.3])  # 0.95 had an empty mask; cap kept the top 2
    assert preds[0].labels.tolist() == [2, 1]
    assert preds[0].masks.dtype == bool and preds[0].masks.shape == (2, 4, 5)
    records = [r for k, p in enumerate(preds) for r in instance_records(k + 1, list(p.masks), [7, 3][:len(p.labels)],
                                                                         p.scores.tolist())]
    gt = COCO()
    gt.dataset = {"images": [{"id": k, "height": 4, "width": 5} for k in (1, 2, 3)], "annotations": [],
                  "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}]}
    gt.createIndex()
    path = tmp_path / "val_instances.json"
    path.write_text(json.dumps(records))
    assert len(gt.loadRes(str(path)).getAnnIds()) == 6
