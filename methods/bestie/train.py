"""BESTIE training (Sec. 3.4–3.5, Listing 1), inference (Sec. 3.2) and the refined train labels.

One training step: augment (photometric distortion, random scale, random crop with random padding,
flip — the release's recipe, :mod:`methods.bestie.augment`), build the
pseudo targets of the batch (from the per-image :class:`~methods.bestie.transfer.ImageTargets`),
forward, build the refined targets from the detached outputs (self-refinement, point or image
setting), and minimise Eq. 6 (:func:`~methods.bestie.losses.bestie_loss`). Adam, linear warm-up
then poly LR (release). Seeded; deterministic on CPU; AMP on CUDA.

No pipeline imports: numpy, scipy, opencv, torch, timm, tqdm (and the shared `methods.runtime`, `methods.backbones`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Iterator, Literal, Sequence, get_args

import cv2
import numpy as np
import torch

from methods.backbones import IMAGENET_MEAN, normalize_images
from methods.checkpointing import Checkpointing
from methods.runtime import deterministic, mixed_precision, resolve_device

from .augment import distort, sample_distortion, sample_scale
from .instances import ClusterConfig, InferenceScore, Instance, group_to_points, segment_instances
from .losses import HardPixelPool, InstanceTargets, LossWeights, OffsetLoss, bestie_loss
from .model import BestieNet
from .transfer import ImageTargets, OffsetTarget, TransferStats, gaussian_center_map, offset_field, pseudo_instances

log = logging.getLogger(__name__)

__all__ = ["BestieConfig", "Sample", "TrainBatch", "ExtraLoss", "build_pseudo_targets",
           "targets_from_instances", "transfer_samples",
           "train_bestie", "image_batches", "predict_outputs", "infer_instances", "annotated_instances",
           "refined_instances", "refinement_points",
           "normalize_images"]



@dataclass(frozen=True)
class BestieConfig:
    """BESTIE's hyper-parameters. The pipeline builds it from the validated ``bestie`` params section (the one
    place their defaults and documentation live: bench/config/schema.py, ``BestieParams``) by copying every
    field of the same name (bench/bestie_family.py ``make_config``); the fields below it derives are the
    section's in another form (``cluster`` from ``cluster_*``, ``loss_weights`` from ``lambda_*``, ...). Only
    the run's own settings have defaults here."""

    # network
    backbone: str
    out_indices: tuple[int, ...]
    decoder: str  # methods.bestie.model.DECODERS: release HRNet path (fuse) / ResNet path (panoptic-deeplab)
    decoder_channels: int
    head_channels: int
    # optimisation (paper: Adam 5e-5, poly; release: + 2000-iteration warm-up from 0.001x)
    iterations: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_iterations: int
    warmup_factor: float
    poly_power: float
    # augmentation (release: photometric distortion, random scale 0.7-1.3 in steps of 0.1, crop 416, flip)
    crop_size: int
    scale_range: tuple[float, float]
    scale_step: float  # 0: uniform on scale_range
    hflip: bool
    photometric_distort: bool
    # semantic knowledge transfer
    sigma: float
    min_area: int
    offset_target: OffsetTarget
    center_map_source: Literal["instances", "cues"]
    # guidance / refinement
    iag: bool
    refine: bool
    refine_start: float
    refine_threshold: float
    refine_border_points: Literal["keep", "drop"]  # release: points on row 0 / column 0 skipped (drop)
    nms_kernel: int
    refine_max_per_component: int
    refined_offset_target: Literal["centroid", "center"]
    refined_center_loss: bool
    cluster: ClusterConfig | None
    # loss
    loss_weights: LossWeights
    combine: Literal["sum", "mean"]
    hard_pixel_ratio: float | None  # None: plain CE over every pixel
    hard_pixel_pool: HardPixelPool  # release: int(r·N) of all pixels (all)
    # inference
    infer_threshold: float
    score: InferenceScore  # release: centre score × mean class probability
    flip_tta: bool
    flip_tta_offsets: Literal["unflipped", "average"]  # release: the unflipped pass's offsets
    val_clean: bool  # release --val_clean: inference reads the image labels (and points) of the image
    # the run's own settings
    supervision: Literal["points", "image"] = "points"
    backbone_weights: str | None = None  # a local checkpoint of the backbone (None: random weights)
    optimizer: Literal["adam", "adamw"] = "adam"  # BESTIE: Adam; P2Seg sets mdm.optimizer
    offset_loss: OffsetLoss = "l1"  # BESTIE: L1; P2Seg sets mdm.offset_loss
    seed: int = 0
    amp: bool = True
    device: str | None = None

    def __post_init__(self) -> None:
        if self.nms_kernel < 1 or self.nms_kernel % 2 == 0:
            raise ValueError(f"nms_kernel must be a positive odd integer, got {self.nms_kernel}")
        if self.iterations < 1 or self.batch_size < 1 or self.crop_size < 8:
            raise ValueError("iterations and batch_size must be >= 1, crop_size >= 8")
        if not 0.0 <= self.refine_start < 1.0:
            raise ValueError(f"refine_start must be in [0, 1), got {self.refine_start}")
        if self.score not in get_args(InferenceScore):
            raise ValueError(f"score must be one of {get_args(InferenceScore)}, got {self.score!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Sample:
    """One training image: RGB, its WSSS map, the pseudo targets and the instance cues."""

    image: np.ndarray  # uint8 (H, W, 3)
    semantic: np.ndarray  # uint8 (H, W), 255 = ignore
    targets: ImageTargets


# ---------------------------------------------------------------------------------------------
# Pseudo targets
# ---------------------------------------------------------------------------------------------


def targets_from_instances(
    shape: tuple[int, int], masks: Sequence[np.ndarray], centers: Sequence[tuple[float, float]],
    classes: Sequence[int], cues_yx: np.ndarray, cue_classes: np.ndarray,
) -> ImageTargets:
    """Instance masks (later ones win on overlap) + centres → :class:`ImageTargets`."""
    instance_map = np.zeros(shape, dtype=np.int32)
    for k, m in enumerate(masks):
        instance_map[m] = k + 1
    return ImageTargets(instance_map, np.asarray(centers, np.float32).reshape(-1, 2),
                        np.asarray(classes, np.int64).reshape(-1),
                        np.asarray(cues_yx, np.float32).reshape(-1, 2), np.asarray(cue_classes, np.int64).reshape(-1))


def build_pseudo_targets(
    semantic: np.ndarray, cues_yx: np.ndarray, cue_classes: np.ndarray, config: BestieConfig
) -> tuple[ImageTargets, TransferStats]:
    """Semantic knowledge transfer for one image (:func:`~methods.bestie.transfer.pseudo_instances`)."""
    found, stats = pseudo_instances(semantic, cues_yx, cue_classes, min_area=config.min_area,
                                    offset_target=config.offset_target)
    return targets_from_instances(semantic.shape, [p.mask for p in found], [p.center for p in found],
                                  [p.semantic_class for p in found], cues_yx, cue_classes), stats


def transfer_samples(
    images: Sequence[np.ndarray], maps: Sequence[np.ndarray], cues_yx: Sequence[np.ndarray],
    cue_classes: Sequence[np.ndarray], config: BestieConfig,
) -> tuple[list[Sample], TransferStats]:
    """The training samples of a run: each image with its WSSS map and the pseudo targets of the
    semantic knowledge transfer (:func:`build_pseudo_targets`), and the transfer's counts summed."""
    stats = TransferStats()
    samples: list[Sample] = []
    for image, semantic, yx, classes in zip(images, maps, cues_yx, cue_classes, strict=True):
        targets, image_stats = build_pseudo_targets(semantic, yx, classes, config)
        stats.add(image_stats)
        samples.append(Sample(image, semantic, targets))
    return samples, stats


# ---------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------


@dataclass
class _Aug:
    image: np.ndarray
    semantic: np.ndarray
    instance_map: np.ndarray
    centers: np.ndarray
    classes: np.ndarray
    cues: np.ndarray
    cue_classes: np.ndarray


def _augment(sample: Sample, config: BestieConfig, rng: np.random.Generator) -> _Aug:
    """The release's recipe: photometric distortion of the image (optional), random scale (bilinear
    image, nearest maps), padding to the crop on randomly chosen sides (mean colour / background, as the
    release's ``RandomCrop(random_pad=True)``), random crop, horizontal flip; centre and cue coordinates
    follow (pixel-centre convention)."""
    t = sample.targets
    image, semantic, inst = sample.image, sample.semantic, t.instance_map
    if config.photometric_distort:
        image = distort(image, sample_distortion(rng))
    centers, cues = t.centers.astype(np.float64).copy(), t.cues.astype(np.float64).copy()
    s = sample_scale(*config.scale_range, config.scale_step, rng)
    h, w = semantic.shape
    if s != 1.0:
        nh, nw = max(1, int(round(h * s))), max(1, int(round(w * s)))
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        semantic = cv2.resize(semantic, (nw, nh), interpolation=cv2.INTER_NEAREST)
        inst = cv2.resize(inst, (nw, nh), interpolation=cv2.INTER_NEAREST)
        sy, sx = nh / h, nw / w
        for arr in (centers, cues):
            arr[:, 0] = (arr[:, 0] + 0.5) * sy - 0.5
            arr[:, 1] = (arr[:, 1] + 0.5) * sx - 0.5
        h, w = nh, nw
    c = config.crop_size
    ph, pw = max(c - h, 0), max(c - w, 0)
    if ph or pw:
        top, left = int(rng.integers(0, ph + 1)), int(rng.integers(0, pw + 1))
        fill = tuple(int(v) for v in np.round(np.asarray(IMAGENET_MEAN) * 255))
        bottom, right = ph - top, pw - left
        image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=fill)
        widths = ((top, bottom), (left, right))
        semantic, inst = np.pad(semantic, widths), np.pad(inst, widths)  # background label 0, no instance
        for arr in (centers, cues):
            arr[:, 0] += top
            arr[:, 1] += left
        h, w = semantic.shape
    y0, x0 = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
    image, semantic, inst = image[y0:y0 + c, x0:x0 + c], semantic[y0:y0 + c, x0:x0 + c], inst[y0:y0 + c, x0:x0 + c]
    for arr in (centers, cues):
        arr[:, 0] -= y0
        arr[:, 1] -= x0
    if config.hflip and rng.random() < 0.5:
        image, semantic, inst = image[:, ::-1], semantic[:, ::-1], inst[:, ::-1]
        for arr in (centers, cues):
            arr[:, 1] = c - 1 - arr[:, 1]
    inside = (cues[:, 0] > -0.5) & (cues[:, 0] < c - 0.5) & (cues[:, 1] > -0.5) & (cues[:, 1] < c - 0.5)
    return _Aug(np.ascontiguousarray(image), np.ascontiguousarray(semantic), np.ascontiguousarray(inst),
                centers, t.classes, np.round(cues[inside]).astype(np.int64), t.cue_classes[inside])


