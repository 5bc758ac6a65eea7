"""P2Seg training (Sec. 3, Fig. 3): the Mutual Distillation Module on BESTIE's point setting.

One MDM stage = BESTIE's training loop (:func:`methods.bestie.train.train_bestie`: augmentation,
online regrouping of each class's pixels to its points by the predicted offsets, Adam/AdamW with
warm-up + poly) with

- **S2I** targets (Sec. 3.1): "points first" pseudo instances (:mod:`.s2i`) instead of BESTIE's
  "semantic results first" transfer; offsets point to the annotated points (Eq. 2); the offset loss
  is smooth L1 (Eq. 3) and the segmentation CE keeps the hardest ``hard_pixel_ratio`` of the pixels
  (Eq. 4, DeepLab's top-k CE) — both fields of the BESTIE config;
- **I2S** (Sec. 3.2): an affinity head, trained by Eq. 5 against the instance affinity of the
  current instance map (the online regrouped map once refinement runs, the S2I map before), and,
  after the stage, the refined semantic map S = A^∘β · C of every training image, which is the
  next stage's semantic input (Sec. 3.1, last paragraph).

The final stage's instance map is exported (:func:`export_instances`): each point's pixels of its
class, grouped by the predicted offsets (Eq. 1 of BESTIE), on the I2S semantic map (paper: "the
class-agnostic instance segmentation map is multiplied with the semantic segmentation map generated
through I2S") or on the stage's input map (``export_semantic``); points left without pixels get a
default box (paper 16 × 16) or the release's treatment (:func:`empty_point_instances`).

No pipeline imports: numpy, torch (and :mod:`methods.bestie`, :mod:`methods.runtime`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from methods.bestie import Instance
from methods.bestie.train import (
    BestieConfig,
    ExtraLoss,
    Sample,
    TrainBatch,
    image_batches,
    network_options,
    predict_outputs,
    refined_instances,
    train_bestie,
    transfer_samples,
)
from methods.bestie.transfer import OffsetTarget
from methods.checkpointing import Checkpointing

from .i2s import RELEASE_LOSS, Background, i2s_loss, pooled_masks, refined_semantic
from .model import P2SegNet
from .s2i import S2IStats, box_slices, default_boxes, s2i_targets

__all__ = ["P2SegConfig", "StageResult", "affinity_targets", "build_samples", "i2s_term", "train_p2seg",
           "semantic_maps", "export_instances", "empty_point_instances"]


@dataclass(frozen=True)
class P2SegConfig:
    """MDM hyper-parameters on top of the shared BESTIE loop (``bestie``: network, augmentation, schedule,
    optimizer, λ of the S2I terms, hard-pixel ratio, offset loss). The pipeline builds it from the validated
    ``mdm`` section (bench/config/schema.py, ``MdmParams``: the one place their defaults live) by copying every
    field of the same name (bench/commands/p2seg.py ``make_p2seg_config``); only the table rows' switches have
    defaults here."""

    bestie: BestieConfig
    # S2I
    single_point_target: OffsetTarget
    default_box: int | None
    default_box_in_training: bool
    export_box_score: float
    export_empty_points: Literal["box", "release"]
    # I2S
    lambda_i2s: float
    embed_dim: int
    affinity_pool: int
    affinity_loss: Literal["paper", "release"]
    affinity_labels: Literal["max-pool", "sample"]
    affinity_ignore: Literal["background", "drop"]
    affinity_background: Background
    chunk_size: int | None
    max_pairs: int | None
    beta: float
    affinity_normalize: Literal["row", "release"] | None
    semantic_from_affinity: bool
    # stages
    stages: int
    export_semantic: Literal["i2s", "input"]
    # the rows' switches (Table 3): S2I's order and whether I2S runs
    s2i: Literal["points-first", "semantic-first"] = "points-first"
    i2s: bool = True

    def __post_init__(self) -> None:
        if self.stages < 1:
            raise ValueError(f"stages must be >= 1, got {self.stages}")
        if self.default_box is not None and self.default_box < 1:
            raise ValueError(f"default_box must be >= 1 or None, got {self.default_box}")
        if self.bestie.supervision != "points":
            raise ValueError("P2Seg is point-supervised: bestie.supervision must be 'points'")
        if self.max_pairs is not None and self.affinity_labels == "max-pool":
            raise ValueError("max_pairs samples pairs of one label per cell: it needs affinity_labels = 'sample'")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class StageResult:
    """One MDM stage: the trained model, the semantic maps it trained on, its S2I statistics and,
    with I2S, the refined semantic maps it produced (the next stage's input)."""

    model: P2SegNet
    semantic: list[np.ndarray]
    stats: dict[str, int]
    refined: list[np.ndarray] | None


# ---------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------


def build_samples(
    images: Sequence[np.ndarray], maps: Sequence[np.ndarray], points: Sequence[np.ndarray],
    point_classes: Sequence[np.ndarray], config: P2SegConfig,
) -> tuple[list[Sample], dict[str, int]]:
    """The training samples of one stage: S2I "points first" targets (or BESTIE's "semantic results
    first" transfer, ``s2i = "semantic-first"``, Table 3/6's BESTIE rows) and their summed counts."""
    if config.s2i == "semantic-first":
        samples, transfer = transfer_samples(images, maps, points, point_classes, config.bestie)
        return samples, transfer.to_dict()
    samples: list[Sample] = []
    total = S2IStats()
    box = config.default_box if config.default_box_in_training else None
    for image, semantic, yx, cls in zip(images, maps, points, point_classes):
        targets, s = s2i_targets(semantic, yx, cls, min_area=config.bestie.min_area,
                                 single_point_target=config.single_point_target, default_box=box)
        total.add(s)
        samples.append(Sample(image, semantic, targets))
    return samples, total.to_dict()


def _on_grid(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) integer labels → (B, h, w) by nearest sampling (each cell's top-left pixel for an
    integer stride; ids are kept exactly)."""
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


def affinity_targets(semantic: torch.Tensor, instances: torch.Tensor, size: tuple[int, int],
                     config: P2SegConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The I2S loss's labels on the (h, w) embedding grid from the (B, H, W) semantic targets and instance
    map: (instance labels, semantic labels, valid cells or None). ``affinity_labels``: ``"max-pool"`` —
    each instance / class mask max-pooled over the cell (:func:`~methods.p2seg.i2s.pooled_masks`, the
    release); ``"sample"`` — the id of each cell's top-left pixel. ``affinity_ignore``: pixels the
    semantic map ignores (255) are ``"background"`` (the release: in no class mask) or ``"drop"`` them
    (a cell in no pair: a sampled 255, or, max-pooled, a cell of 255 pixels only)."""
    if config.affinity_ignore == "background":
        semantic = semantic.masked_fill(semantic == 255, 0)
    elif config.affinity_ignore != "drop":
        raise ValueError(f"affinity_ignore must be 'background' or 'drop', got {config.affinity_ignore!r}")
    if config.affinity_labels == "sample":
        sem = _on_grid(semantic, size)
        return _on_grid(instances, size), sem, (sem != 255) if config.affinity_ignore == "drop" else None
    if config.affinity_labels != "max-pool":
        raise ValueError(f"affinity_labels must be 'max-pool' or 'sample', got {config.affinity_labels!r}")
    valid = None
    if config.affinity_ignore == "drop":
        valid = F.adaptive_max_pool2d((semantic != 255).float()[:, None], size)[:, 0] > 0
    return pooled_masks(instances, size, ignore_index=None), pooled_masks(semantic, size), valid


def i2s_term(config: P2SegConfig) -> ExtraLoss:
    """λ_I2S · L_I2S (Eq. 5) for the shared loop: the target is the instance affinity of the online
    regrouped instance map once refinement runs, of the S2I map before; labels on the embedding grid
    (:func:`affinity_targets`)."""
    kwargs: dict[str, Any] = dict(RELEASE_LOSS) if config.affinity_loss == "release" else {}

    def term(outputs: dict[str, torch.Tensor], batch: TrainBatch) -> dict[str, torch.Tensor]:
        emb = outputs["embedding"]
        instances = batch.refined_instance if batch.refined_instance is not None else batch.pseudo_instance
        inst, semantic, valid = affinity_targets(batch.semantic, instances, (emb.shape[-2], emb.shape[-1]), config)
        loss = i2s_loss(emb, inst, valid, semantic_map=semantic, background=config.affinity_background,
                        chunk_size=config.chunk_size, max_pairs=config.max_pairs, **kwargs)
        return {"i2s": config.lambda_i2s * loss}

    return term


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------


def build_model(num_semantic: int, num_things: int, config: P2SegConfig) -> P2SegNet:
    """P2Seg's network: the BESTIE config's backbone, decoder and widths, and the affinity head; with I2S
    and ``semantic_from_affinity`` its semantic output is S = A^∘β · C (:class:`~methods.p2seg.model.P2SegNet`)."""
    return P2SegNet(num_semantic, num_things, embed_dim=config.embed_dim, affinity_pool=config.affinity_pool,
                    semantic_from_affinity=config.i2s and config.semantic_from_affinity, beta=config.beta,
                    normalize=config.affinity_normalize, chunk_size=config.chunk_size,
                    **network_options(config.bestie))


@torch.no_grad()
def semantic_maps(model: P2SegNet, images: Sequence[np.ndarray], config: P2SegConfig,
                  batch_size: int = 8) -> Iterator[np.ndarray]:
    """The I2S semantic map of each image (Sec. 3.2): S = A^∘β · C on the affinity grid, bilinearly
    upsampled to the image, argmax → uint8 class indices."""
    model.eval()
    for x in image_batches(images, batch_size, next(model.parameters()).device):
        prob, emb = model.grid_outputs(x)
        s = refined_semantic(prob, embeddings=emb, beta=config.beta, normalize=config.affinity_normalize,
                             chunk_size=config.chunk_size)
        s = F.interpolate(s, size=x.shape[-2:], mode="bilinear", align_corners=False)
        yield from s.argmax(1).to(torch.uint8).cpu().numpy()


def train_p2seg(
    *,
    images: Sequence[np.ndarray],
    maps: Sequence[np.ndarray],
    points: Sequence[np.ndarray],
    point_classes: Sequence[np.ndarray],
    num_semantic: int,
    thing_classes: Sequence[int],
    config: P2SegConfig,
    progress: bool = True,
    on_step: Callable[[int, int, dict[str, float]], None] | None = None,
    checkpointing: Callable[[int, BestieConfig, list[Sample]], Checkpointing | None] | None = None,
) -> list[StageResult]:
    """``config.stages`` MDM stages: stage 1 trains on ``maps`` (the WSSS maps), stage k + 1 on stage
    k's I2S semantic maps (without I2S every stage re-reads ``maps``); each stage's network starts
    from scratch with seed ``bestie.seed + stage``. ``on_step(stage, step, losses)``;
    ``checkpointing(stage, stage_config, samples)`` gives a stage's resumable checkpoint (or None)."""
    results: list[StageResult] = []
    current = list(maps)
    for stage in range(config.stages):
        samples, stats = build_samples(images, current, points, point_classes, config)
        bestie = dataclasses.replace(config.bestie, seed=config.bestie.seed + stage)
        model = train_bestie(
            samples=samples, num_semantic=num_semantic, thing_classes=thing_classes, config=bestie,
            progress=progress,
            on_step=None if on_step is None else (lambda step, losses, s=stage: on_step(s, step, losses)),
            model_factory=lambda: build_model(num_semantic, len(thing_classes), config),
            extra_loss=i2s_term(config) if config.i2s else None, desc=f"p2seg stage {stage + 1}/{config.stages}",
            checkpointing=None if checkpointing is None else checkpointing(stage, bestie, samples))
        refined = list(semantic_maps(model, images, config)) if config.i2s else None
        results.append(StageResult(model, current, stats, refined))
        if refined is not None:
            current = refined
    return results


def export_instances(
    result: StageResult, images: Sequence[np.ndarray], points: Sequence[np.ndarray],
    point_classes: Sequence[np.ndarray], thing_classes: Sequence[int], config: P2SegConfig,
) -> Iterator[list[tuple[Instance, int]]]:
    """The final pseudo labels of each training image: per point, the pixels of its class grouped to
    it by the predicted offsets (score = mean class probability), on the I2S map or the stage's input
    map (``export_semantic``); points left without pixels as ``export_empty_points`` says
    (:func:`empty_point_instances`)."""
    use_i2s = config.export_semantic == "i2s" and result.refined is not None
    maps = result.refined if use_i2s else result.semantic
    assert maps is not None
    predicted = predict_outputs(result.model, images, flip_tta=config.bestie.flip_tta,
                                flip_tta_offsets=config.bestie.flip_tta_offsets)
    for outputs, semantic, yx, cls in zip(predicted, maps, points, point_classes):
        found = [(inst, k) for inst, k in refined_instances(outputs, semantic, yx, cls, thing_classes, config.bestie)
                 if k is not None]
        found += empty_point_instances(semantic, found, np.asarray(yx, np.float64).reshape(-1, 2),
                                       np.asarray(cls).reshape(-1), config)
        yield sorted(found, key=lambda f: f[1])


def empty_point_instances(
    semantic: np.ndarray, found: Sequence[tuple[Instance, int]], points_yx: np.ndarray, point_classes: np.ndarray,
    config: P2SegConfig,
) -> list[tuple[Instance, int]]:
    """The exported instances of the points ``found`` gives no pixels, with their point indices.

    - ``export_empty_points = "box"`` (paper: "for points without clear instance predictions, a default
      pseudo-box"): each such point a ``default_box`` of the pixels no found mask holds (boxes that
      overlap split by the nearest point), score ``export_box_score``;
    - ``"release"`` (``get_ins_map_with_point_forallpoint``): a point whose class is in ``semantic`` an
      empty mask of score 0; a point of another class a whole ``default_box`` box clipped to the image
      (other masks not removed), score ``export_box_score`` — only when its int x is not the x, or its
      int y not the y, of any point of a class in ``semantic`` (every point when there is none).

    No boxes when ``default_box`` is None."""
    shape = semantic.shape
    have = {k for _, k in found}
    missing = np.array([k for k in range(len(points_yx)) if k not in have], dtype=np.int64)
    if config.export_empty_points == "box":
        if config.default_box is None or not len(missing):
            return []
        boxes = default_boxes(shape, [inst.mask for inst, _ in found], missing, points_yx, point_classes,
                              config.default_box)
        return [(Instance(b.mask, b.semantic_class, config.export_box_score, b.center), b.point) for b in boxes]
    if config.export_empty_points != "release":
        raise ValueError(f"export_empty_points must be 'box' or 'release', got {config.export_empty_points!r}")
    present = np.isin(point_classes, np.unique(semantic))
    out = [(Instance(np.zeros(shape, dtype=bool), int(point_classes[k]), 0.0,
                     (float(points_yx[k, 0]), float(points_yx[k, 1]))), int(k)) for k in missing if present[k]]
    if config.default_box is None:
        return out
    ys = {int(points_yx[k, 0]) for k in np.flatnonzero(present)}
    xs = {int(points_yx[k, 1]) for k in np.flatnonzero(present)}
    for k in np.flatnonzero(~present):
        if ys and int(points_yx[k, 0]) in ys and int(points_yx[k, 1]) in xs:
            continue
        sy, sx = box_slices(points_yx[k], config.default_box, shape)
        mask = np.zeros(shape, dtype=bool)
        mask[sy, sx] = True
        out.append((Instance(mask, int(point_classes[k]), config.export_box_score,
                             (float(points_yx[k, 0]), float(points_yx[k, 1]))), int(k)))
    return out
