"""Point2Mask training end to end with its pseudo-label branch, and inference (paper 001, Sec. 3.4, Alg. 1).

One training step (Sec. 3.4.1, Fig. 2):

1. forward: panoptic outputs, the category-wise semantic map P^s (``weak``) and P^b_high (``boundary``);
2. L_sem (Eq. 5, :func:`~.losses.semantic_loss`) on P^s from the points;
3. the pseudo-label branch on the *detached* P^s and P^b (+ P^b_low, Table 3 switches): per image
   :func:`~.pseudo.pseudo_masks` (costs Eq. 2-3, unit numbers Eq. 4, Sinkhorn-Knopp Eq. 1 / Alg. 1)
   → a panoptic pseudo label map;
4. L_bou (Eq. 6-7, :func:`~.boundary.boundary_loss`) of P^b_high against that map;
5. L_full on the panoptic head against the same map — with ``panoptic_head = "deeplab"`` the
   Panoptic-DeepLab objective BESTIE uses (semantic CE, centre heatmap MSE ×200, offset L1 ×0.01:
   :func:`methods.bestie.losses.bestie_loss`, targets from :mod:`methods.bestie.transfer`);
6. L_total = L_full + L_sem + L_bou (Sec. 3.4.1), one AdamW step (paper's optimiser), poly decay.

The fully supervised reference (``supervision = "full"``) trains the same panoptic head on the ground-truth
panoptic maps (L_full only). Inference (Sec. 3.4.2) uses the panoptic branch only: argmax semantic →
stuff segments per class, thing instances by centre detection and offset grouping
(:func:`methods.bestie.instances.segment_instances`).

No pipeline imports: numpy, torch, timm (and ``methods.*``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from methods.backbones import normalize_images
from methods.bestie.instances import Instance, segment_instances
from methods.bestie.losses import InstanceTargets, LossWeights, bestie_loss
from methods.bestie.transfer import gaussian_center_map, offset_field
from methods.runtime import deterministic, resolve_device

from .boundary import boundary_loss, boundary_maps
from .config import Point2MaskConfig
from .losses import semantic_loss
from .model import PANOPTIC_HEADS, Point2MaskNet
from .pseudo import pseudo_masks

log = logging.getLogger(__name__)

__all__ = ["TrainConfig", "Sample", "TrainResult", "build_model", "panoptic_targets", "pseudo_label_map",
           "train_point2mask", "predict_panoptic"]

PanopticHead = Literal["deeplab", "panoptic-segformer"]
IGNORE = 255


@dataclass(frozen=True)
class TrainConfig:
    """The network and the training loop (Sec. 3.4, 4.2). Defaults are the paper's where it gives one; the
    embedded profile's values are in the params section (bench/config/schema.py)."""

    panoptic_head: PanopticHead = "deeplab"
    """The panoptic branch. The paper's is Panoptic SegFormer (query-based, 300 queries), which is not
    implemented here ('panoptic-segformer' is refused); 'deeplab' = a Panoptic-DeepLab-style head (semantic,
    class-wise centre heatmaps, offsets: BESTIE's network, methods.bestie.model) trained on the same pseudo
    labels."""
    backbone: str = "resnet50"
    """timm backbone (paper: ResNet-50; Table 1/2 rows r101, swinl take point2mask.backbones)."""
    out_indices: tuple[int, ...] = (1, 2, 3)
    """Backbone levels the decoder and the neck read (finest first; stride 4 first)."""
    decoder: Literal["fuse", "panoptic-deeplab"] = "fuse"
    """Decoder of the panoptic head (methods.bestie.model.DECODERS)."""
    decoder_channels: int = 64
    """Width of the 'fuse' decoder."""
    head_channels: int = 64
    """Width of the heads (and of the 'panoptic-deeplab' decoder, scaled from its 256)."""
    neck_channels: int = 32
    """Width each backbone level is projected to before the boundary head sums them (the neck of Fig. 2)."""
    iterations: int = 20000
    """Optimiser steps (paper VOC: 24 epochs of 8 images)."""
    batch_size: int = 8
    """Images per step (paper VOC: 8; COCO: 16)."""
    lr: float = 1e-4
    """AdamW learning rate (paper VOC: 1e-4; COCO: 2e-4)."""
    weight_decay: float = 0.1
    """AdamW weight decay (paper: 0.1)."""
    warmup_iterations: int = 0
    """Linear warm-up steps from 0.001 x lr (paper: none stated)."""
    poly_power: float = 0.9
    """LR decays as (1 - step / iterations) ** poly_power (a harness choice; the paper steps the LR on COCO)."""
    hflip: bool = True
    """Random horizontal flip of the training images (and their points)."""
    sem_loss_stride: int = 1
    """L_sem runs on the P^s logits resized to input / stride (the release applies it to a stride-8 map)."""
    center_sigma: float = 8.0
    """Gaussian sigma (px) of the centre heatmap targets (Panoptic-DeepLab: 8)."""
    lambda_center: float = 200.0
    """Weight of the centre loss inside L_full (Panoptic-DeepLab: 200)."""
    lambda_offset: float = 0.01
    """Weight of the offset loss inside L_full (Panoptic-DeepLab: 0.01)."""
    weight_full: float = 1.0
    """Weight of L_full in L_total (paper: 1)."""
    weight_sem: float = 1.0
    """Weight of L_sem in L_total (paper: 1)."""
    weight_bou: float = 1.0
    """Weight of L_bou in L_total (paper: 1)."""
    pairwise_warmup: float = 0.0
    """Fraction of the steps over which alpha_1 and alpha_2 of Eq. 5 ramp linearly from 0 (BoxInst's warm-up of
    its pairwise term; the paper states constant weights: 0)."""
    full_start: float = 0.0
    """Fraction of the steps before the pseudo-label branch and L_full start (paper: 0, end to end from the
    first step)."""
    infer_threshold: float = 0.1
    """Centre heatmap threshold at inference (Panoptic-DeepLab: 0.1)."""
    nms_kernel: int = 7
    """Max-pool window of the centre NMS at inference (odd; Panoptic-DeepLab: 7)."""
    min_area: int = 16
    """Thing components smaller than this (px) are dropped at inference."""
    stuff_min_area: int = 64
    """Stuff segments smaller than this (px) are dropped at inference (Panoptic-DeepLab: 4096 on COCO)."""

    def __post_init__(self) -> None:
        if self.panoptic_head not in PANOPTIC_HEADS:
            raise ValueError(f"point2mask.panoptic_head = {self.panoptic_head!r}: allowed {list(PANOPTIC_HEADS)}")
        if self.panoptic_head == "panoptic-segformer":
            raise ValueError("point2mask.panoptic_head = 'panoptic-segformer': the paper's Panoptic SegFormer head is "
                             "not implemented in this harness; use 'deeplab' (docs/point2mask.md)")
        if self.iterations < 1 or self.batch_size < 1 or self.sem_loss_stride < 1:
            raise ValueError("point2mask.iterations, batch_size and sem_loss_stride must be >= 1")
        if self.nms_kernel < 1 or self.nms_kernel % 2 == 0:
            raise ValueError(f"point2mask.nms_kernel must be a positive odd integer, got {self.nms_kernel}")
        if not 0.0 <= self.pairwise_warmup <= 1.0:
            raise ValueError(f"point2mask.pairwise_warmup must be in [0, 1], got {self.pairwise_warmup}")
        if not 0.0 <= self.full_start < 1.0:
            raise ValueError(f"point2mask.full_start must be in [0, 1), got {self.full_start}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Sample:
    """One training image: RGB, its points (y, x) with semantic classes (one per thing and stuff target), and
    for the fully supervised reference its ground-truth panoptic map (segment k + 1) with the segments'
    semantic classes."""

    image: np.ndarray
    points_yx: np.ndarray
    point_classes: np.ndarray
    record: object = None
    gt_segments: np.ndarray | None = None
    gt_classes: np.ndarray | None = None


@dataclass
class TrainResult:
    model: Point2MaskNet
    seconds: float = 0.0
    pseudo_seconds: float = 0.0  # spent in the pseudo-label branch (step 3 of the module docstring)
    history: list[dict[str, float]] = field(default_factory=list)


def build_model(num_semantic: int, num_things: int, config: TrainConfig, p2m: Point2MaskConfig,
                backbone_weights: str | None = None) -> Point2MaskNet:
    return Point2MaskNet(num_semantic, num_things, backbone=config.backbone, out_indices=config.out_indices,
                         decoder=config.decoder, decoder_channels=config.decoder_channels,
                         head_channels=config.head_channels, backbone_weights=backbone_weights,
                         neck_channels=config.neck_channels, detach_boundary_inputs=p2m.detach_boundary_inputs)


def panoptic_targets(segments: np.ndarray, classes: np.ndarray, is_thing: np.ndarray, thing_channel: np.ndarray,
                     sigma: float) -> dict[str, np.ndarray]:
    """Panoptic-DeepLab targets of one panoptic map (segment k + 1, 0 = void; ``classes[k]`` its semantic
    index): ``semantic`` (H, W) with 255 on void, ``center`` (C_things, H, W) Gaussians at the thing segments'
    centres of mass, ``offset`` (2, H, W) towards them, ``offset_weight`` (H, W) = 1 on thing pixels."""
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    lut = np.concatenate([[IGNORE], classes]).astype(np.int64)
    semantic = lut[segments].astype(np.int64)
    instance = np.zeros(segments.shape, np.int32)
    centers, channels = [], []
    for k in np.flatnonzero(is_thing[classes]):
        ys, xs = np.nonzero(segments == k + 1)
        if not len(ys):
            continue
        centers.append((float(ys.mean()), float(xs.mean())))
        channels.append(int(thing_channel[classes[k]]))
        instance[ys, xs] = len(centers)
    return {"semantic": semantic,
            "center": gaussian_center_map(segments.shape, np.asarray(centers).reshape(-1, 2), np.asarray(channels),
                                          int(is_thing.sum()), sigma=sigma),
            "offset": offset_field(instance, centers), "offset_weight": (instance > 0).astype(np.float32)}


def pseudo_label_map(probs: torch.Tensor, high: torch.Tensor | None, image: np.ndarray, sample: Sample,
                     is_thing: np.ndarray, p2m: Point2MaskConfig) -> np.ndarray:
    """Alg. 1 for one image from the network's *detached* P^s probabilities (C, H, W) and P^b_high (h, w):
    the maps Table 3's switches select (:func:`~.boundary.boundary_maps`) → :func:`~.pseudo.pseudo_masks`;
    (H, W) int32, point p's segment = p + 1."""
    maps = boundary_maps(p2m, high=high, image=image) if (p2m.use_high_boundary or p2m.use_low_boundary) else None
    xy = sample.points_yx[:, ::-1].astype(np.int64) if len(sample.points_yx) else np.zeros((0, 2), np.int64)
    return pseudo_masks(probs, maps, xy, sample.point_classes, is_thing, p2m, record=sample.record)


def _flip(sample: Sample) -> Sample:
    w = sample.image.shape[1]
    yx = sample.points_yx.copy()
    if len(yx):
        yx[:, 1] = w - 1 - yx[:, 1]
    return Sample(np.ascontiguousarray(sample.image[:, ::-1]), yx, sample.point_classes, sample.record,
                  None if sample.gt_segments is None else np.ascontiguousarray(sample.gt_segments[:, ::-1]),
                  sample.gt_classes)


def _point_label_maps(batch: Sequence[Sample], shape: tuple[int, int], stride: int) -> torch.Tensor:
    h, w = max(1, shape[0] // stride), max(1, shape[1] // stride)
    out = np.full((len(batch), h, w), IGNORE, np.int64)
    for i, s in enumerate(batch):
        for (y, x), c in zip(s.points_yx.tolist(), s.point_classes.tolist()):
            out[i, min(h - 1, y // stride), min(w - 1, x // stride)] = c
    return torch.from_numpy(out)


def _lr_factor(step: int, config: TrainConfig) -> float:
    poly = (1.0 - step / config.iterations) ** config.poly_power
    if step < config.warmup_iterations:
        alpha = step / config.warmup_iterations
        return poly * (0.001 * (1 - alpha) + alpha)
    return poly


def train_point2mask(
    samples: Sequence[Sample], *, num_semantic: int, thing_classes: Sequence[int], config: TrainConfig,
    p2m: Point2MaskConfig, supervision: Literal["points", "full"] = "points", seed: int = 0,
    backbone_weights: str | None = None, init_state: dict[str, torch.Tensor] | None = None,
    device: str | None = None, on_step: Callable[[int, dict[str, float]], None] | None = None,
    progress: bool = False, desc: str = "point2mask",
) -> TrainResult:
    """Train Point2Mask (module docstring) on ``samples``; returns the model in eval mode with timings.

    ``thing_classes[c]`` is the semantic index of centre channel c. ``init_state``: another run's weights,
    loaded except the class-specific layers (Table 1's COCO pre-training). A non-finite loss raises
    ``FloatingPointError`` naming the step.
    """
    if not samples:
        raise ValueError("no training samples")
    if supervision not in ("points", "full"):
        raise ValueError(f"supervision must be 'points' or 'full', got {supervision!r}")
    if supervision == "full" and any(s.gt_segments is None for s in samples):
        raise ValueError("the fully supervised reference needs every sample's ground-truth panoptic map")
    dev = resolve_device(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    things = np.asarray(thing_classes, np.int64)
    is_thing = np.zeros(num_semantic, bool)
    is_thing[things] = True
    channel = np.full(num_semantic, -1, np.int64)
    channel[things] = np.arange(len(things))
    model = build_model(num_semantic, len(things), config, p2m, backbone_weights).to(dev)
    if init_state is not None:
        model.load_transferred(init_state)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, config))
    weights = LossWeights(center=config.lambda_center, offset=config.lambda_offset, semantic=1.0)
    sem_config = p2m
    if config.sem_loss_stride > 1:  # the point squares shrink with the map they are drawn on
        from dataclasses import replace

        sem_config = replace(p2m, point_square=max(1, (p2m.point_square // config.sem_loss_stride) | 1))
    full_from = int(np.floor(config.full_start * config.iterations)) + 1
    result = TrainResult(model)
    bs = min(config.batch_size, len(samples))
    order: list[int] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.iterations, desc=desc, leave=False)
    t_start = time.perf_counter()
    model.train()
    with deterministic(dev.type == "cpu"):
        for step in range(1, config.iterations + 1):
            if len(order) < bs:
                order = rng.permutation(len(samples)).tolist()
            idx, order = order[:bs], order[bs:]
            batch = [_flip(samples[i]) if config.hflip and rng.random() < 0.5 else samples[i] for i in idx]
            images = torch.from_numpy(np.stack([s.image for s in batch])).permute(0, 3, 1, 2).to(dev)
            shape = tuple(images.shape[-2:])
            out = model.forward_train(normalize_images(images))
            losses: dict[str, torch.Tensor] = {}
            zero = out["semantic"].sum() * 0.0
            if supervision == "points":  # L_sem, Eq. 5
                s = config.sem_loss_stride
                weak, ims = out["weak"], images
                if s > 1:
                    size = (max(1, shape[0] // s), max(1, shape[1] // s))
                    weak = F.interpolate(weak, size=size, mode="bilinear", align_corners=False)
                    ims = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False).round()
                    ims = ims.clamp(0, 255).to(torch.uint8)
                ramp = 1.0 if config.pairwise_warmup <= 0 else min(1.0, step / (config.pairwise_warmup
                                                                                  * config.iterations))
                sem = semantic_loss(weak, ims, _point_label_maps(batch, shape, s).to(dev), sem_config, ramp)
                losses["sem"] = sem["loss"]
                for key in ("partial", "lab", "rgb"):
                    if key in sem:
                        losses[f"sem_{key}"] = sem[key]
            full_on = step >= full_from
            if full_on:
                if supervision == "points":  # the pseudo-label branch on the detached maps (Alg. 1)
                    t0 = time.perf_counter()
                    probs = out["weak"].detach().float().softmax(1)
                    high = out["boundary"].detach().float()
                    maps = [pseudo_label_map(probs[i], high[i], s.image, s, is_thing, p2m)
                            for i, s in enumerate(batch)]
                    result.pseudo_seconds += time.perf_counter() - t0
                    classes = [s.point_classes for s in batch]
                    segments = torch.from_numpy(np.stack(maps)).to(dev)
                    seg_thing = torch.from_numpy(np.stack([is_thing[np.concatenate([[0], c]).astype(np.int64)][m]
                                                           & (m > 0) for m, c in zip(maps, classes)])).to(dev)
                    bou = F.interpolate(out["boundary"][:, None].float(), size=shape, mode="bilinear",
                                        align_corners=False)[:, 0]
                    losses["bou"] = boundary_loss(bou, segments, seg_thing)  # Eq. 6-7
                else:
                    maps = [s.gt_segments for s in batch]
                    classes = [s.gt_classes for s in batch]
                targets = [panoptic_targets(m, c, is_thing, channel, config.center_sigma) for m, c in zip(maps, classes)]
                t = {k: torch.from_numpy(np.stack([x[k] for x in targets])).to(dev) for k in targets[0]}
                full = bestie_loss(semantic_logits=out["semantic"], center=out["center"].float(),
                                   offset=out["offset"].float(), semantic_target=t["semantic"],
                                   pseudo=InstanceTargets(t["offset"], t["offset_weight"], t["center"],
                                                          torch.ones_like(t["offset_weight"])),
                                   refined=None, weights=weights)
                losses["full"] = full["loss"]
                losses.update({f"full_{k}": full[k] for k in ("semantic", "center", "offset")})
            loss = (config.weight_full * losses.get("full", zero) + config.weight_sem * losses.get("sem", zero)
                    + config.weight_bou * losses.get("bou", zero))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss at step {step}: "
                                         f"{ {k: float(v.detach()) for k, v in losses.items()} }")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            values = {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in losses.items()},
                      "lr": float(opt.param_groups[0]["lr"])}
            result.history.append(values)
            if on_step is not None:
                on_step(step, values)
            if bar is not None:
                bar.set_postfix(loss=f"{values['loss']:.3f}")
                bar.update(1)
    if bar is not None:
        bar.close()
    result.seconds = time.perf_counter() - t_start
    model.eval()
    return result


@torch.no_grad()
def network_maps(model: Point2MaskNet, image: np.ndarray) -> dict[str, torch.Tensor]:
    """The network's outputs on one image (batch of one, eval mode): panoptic outputs, ``weak`` and
    ``boundary``."""
    model.eval()
    dev = next(model.parameters()).device
    x = normalize_images(torch.from_numpy(image[None]).permute(0, 3, 1, 2).to(dev))
    return {k: v[0].float() for k, v in model.forward_train(x).items()}


def predict_panoptic(model: Point2MaskNet, image: np.ndarray, thing_classes: Sequence[int],
                     stuff_classes: Sequence[int], config: TrainConfig,
                     outputs: dict[str, torch.Tensor] | None = None) -> tuple[list[tuple[np.ndarray, int]],
                                                                               list[Instance]]:
    """Inference with the panoptic branch (Sec. 3.4.2): ``(segments, instances)`` — the panoptic segments
    as (mask, semantic index), stuff first then things (a later one covers an earlier), and the thing
    instances with their scores (centre peak × mean class probability)."""
    out = outputs if outputs is not None else network_maps(model, image)
    prob = out["semantic"].softmax(0).cpu().numpy()
    semantic = prob.argmax(0)
    instances = segment_instances(semantic, prob, out["center"].cpu().numpy(), out["offset"].cpu().numpy(),
                                  np.asarray(thing_classes), threshold=config.infer_threshold,
                                  nms_kernel=config.nms_kernel, min_area=config.min_area, cluster=None,
                                  max_per_component=None, keep_centerless=True, score_rule="center-class")
    segments: list[tuple[np.ndarray, int]] = []
    for c in stuff_classes:
        mask = semantic == c
        if mask.sum() >= config.stuff_min_area:
            segments.append((mask, int(c)))
    segments += [(inst.mask, int(inst.cls)) for inst in instances]
    return segments, instances