# ---------------------------------------------------------------------------------------------
# Targets of a batch
# ---------------------------------------------------------------------------------------------


def _channel_index(thing_classes: np.ndarray) -> np.ndarray:
    lut = np.full(256, -1, dtype=np.int64)
    lut[thing_classes] = np.arange(len(thing_classes))
    return lut


def _pseudo_batch(batch: list[_Aug], thing_classes: np.ndarray, config: BestieConfig) -> dict[str, np.ndarray]:
    lut = _channel_index(thing_classes)
    off, w, ctr, gt_ctr = [], [], [], []
    for a in batch:
        shape = a.semantic.shape
        present = np.unique(a.instance_map)
        present = present[present > 0] - 1
        off.append(offset_field(a.instance_map, a.centers))
        w.append((a.instance_map > 0).astype(np.float32) if config.iag else np.ones(shape, np.float32))
        cue_map = gaussian_center_map(shape, a.cues, lut[a.cue_classes], len(thing_classes), sigma=config.sigma)
        gt_ctr.append(cue_map)
        if config.supervision == "points" or config.center_map_source == "cues":
            ctr.append(cue_map)  # Sec. 4.3: the GT centre map replaces the pseudo/refined centre maps
        else:
            ctr.append(gaussian_center_map(shape, a.centers[present], lut[a.classes[present]], len(thing_classes),
                                           sigma=config.sigma))
    return {"offset": np.stack(off), "weight": np.stack(w), "center": np.stack(ctr), "cue_center": np.stack(gt_ctr)}


