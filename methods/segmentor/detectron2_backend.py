"""The detectron2 backend: Mask R-CNN trained through detectron2's documented API, when installed.

detectron2 is not on the package registries; its documentation installs it from source. This
module never imports it at import time: :func:`require_detectron2` checks for it before any work
and raises :class:`BackendUnavailable` with the fix. The conversion helpers (our training labels
→ a COCO instances JSON for ``register_coco_instances``; detectron2 ``Instances`` fields → COCO
result records; timm ResNet weights → detectron2 names) are plain Python and are tested without it.

:func:`train` follows detectron2's "Getting Started" recipe — ``get_cfg()`` merged with a model-zoo
config, ``register_coco_instances``, ``DefaultTrainer``, ``resume_or_load``, ``train()`` — with the
harness's segmentor params mapped onto the config (:func:`build_config`, docs/segmentor.md): a
ResNet of the backbone's depth trained from scratch (BatchNorm, nothing frozen, torchvision's pixel
normalisation), the FPN width, anchors, RPN / RoI sampling and head widths, flips, the schedule.
A checkpoint folder is resumed only when its fingerprint matches the job's; otherwise it is
removed. :func:`predict` runs the trained model and thresholds masks at the job's threshold.
Soft weights are not supported by detectron2's losses: weight-0 instances are left out.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BackendUnavailable", "INSTALL_HINT", "require_detectron2", "contiguous_ids", "coco_instances_json",
           "predictions_from_fields", "resnet_depth", "timm_resnet_to_detectron2", "Detectron2Settings",
           "NOT_MAPPED", "build_config", "train", "predict", "TrainOutcome"]

log = logging.getLogger(__name__)
DETECTRON2_COMMIT = "02b5c4e295e990042a714712c21dc79b731e8833"
INSTALL_HINT = (
    "Install it from source as its documentation says, into the project's uv environment "
    "(docs/segmentor.md): `uv sync --inexact --group detectron2` (setuptools<81: detectron2.model_zoo imports "
    "pkg_resources, which setuptools >= 81 removed), then `uv pip install --python .venv/bin/python "
    "--no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git@"
    f"{DETECTRON2_COMMIT}'` (needs a C++ compiler; nvcc for CUDA). Afterwards use `uv run --no-sync` or "
    "`uv run --group detectron2`, so that uv does not re-sync setuptools. "
    "Or set segmentor.backend=torchvision (the default), which needs nothing else."
)
FINGERPRINT_FILE = "fingerprint.txt"
#: timm / torchvision ResNet names → the depth of detectron2's ``build_resnet_backbone``.
RESNET_DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101, "resnet152": 152}
#: Segmentor params detectron2 does not honour, and why (recorded in run.json).
NOT_MAPPED = {
    "soft_weights": "detectron2's losses are unweighted: weight-0 instances are left out, others count fully",
    "deterministic": "CPU training is not forced to deterministic algorithms; a resume restores weights, optimizer "
                     "and schedule but not the data order or RNG states, so it is not bit-identical",
    "losses": "detectron2's own loss definitions (RPN / box regression: smooth-L1 beta 0 = L1; torchvision: 1/9)",
    "weight_decay_norm": "set equal to weight_decay (the torchvision engine decays every parameter)",
}


class BackendUnavailable(ValueError):
    """The selected segmentor backend cannot run here (a params value this machine cannot honour); the
    message says how to fix it. A ValueError, so the CLI reports it as a one-line error."""


def require_detectron2(importer: Callable[[str], Any] = importlib.import_module) -> None:
    """Raise :class:`BackendUnavailable` unless ``detectron2`` and its model zoo import."""
    try:
        importer("detectron2")
        importer("detectron2.model_zoo")
    except Exception as exc:  # ImportError, or pkg_resources missing inside model_zoo
        raise BackendUnavailable(
            f"segmentor.backend = detectron2, but detectron2 cannot be imported ({type(exc).__name__}: {exc}). "
            + INSTALL_HINT) from exc


def detectron2_installed() -> bool:
    return importlib.util.find_spec("detectron2") is not None


def resnet_depth(backbone: str) -> int:
    """The detectron2 ResNet depth of ``segmentor.backbone`` (a timm name); other backbones raise."""
    if backbone not in RESNET_DEPTHS:
        raise BackendUnavailable(f"segmentor.backbone = {backbone!r}: the detectron2 backend builds detectron2's "
                                 f"ResNet-FPN; use one of {', '.join(RESNET_DEPTHS)}, or segmentor.backend=torchvision")
    return RESNET_DEPTHS[backbone]


def timm_resnet_to_detectron2(state: Mapping[str, Any]) -> dict[str, Any]:
    """A timm / torchvision ResNet ``state_dict`` renamed to detectron2's ``ResNet`` (``backbone.bottom_up``)
    names; the classifier (``fc.*``) is dropped. ``conv1``/``bn1`` → ``stem.conv1``/``.norm``;
    ``layer{L}.{b}.conv{k}``/``bn{k}`` → ``res{L+1}.{b}.conv{k}``/``.norm``; ``downsample.0/1`` → ``shortcut``."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if key.startswith("fc."):
            continue
        new = re.sub(r"^conv1\.", "stem.conv1.", key)
        new = re.sub(r"^bn1\.", "stem.conv1.norm.", new)
        new = re.sub(r"^layer(\d)\.", lambda m: f"res{int(m.group(1)) + 1}.", new)
        new = re.sub(r"\.bn(\d)\.", r".conv\1.norm.", new)
        new = new.replace(".downsample.0.", ".shortcut.").replace(".downsample.1.", ".shortcut.norm.")
        out[new] = value
    return out