def refinement_points(cues: np.ndarray, cue_classes: np.ndarray, config: BestieConfig) -> tuple[np.ndarray, np.ndarray]:
    """The points (y, x) of a training crop and their classes that the point-setting self-refinement
    groups pixels to: all of them (``refine_border_points = "keep"``), or those off row 0 and column 0
    (``"drop"``: the release's ``refine_label_generation_with_point`` reads 0 as its padding sentinel)."""
    if config.refine_border_points == "keep":
        return cues, cue_classes
    if config.refine_border_points != "drop":
        raise ValueError(f"refine_border_points must be 'keep' or 'drop', got {config.refine_border_points!r}")
    kept = (cues[:, 0] != 0) & (cues[:, 1] != 0)
    return cues[kept], cue_classes[kept]


def _refined_batch(
    batch: list[_Aug], outputs: dict[str, np.ndarray], thing_classes: np.ndarray, cue_center: np.ndarray,
    config: BestieConfig,
) -> dict[str, np.ndarray]:
    """Self-refinement targets (Sec. 3.5) from the detached outputs of the batch, with the refined
    instance maps (``"instance"``: 0 = no instance, k + 1 = the k-th grouped mask)."""
    lut = _channel_index(thing_classes)
    off, w, ctr, maps = [], [], [], []
    for i, a in enumerate(batch):
        shape = a.semantic.shape
        offset = outputs["offset"][i]
        if config.supervision == "points":
            cues, cue_classes = refinement_points(a.cues, a.cue_classes, config)
            grouped = group_to_points(offset, a.semantic, cues, cue_classes)
            masks = [grouped == k + 1 for k in range(len(cues))]
            centers = [tuple(map(float, cues[k])) for k in range(len(cues))]
            scores = [1.0] * len(masks)
            classes = list(cue_classes)
        else:
            found = _refinement_instances({"prob": outputs["prob"][i], "center": outputs["center"][i],
                                           "offset": offset}, a.semantic, thing_classes, config)
            masks = [f.mask for f in found]
            centers = [f.center for f in found]
            scores = [f.score for f in found]
            classes = [f.cls for f in found]
        keep = [k for k, m in enumerate(masks) if m.any()]
        if config.refined_offset_target == "centroid":
            centers = [tuple(float(v.mean()) for v in np.nonzero(masks[k])) if k in keep else centers[k]
                       for k in range(len(masks))]
        inst = np.zeros(shape, dtype=np.int32)
        weight = np.zeros(shape, dtype=np.float32)
        for k in keep:
            inst[masks[k]] = k + 1
            weight[masks[k]] = scores[k]
        if not config.iag:
            weight[inst == 0] = 1.0
        off.append(offset_field(inst, centers) if centers else np.zeros((2, *shape), np.float32))
        w.append(weight)
        maps.append(inst)
        if config.supervision == "points":
            ctr.append(cue_center[i])
        else:
            ctr.append(gaussian_center_map(shape, np.array([centers[k] for k in keep]).reshape(-1, 2),
                                           lut[np.array([classes[k] for k in keep], dtype=np.int64)],
                                           len(thing_classes), sigma=config.sigma))
    return {"offset": np.stack(off), "weight": np.stack(w), "center": np.stack(ctr), "instance": np.stack(maps)}


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


@dataclass
class TrainBatch:
    """What one training step saw, for losses added to Eq. 6 (e.g. P2Seg's I2S): the semantic
    targets (B, H, W) and the pseudo / refined instance maps (B, H, W; 0 = none) of the augmented
    crops, all on the training device; ``refined_instance`` is None before refinement starts."""

    semantic: torch.Tensor
    pseudo_instance: torch.Tensor
    refined_instance: torch.Tensor | None


#: ``extra_loss(outputs, batch)`` → named, already weighted loss terms added to the total.
ExtraLoss = Callable[[dict[str, torch.Tensor], TrainBatch], dict[str, torch.Tensor]]


def lr_factor(step: int, config: BestieConfig) -> float:
    """Linear warm-up from ``warmup_factor`` over ``warmup_iterations`` (release), then poly
    (1 − step/iterations)^power (paper and release); ``step`` counts from 0."""
    poly = (1.0 - step / config.iterations) ** config.poly_power
    if step < config.warmup_iterations:
        alpha = step / config.warmup_iterations
        return poly * (config.warmup_factor * (1 - alpha) + alpha)
    return poly


def network_options(config: BestieConfig) -> dict[str, object]:
    """The :class:`BestieNet` keyword arguments of a config: backbone, levels, decoder and widths."""
    return {"backbone": config.backbone, "out_indices": config.out_indices, "decoder": config.decoder,
            "decoder_channels": config.decoder_channels, "head_channels": config.head_channels,
            "backbone_weights": config.backbone_weights}