def contiguous_ids(category_ids: Iterable[int]) -> dict[int, int]:
    """detectron2's ``thing_dataset_id_to_contiguous_id`` for a COCO JSON: sorted ids → 0..K-1."""
    return {cid: k for k, cid in enumerate(sorted({int(c) for c in category_ids}))}


def coco_instances_json(
    images: Sequence[Mapping[str, Any]],
    instances: Mapping[int, Sequence[tuple[int, Mapping[str, Any], float]]],
    categories: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """A COCO instances dict detectron2's ``load_coco_json`` reads.

    Args:
        images: ``{id, file_name, height, width}`` (``file_name`` relative to the image root).
        instances: image id → ``(category_id, compressed RLE, weight)``; weight-0 instances are left out.
        categories: ``{id, name}`` of the thing classes.
    """
    from pycocotools import mask as mask_utils

    annotations = []
    for image in images:
        for category_id, rle, weight in instances.get(int(image["id"]), ()):
            if weight <= 0:
                continue
            counts = rle["counts"]
            compressed = {"size": [int(v) for v in rle["size"]],
                          "counts": counts if isinstance(counts, bytes) else str(counts).encode("ascii")}
            annotations.append({"id": len(annotations) + 1, "image_id": int(image["id"]),
                                "category_id": int(category_id),
                                "segmentation": {"size": compressed["size"],
                                                 "counts": compressed["counts"].decode("ascii")},
                                "area": float(mask_utils.area(compressed)),
                                "bbox": [float(v) for v in mask_utils.toBbox(compressed)], "iscrowd": 0})
    return {"images": [{k: image[k] for k in ("id", "file_name", "height", "width")} for image in images],
            "annotations": annotations,
            "categories": [{"id": int(c["id"]), "name": str(c["name"])} for c in categories]}


def predictions_from_fields(pred_masks: np.ndarray, pred_classes: np.ndarray, scores: np.ndarray,
                            contiguous_to_category: Mapping[int, int], *, max_detections: int
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """detectron2 ``Instances`` fields (bool masks (N, H, W), 0-based classes, scores) → masks,
    dataset category ids and scores, best first, at most ``max_detections``, empty masks left out."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    masks = np.asarray(pred_masks, dtype=bool)[order]
    keep = np.flatnonzero(masks.any(axis=(1, 2)))[:max_detections]
    cats = np.array([contiguous_to_category[int(c)] for c in np.asarray(pred_classes)[order]], dtype=np.int64)
    return masks[keep], cats[keep], np.asarray(scores, dtype=np.float64)[order][keep]


@dataclass(frozen=True)
class Detectron2Settings:
    """The segmentor params, as the detectron2 config keys they set (:func:`build_config`)."""

    config_name: str
    depth: int
    fpn_channels: int
    anchor_sizes: tuple[int, ...]
    aspect_ratios: tuple[float, ...]
    rpn_pre_nms_top_n_train: int
    rpn_post_nms_top_n_train: int
    rpn_pre_nms_top_n_test: int
    rpn_post_nms_top_n_test: int
    rpn_batch_size_per_image: int
    box_batch_size_per_image: int
    representation_size: int
    mask_head_layers: int
    box_nms_thresh: float
    ims_per_batch: int
    base_lr: float
    momentum: float
    weight_decay: float
    max_iter: int
    steps: tuple[int, ...]
    gamma: float
    warmup_iters: int
    warmup_factor: float
    checkpoint_period: int
    min_size_train: tuple[int, ...]
    max_size: int
    hflip: bool
    mask_threshold: float
    detections_per_image: int
    score_threshold: float
    seed: int
    amp: bool
    workers: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))


def build_config(s: Detectron2Settings, *, dataset: str, num_classes: int, output_dir: Path, device: str) -> Any:
    """The detectron2 ``CfgNode``: the model-zoo config with every mapped segmentor param set."""
    from detectron2 import model_zoo
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(s.config_name))
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (dataset,), ()
    cfg.DATALOADER.NUM_WORKERS = s.workers
    cfg.INPUT.MASK_FORMAT = "bitmask"  # the labels are RLE masks, not polygons
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING = tuple(s.min_size_train), "choice"
    cfg.INPUT.MAX_SIZE_TRAIN = cfg.INPUT.MAX_SIZE_TEST = s.max_size
    cfg.INPUT.MIN_SIZE_TEST = s.min_size_train[-1]
    cfg.INPUT.RANDOM_FLIP = "horizontal" if s.hflip else "none"
    m = cfg.MODEL
    m.DEVICE, m.WEIGHTS = device, ""
    # From scratch: no frozen (FrozenBN / FREEZE_AT) random layers; torchvision's normalisation, in BGR 0..255.
    m.PIXEL_MEAN, m.PIXEL_STD = [103.53, 116.28, 123.675], [57.375, 57.12, 58.395]
    m.BACKBONE.FREEZE_AT = 0
    m.RESNETS.DEPTH, m.RESNETS.NORM, m.RESNETS.STRIDE_IN_1X1 = s.depth, "BN", False
    m.RESNETS.RES2_OUT_CHANNELS = 64 if s.depth < 50 else 256
    m.FPN.OUT_CHANNELS = s.fpn_channels
    m.ANCHOR_GENERATOR.SIZES = [[int(a)] for a in s.anchor_sizes]
    m.ANCHOR_GENERATOR.ASPECT_RATIOS = [[float(r) for r in s.aspect_ratios]]
    m.RPN.PRE_NMS_TOPK_TRAIN, m.RPN.POST_NMS_TOPK_TRAIN = s.rpn_pre_nms_top_n_train, s.rpn_post_nms_top_n_train
    m.RPN.PRE_NMS_TOPK_TEST, m.RPN.POST_NMS_TOPK_TEST = s.rpn_pre_nms_top_n_test, s.rpn_post_nms_top_n_test
    m.RPN.BATCH_SIZE_PER_IMAGE = s.rpn_batch_size_per_image
    m.ROI_HEADS.BATCH_SIZE_PER_IMAGE, m.ROI_HEADS.NUM_CLASSES = s.box_batch_size_per_image, num_classes
    m.ROI_HEADS.SCORE_THRESH_TEST, m.ROI_HEADS.NMS_THRESH_TEST = s.score_threshold, s.box_nms_thresh
    m.ROI_BOX_HEAD.NUM_FC, m.ROI_BOX_HEAD.FC_DIM = 2, s.representation_size
    m.ROI_MASK_HEAD.NUM_CONV, m.ROI_MASK_HEAD.CONV_DIM = s.mask_head_layers, s.fpn_channels
    cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR = s.ims_per_batch, s.base_lr
    cfg.SOLVER.MOMENTUM, cfg.SOLVER.WEIGHT_DECAY = s.momentum, s.weight_decay
    cfg.SOLVER.WEIGHT_DECAY_NORM = s.weight_decay
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS, cfg.SOLVER.GAMMA = s.max_iter, tuple(s.steps), s.gamma
    cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.WARMUP_FACTOR = s.warmup_iters, s.warmup_factor
    cfg.SOLVER.CHECKPOINT_PERIOD = s.checkpoint_period
    cfg.SOLVER.AMP.ENABLED = s.amp and device == "cuda"
    cfg.TEST.DETECTIONS_PER_IMAGE, cfg.TEST.EVAL_PERIOD = s.detections_per_image, 0
    cfg.SEED = s.seed
    cfg.OUTPUT_DIR = str(output_dir)
    cfg.freeze()
    return cfg


@dataclass
class TrainOutcome:
    """What :func:`train` did: the trained model and its config, where it resumed, its wall time, losses."""

    model: Any
    cfg: Any
    iterations: int
    resumed_from: int
    seconds: float
    last_losses: dict[str, float]

    @property
    def seconds_per_step(self) -> float:
        steps = self.iterations - self.resumed_from
        return self.seconds / steps if steps else float("nan")


def _prepare_output(output_dir: Path, fingerprint: str) -> None:
    """Keep ``output_dir`` (a resumable detectron2 run) only when it was written for ``fingerprint``."""
    marker = output_dir / FINGERPRINT_FILE
    if output_dir.is_dir():
        found = marker.read_text(encoding="utf-8").strip() if marker.is_file() else None
        if found == fingerprint:
            return
        log.warning("ignoring the detectron2 checkpoints in %s: they belong to another configuration or labels",
                    output_dir)
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True)
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(fingerprint + "\n", encoding="utf-8")
    os.replace(tmp, marker)


def train(s: Detectron2Settings, *, train_json: Path, image_root: Path, num_classes: int, output_dir: Path,
          fingerprint: str, backbone_weights: str | Path | None = None,
          on_step: Callable[[int, dict[str, float]], None] | None = None) -> TrainOutcome:
    """Train Mask R-CNN with ``DefaultTrainer`` on a COCO instances file; resume from ``output_dir`` when its
    checkpoints were written for the same ``fingerprint`` (else they are removed). ``backbone_weights``: a
    timm / torchvision ResNet checkpoint of the same depth, loaded into the ResNet before the first step.
    ``on_step(step from 1, {loss terms, "loss", "lr"})`` after each step."""
    require_detectron2()
    import torch
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances
    from detectron2.engine import DefaultTrainer, HookBase
    from detectron2.utils.events import CommonMetricPrinter, JSONWriter

    _prepare_output(output_dir, fingerprint)
    name = f"wsis_train_{fingerprint[:16]}_{os.getpid()}"
    register_coco_instances(name, {}, str(train_json), str(image_root))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = build_config(s, dataset=name, num_classes=num_classes, output_dir=output_dir, device=device)
    (output_dir / "config.yaml").write_text(cfg.dump(), encoding="utf-8")
    last: dict[str, float] = {}

    class Trainer(DefaultTrainer):
        def build_writers(self) -> list[Any]:  # no TensorBoard event files
            return [CommonMetricPrinter(self.max_iter), JSONWriter(str(output_dir / "metrics.json"))]

    class StepLog(HookBase):
        def after_step(self) -> None:
            latest = self.trainer.storage.latest()
            values = {("loss" if k == "total_loss" else k): float(v) for k, (v, it) in latest.items()
                      if it == self.trainer.iter and (k.startswith("loss_") or k in ("total_loss", "lr"))}
            last.clear()
            last.update(values)
            if on_step is not None:
                on_step(self.trainer.iter + 1, values)

    try:
        trainer = Trainer(cfg)
        trainer.register_hooks([StepLog()])
        trainer.resume_or_load(resume=True)
        start = trainer.start_iter
        if start == 0 and backbone_weights:
            _load_backbone(trainer.model, Path(backbone_weights))
        if start:
            log.info("resuming the detectron2 run in %s at iteration %d of %d", output_dir, start, s.max_iter)
        t0 = time.perf_counter()
        if start < s.max_iter:
            trainer.train()
        seconds = time.perf_counter() - t0
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    return TrainOutcome(trainer.model, cfg, s.max_iter, start, seconds, dict(last))


def _load_backbone(model: Any, path: Path) -> None:
    import torch

    if not path.is_file():
        raise FileNotFoundError(f"segmentor.backbone_init: {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    bottom_up = model.backbone.bottom_up
    converted = timm_resnet_to_detectron2(state)
    missing = sorted(k for k in bottom_up.state_dict() if k not in converted)
    if missing:
        raise ValueError(f"segmentor.backbone_init: {path} is not a ResNet checkpoint of this depth "
                         f"({len(missing)} keys missing, e.g. {missing[:3]})")
    bottom_up.load_state_dict({k: converted[k] for k in bottom_up.state_dict()}, strict=True)


def predict(model: Any, cfg: Any, images: Iterable[tuple[int, np.ndarray]], category_ids: Sequence[int], *,
            mask_threshold: float, max_detections: int, batch_size: int = 4
            ) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Per ``(image id, uint8 RGB)``: ``(image id, bool masks, dataset category ids, scores)``, best first.
    Resizing is detectron2's test resize; masks are pasted at ``mask_threshold`` (detectron2's
    ``DefaultPredictor`` fixes 0.5)."""
    import torch
    from detectron2.data import transforms as T
    from detectron2.modeling.postprocessing import detector_postprocess

    resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    to_category = {k: cid for cid, k in contiguous_ids(category_ids).items()}
    model.eval()

    def run(batch: list[tuple[int, np.ndarray]]) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        inputs = []
        for _, rgb in batch:
            bgr = np.ascontiguousarray(rgb[:, :, ::-1])
            resized = resize.get_transform(bgr).apply_image(bgr)
            inputs.append({"image": torch.as_tensor(resized.astype("float32").transpose(2, 0, 1)),
                           "height": rgb.shape[0], "width": rgb.shape[1]})
        with torch.no_grad():
            outputs = model.inference(inputs, do_postprocess=False)
        for (image_id, rgb), out in zip(batch, outputs):
            inst = detector_postprocess(out, rgb.shape[0], rgb.shape[1], mask_threshold=mask_threshold).to("cpu")
            masks = inst.pred_masks.numpy() if inst.has("pred_masks") else np.zeros((0, *rgb.shape[:2]), bool)
            yield (image_id, *predictions_from_fields(masks, inst.pred_classes.numpy(), inst.scores.numpy(),
                                                      to_category, max_detections=max_detections))

    batch: list[tuple[int, np.ndarray]] = []
    for item in images:
        batch.append(item)
        if len(batch) == batch_size:
            yield from run(batch)
            batch = []
    if batch:
        yield from run(batch)