def build_model(num_semantic: int, num_things: int, config: BestieConfig) -> BestieNet:
    """BESTIE's network with the config's backbone, decoder and widths."""
    return BestieNet(num_semantic, num_things, **network_options(config))  # type: ignore[arg-type]


def train_bestie(
    *,
    samples: Sequence[Sample],
    num_semantic: int,
    thing_classes: Sequence[int],
    config: BestieConfig,
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    model_factory: Callable[[], BestieNet] | None = None,
    extra_loss: ExtraLoss | None = None,
    desc: str | None = None,
    checkpoints: Sequence[int] = (),
    on_checkpoint: Callable[[int, BestieNet], None] | None = None,
    checkpointing: Checkpointing | None = None,
) -> BestieNet:
    """Train BESTIE on ``samples`` (pseudo targets already built); returns the model in eval mode.

    ``thing_classes[c]`` is the semantic index of centre channel c. ``on_step(step, losses)`` is
    called after every step (from 1). A non-finite loss raises ``FloatingPointError`` naming the step.
    Methods built on BESTIE pass a ``model_factory`` (a :class:`BestieNet` subclass, built after the
    config's seed is set), ``extra_loss`` terms (P2Seg's I2S) and a progress-bar ``desc``; the loop
    is otherwise shared. ``on_checkpoint(step, model)`` is called after each step in ``checkpoints``
    with the model in eval mode (BESTIE Fig. 6 counts the true positives of the refined labels over
    training); training resumes in train mode, so checkpoints never change the trained weights.
    ``checkpointing`` saves and resumes the whole training state (:class:`Checkpointing`).
    """
    if not samples:
        raise ValueError("no training samples")
    things = np.asarray(thing_classes, dtype=np.int64)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = (model_factory() if model_factory is not None
             else build_model(num_semantic, len(things), config)).to(device)
    optimizer = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[config.optimizer]
    opt = optimizer(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, config))
    amp = mixed_precision(device, config.amp)
    scaler = amp.scaler
    n, bs = len(samples), min(config.batch_size, len(samples))
    order: list[int] = []
    refine_from = int(math.floor(config.refine_start * config.iterations)) + 1
    start = 1
    state = checkpointing.load(config.iterations) if checkpointing is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        order, start = list(state["order"]), int(state["step"]) + 1
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.iterations, initial=start - 1, desc=desc or f"bestie-{config.supervision}",
                   leave=False)
    model.train()
    with deterministic(device.type == "cpu"):
        for step in range(start, config.iterations + 1):
            if len(order) < bs:
                order = rng.permutation(n).tolist()
            idx, order = order[:bs], order[bs:]
            batch = [_augment(samples[i], config, rng) for i in idx]
            pseudo = _pseudo_batch(batch, things, config)
            x = torch.from_numpy(np.stack([a.image for a in batch])).permute(0, 3, 1, 2).to(device)
            sem_t = torch.from_numpy(np.stack([a.semantic for a in batch]).astype(np.int64)).to(device)
            with amp.autocast(device):
                out = model(normalize_images(x))
            out = {k: v.float() for k, v in out.items()}
            t = {k: torch.from_numpy(v).to(device) for k, v in pseudo.items()}
            pseudo_t = InstanceTargets(t["offset"], t["weight"], t["center"], t["weight"])
            refined_t, refined_instance = None, None
            if config.refine and step >= refine_from:
                det = {"offset": out["offset"].detach().cpu().numpy(), "center": out["center"].detach().cpu().numpy(),
                       "prob": out["semantic"].detach().softmax(1).cpu().numpy()}
                r = _refined_batch(batch, det, things, pseudo["cue_center"], config)
                rt = {k: torch.from_numpy(v).to(device) for k, v in r.items()}
                refined_instance = rt["instance"]
                refined_t = InstanceTargets(rt["offset"], rt["weight"], rt["center"] if config.refined_center_loss
                                            else None, rt["weight"] if config.refined_center_loss else None)
            losses = bestie_loss(semantic_logits=out["semantic"], center=out["center"], offset=out["offset"],
                                 semantic_target=sem_t, pseudo=pseudo_t, refined=refined_t,
                                 weights=config.loss_weights, combine=config.combine,
                                 hard_pixel_ratio=config.hard_pixel_ratio, hard_pixel_pool=config.hard_pixel_pool,
                                 offset_loss=config.offset_loss)
            if extra_loss is not None:
                pseudo_instance = torch.from_numpy(np.stack([a.instance_map for a in batch])).to(device)
                for name, term in extra_loss(out, TrainBatch(sem_t, pseudo_instance, refined_instance)).items():
                    losses[name] = term
                    losses["loss"] = losses["loss"] + term
            loss = losses["loss"]
            if not torch.isfinite(loss):
                if bar is not None:
                    bar.close()
                raise FloatingPointError(f"non-finite loss at step {step}: "
                                         f"{ {k: float(v.detach()) for k, v in losses.items()} }")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            values = {k: float(v.detach()) for k, v in losses.items()}
            values["lr"] = float(opt.param_groups[0]["lr"])
            if on_step is not None:
                on_step(step, values)
            if bar is not None:
                bar.set_postfix(loss=f"{values['loss']:.3f}")
                bar.update(1)
            if on_checkpoint is not None and step in checkpoints:
                model.eval()
                on_checkpoint(step, model)
                model.train()
            if checkpointing is not None and (step % checkpointing.every == 0 or step == config.iterations):
                checkpointing.save({"step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
                                      "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                                      "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                                      "order": order})
    if bar is not None:
        bar.close()
    model.eval()
    return model


# ---------------------------------------------------------------------------------------------
# Prediction
# ---------------------------------------------------------------------------------------------


def image_batches(images: Sequence[np.ndarray], batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
    """Consecutive runs of same-shape (H, W, 3) uint8 images, at most ``batch_size`` at a time, as
    normalised (B, 3, H, W) tensors on ``device`` (inference batches; order kept)."""
    k = 0
    while k < len(images):
        j = k
        while j < len(images) and j - k < batch_size and images[j].shape == images[k].shape:
            j += 1
        yield normalize_images(torch.from_numpy(np.stack(images[k:j])).permute(0, 3, 1, 2).to(device))
        k = j


@torch.no_grad()
def predict_outputs(
    model: BestieNet, images: Sequence[np.ndarray], *, flip_tta: bool = False,
    flip_tta_offsets: Literal["unflipped", "average"] = "unflipped", batch_size: int = 8,
) -> Iterator[dict[str, np.ndarray]]:
    """Per image ``{"prob": (S, H, W) softmax, "center": (C, H, W), "offset": (2, H, W)}`` (float32).
    ``flip_tta`` averages the probabilities and centres with those of the horizontally flipped input;
    the offsets are the unflipped pass's (release ``get_ins_map*``), or with ``flip_tta_offsets =
    "average"`` averaged too (the flipped dx negated back)."""
    model.eval()
    for x in image_batches(images, batch_size, next(model.parameters()).device):
        out = model(x)
        prob, center, offset = out["semantic"].float().softmax(1), out["center"].float(), out["offset"].float()
        if flip_tta:
            f = model(x.flip(-1))
            prob = 0.5 * (prob + f["semantic"].float().softmax(1).flip(-1))
            center = 0.5 * (center + f["center"].float().flip(-1))
            if flip_tta_offsets == "average":
                fo = f["offset"].float().flip(-1)
                offset = 0.5 * (offset + torch.stack([fo[:, 0], -fo[:, 1]], 1))
        for i in range(len(x)):
            yield {"prob": prob[i].cpu().numpy(), "center": center[i].cpu().numpy(),
                   "offset": offset[i].cpu().numpy()}


def clean_probabilities(prob: np.ndarray, thing_classes: Sequence[int], present: Iterable[int]) -> np.ndarray:
    """The release's ``val_clean``: class probabilities ``prob`` (S, H, W) with the channels of the thing
    classes (semantic indices) absent from the image-level labels ``present`` set to 0; background and
    stuff channels are kept (the release multiplies its C thing channels by the one-hot label)."""
    keep = set(int(c) for c in present)
    out = prob.copy()
    out[[c for c in thing_classes if int(c) not in keep]] = 0.0
    return out


def point_instances(
    outputs: dict[str, np.ndarray], semantic: np.ndarray, points_yx: np.ndarray, point_classes: np.ndarray,
) -> list[tuple[Instance, int]]:
    """The foreground of ``semantic`` grouped to the points of its class by the predicted offsets (Eq. 1),
    one instance per point that receives pixels, score = its mean class probability, with the point's
    index: the point-setting refinement (Sec. 4.3) and the release's ``get_ins_map_with_point``."""
    grouped = group_to_points(outputs["offset"], semantic, points_yx, point_classes)
    out: list[tuple[Instance, int]] = []
    for k in range(len(points_yx)):
        m = grouped == k + 1
        if m.any():
            cls = int(point_classes[k])
            out.append((Instance(m, cls, float(outputs["prob"][cls][m].mean()),
                                 (float(points_yx[k][0]), float(points_yx[k][1]))), k))
    return out


def infer_instances(
    outputs: dict[str, np.ndarray], thing_classes: Sequence[int], config: BestieConfig, *,
    present: Iterable[int] | None = None, points: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[Instance]:
    """Inference (Sec. 3.2): argmax semantic → components ≥ ``min_area`` → centres (threshold
    ``infer_threshold``, NMS) + clustering → Eq. (1); a component without a centre is one instance;
    scores by ``config.score`` (:func:`methods.bestie.instances._instance_score`).

    With ``config.val_clean`` (release ``--val_clean``) the image's own annotations are read
    (:func:`annotated_instances`: image-level labels ``present`` and, in the point setting, ``points`` =
    (yx, semantic classes))."""
    if config.val_clean:
        if present is None or (config.supervision == "points" and points is None):
            raise ValueError("val_clean inference needs the image-level labels (and, in the point setting, the points)")
        return [found for found, _ in annotated_instances(outputs, thing_classes, config, present=present,
                                                          points=points)]
    return _detected_instances(outputs, outputs["prob"].argmax(0), thing_classes, config)


def _detected_instances(outputs: dict[str, np.ndarray], semantic: np.ndarray, thing_classes: Sequence[int],
                        config: BestieConfig) -> list[Instance]:
    return segment_instances(semantic, outputs["prob"], outputs["center"], outputs["offset"],
                             np.asarray(thing_classes), threshold=config.infer_threshold, nms_kernel=config.nms_kernel,
                             min_area=config.min_area, cluster=config.cluster, max_per_component=None,
                             keep_centerless=True, score_rule=config.score)


def _refinement_instances(outputs: dict[str, np.ndarray], semantic: np.ndarray, thing_classes: Sequence[int],
                          config: BestieConfig) -> list[Instance]:
    """The image-setting refinement of ``semantic`` (the WSSS map): centres above ``refine_threshold``
    and clustered centres, a component with more than ``refine_max_per_component`` centres left out,
    centre-less components unlabelled, weights by the release's refinement rule."""
    return segment_instances(semantic, outputs["prob"], outputs["center"], outputs["offset"],
                             np.asarray(thing_classes), threshold=config.refine_threshold,
                             nms_kernel=config.nms_kernel, min_area=config.min_area, cluster=config.cluster,
                             max_per_component=config.refine_max_per_component, keep_centerless=False,
                             score_rule="refinement")


def annotated_instances(
    outputs: dict[str, np.ndarray], thing_classes: Sequence[int], config: BestieConfig, *,
    present: Iterable[int], points: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[tuple[Instance, int | None]]:
    """The network's instances on an image whose weak labels are known (the release's ``get_ins_map``
    and ``get_ins_map_with_point`` with ``--val_clean``), with the index of the point each was grouped
    to (None in the image setting): the class probabilities cleaned with the image-level labels
    ``present`` (:func:`clean_probabilities`); point setting — the cleaned argmax grouped to the
    ``points`` (:func:`point_instances`); image setting — the inference of :func:`infer_instances` on
    the cleaned argmax. Val inference with ``val_clean``, and the exported train labels with
    ``export = "network"`` (the paper's "pseudo labels generated by our network")."""
    outputs = {**outputs, "prob": clean_probabilities(outputs["prob"], thing_classes, present)}
    semantic = outputs["prob"].argmax(0)
    if config.supervision == "points":
        if points is None:
            raise ValueError("the point setting needs the image's points")
        return point_instances(outputs, semantic, *points)
    return [(found, None) for found in _detected_instances(outputs, semantic, thing_classes, config)]


def refined_instances(
    outputs: dict[str, np.ndarray], semantic: np.ndarray, cues_yx: np.ndarray, cue_classes: np.ndarray,
    thing_classes: Sequence[int], config: BestieConfig,
) -> list[tuple[Instance, int | None]]:
    """The self-refinement's labels of a training image (Fig. 6's curves; the exported pseudo labels
    with ``export = "refined"``), with the index of the cue each came from (None in the image setting):
    point setting — the WSSS foreground grouped to the GT points by the predicted offsets
    (:func:`point_instances`); image setting — :func:`_refinement_instances`."""
    if config.supervision == "points":
        return list(point_instances(outputs, semantic, cues_yx, cue_classes))
    return [(f, None) for f in _refinement_instances(outputs, semantic, thing_classes, config)]
