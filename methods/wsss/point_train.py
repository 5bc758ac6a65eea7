"""Point-supervised semantic segmentation: Point2Mask's semantic-map learning (paper 001, Eq. 5).

    L_sem = L_partial + alpha_1 * L_LAB + alpha_2 * L_RGB,      alpha_1 = alpha_2 = 3

trained on a small network (:class:`~methods.wsss.model.PointSegNet`, timm backbone without
pretraining + FPN decoder). The four Table-4 rows are one switch each: partial CE only
(``use_lab=False, use_rgb=False``), ``+LAB``, ``+RGB``, all.

- :func:`point_label_maps` — canonical points file -> per-image label maps (255 = unlabelled).
- :func:`train_point_wsss` — the training loop (seeded; deterministic on CPU; AMP on CUDA).
- :func:`predict_semantic` — uint8 argmax maps.

No pipeline imports: torch, numpy, scipy, timm and tqdm only (the dataset is duck-typed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from methods.runtime import deterministic, mixed_precision, resolve_device

from .losses import IGNORE_INDEX, expand_points, lab_pairwise_loss, partial_cross_entropy
from .model import PointSegNet, normalize_images
from .tree_filter import build_grid_mst, rgb_tree_loss

__all__ = [
    "PointWsssConfig",
    "point_label_maps",
    "train_point_wsss",
    "predict_semantic",
    "compute_losses",
]


@dataclass(frozen=True)
class PointWsssConfig:
    """Hyper-parameters of :func:`train_point_wsss` (paper / release defaults unless noted)."""

    use_lab: bool = True
    """Add L_LAB (BoxInst pairwise colour prior in CIE-LAB). Table 4 switch."""
    use_rgb: bool = True
    """Add L_RGB (MST tree-filter loss on unlabelled pixels). Table 4 switch."""
    alpha_lab: float = 3.0
    """alpha_1 of Eq. 5 (paper and release: 3)."""
    alpha_rgb: float = 3.0
    """alpha_2 of Eq. 5 (paper and release: 3)."""
    pairwise_warmup: float = 0.0
    """Fraction of ``iterations`` over which alpha_1 and alpha_2 ramp linearly from 0 to their
    values (BoxInst's warm-up of its pairwise term; Point2Mask's paper states constant weights,
    so 0 = off is the default)."""
    point_square: int = 5
    """Side of the square each point is expanded to (odd). The release uses 17 at VOC's ~500 px;
    17 * 128 / 500 = 4.4, so 5 for the 128 px embedded data. 1 = the single point pixel."""
    lab_kernels: tuple[tuple[int, int, float], ...] = ((3, 2, 0.35), (5, 2, 0.65))
    """(kernel size, dilation, weight) of L_LAB's neighbourhoods (release)."""
    lab_threshold: float = 0.3
    """Colour-similarity threshold of L_LAB (release / BoxInst)."""
    rgb_sigma: float = 0.02
    """Tree-filter bandwidth sigma of L_RGB (release: 0.02)."""
    rgb_guide_normalized: bool = True
    """Build the MST / affinities on the mean/std-normalised image, as the release does
    (sigma = 0.02 there ~ 0.001 on [0, 1] colours); False uses [0, 1] colours."""
    rgb_mask_numerator: bool = True
    """True: TEL's mean of |p - AS| over unlabelled pixels; False: the Point2Mask release's
    numerator over all pixels (divided by the unlabelled count)."""
    rgb_detach_target: bool = False
    """Stop the gradient through AS(p) (release: not detached)."""
    loss_stride: int = 2
    """The losses run on the logits resized to input / loss_stride (bilinear; the squares,
    drawn at input resolution, nearest-resized; the image bilinear) — as the release, which
    applies them to its stride-8 map of ~512 px VOC images, i.e. ~64 px. 2 gives 64 px for the
    128 px data (and L_LAB at 128 px costs ~0.9 s / step of 8 on 2 CPU cores); 1 = input size."""
    backbone: str = "resnet18"
    """timm backbone name, created with pretrained=False, features_only=True."""
    out_indices: tuple[int, ...] = (1, 2, 3)
    """Backbone levels for the decoder (resnet18: strides 4, 8, 16)."""
    decoder_channels: int = 64
    """FPN width."""
    iterations: int = 300
    """Optimizer steps (the paper trains 24 epochs; here a fixed small budget)."""
    batch_size: int = 8
    """Images per step (paper: 8 on VOC)."""
    lr: float = 1e-3
    """AdamW learning rate. The paper uses 1e-4 with ImageNet-pretrained backbones; the network
    here starts from random weights and trains a few hundred steps, so 1e-3 (deviation)."""
    weight_decay: float = 0.1
    """AdamW weight decay (paper, VOC: 0.1)."""
    hflip: bool = True
    """Random horizontal flip, p = 0.5 per image (from the seeded generator)."""
    seed: int = 0
    """Seeds the weights (torch.manual_seed), batch order and flips (own generator)."""
    amp: bool = True
    """Mixed precision for the network on CUDA (bf16 where supported, else fp16 + GradScaler);
    never on CPU. The losses always run in float32."""
    device: str | None = None
    """'cpu', 'cuda', ...; None = CUDA when available, else CPU."""

    def __post_init__(self) -> None:
        if self.point_square < 1 or self.point_square % 2 != 1:
            raise ValueError(f"point_square must be a positive odd integer, got {self.point_square}")
        if self.iterations < 1 or self.batch_size < 1 or self.loss_stride < 1:
            raise ValueError("iterations, batch_size and loss_stride must be >= 1")
        if not 0.0 <= self.pairwise_warmup <= 1.0:
            raise ValueError(f"pairwise_warmup must be in [0, 1], got {self.pairwise_warmup}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Point label maps
# ---------------------------------------------------------------------------------------------


def point_label_maps(points_json: Mapping[str, Any], split: Any, dataset: Any) -> dict[int, np.ndarray]:
    """Per-image point label maps of one split from a canonical points file.

    Args:
        points_json: the parsed ``data/points/<slot>/<split>_<mode>.json`` (``points`` records with
            ``image_id``, ``category_id``, ``x``, ``y``).
        split: a :class:`~datasets.canonical.CanonicalSplit` (or its name, looked up in
            ``dataset``); gives the images and their sizes.
        dataset: the :class:`~datasets.canonical.CanonicalDataset` (``semantic_index``).

    Returns:
        ``{image_id: uint8 (H, W)}`` for every image of the split (all-255 where it has no point);
        each point's pixel ``[y, x]`` holds its category's semantic index. Not expanded (the
        squares are drawn in training). Two points on one pixel: the later record wins.
        A point outside its image or on an unknown image raises ``ValueError``.
    """
    if isinstance(split, str):
        split = dataset.split(split)
    maps = {info.id: np.full((info.height, info.width), IGNORE_INDEX, np.uint8) for info in split}
    for p in points_json["points"]:
        image_id = int(p["image_id"])
        if image_id not in maps:
            raise ValueError(f"point {p.get('id')} refers to image {image_id}, not in split {split.name!r}")
        m = maps[image_id]
        x, y = int(p["x"]), int(p["y"])
        if not (0 <= y < m.shape[0] and 0 <= x < m.shape[1]):
            raise ValueError(f"point {p.get('id')} ({x}, {y}) outside image {image_id} {m.shape}")
        m[y, x] = dataset.semantic_index(int(p["category_id"]))
    return maps


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------


def compute_losses(
    logits: torch.Tensor,
    images_u8: torch.Tensor,
    point_labels: torch.Tensor,
    config: PointWsssConfig,
    pairwise_scale: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Eq. 5 for one batch; returns ``{"loss", "partial", ["lab"], ["rgb"]}`` (scalar tensors).

    Args:
        logits: (B, C, H, W) at the input resolution.
        images_u8: (B, 3, H, W) uint8 RGB.
        point_labels: (B, H, W) long, point pixels only (255 elsewhere); expanded here.
        pairwise_scale: multiplies alpha_1 and alpha_2 (the warm-up ramp, :func:`pairwise_ramp`).

    Only the switched-on terms are computed (``use_lab`` / ``use_rgb``).
    """
    logits = logits.float()
    labels = expand_points(point_labels, config.point_square)
    images = images_u8
    if config.loss_stride > 1:
        size = (max(1, logits.shape[-2] // config.loss_stride), max(1, logits.shape[-1] // config.loss_stride))
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        labels = F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()
        images = F.interpolate(images_u8.float() / 255.0, size=size, mode="bilinear", align_corners=False)
    out: dict[str, torch.Tensor] = {}
    out["partial"] = partial_cross_entropy(logits, labels)
    total = out["partial"]
    if config.use_lab:
        out["lab"] = lab_pairwise_loss(
            logits, images, kernels=config.lab_kernels, threshold=config.lab_threshold, from_logits=True
        )
        total = total + pairwise_scale * config.alpha_lab * out["lab"]
    if config.use_rgb:
        guide = normalize_images(images) if config.rgb_guide_normalized else (
            images.float() / 255.0 if images.dtype == torch.uint8 else images)
        tree = build_grid_mst(guide, device=logits.device)
        out["rgb"] = rgb_tree_loss(
            logits.softmax(1), guide, sigma=config.rgb_sigma, unlabelled_mask=labels == IGNORE_INDEX,
            detach_target=config.rgb_detach_target, mask_numerator=config.rgb_mask_numerator, tree=tree,
        )
        total = total + pairwise_scale * config.alpha_rgb * out["rgb"]
    out["loss"] = total
    return out


# ---------------------------------------------------------------------------------------------
# Training / prediction
# ---------------------------------------------------------------------------------------------


def pairwise_ramp(step: int, config: PointWsssConfig) -> float:
    """Weight in [0, 1] of the pairwise terms at ``step`` (from 1): ``step / (warmup * iterations)``,
    capped at 1; always 1 without warm-up."""
    warmup_steps = config.pairwise_warmup * config.iterations
    return 1.0 if warmup_steps <= 0 else min(1.0, step / warmup_steps)


def _stack_inputs(
    images: Sequence[np.ndarray], point_maps: Sequence[np.ndarray]
) -> tuple[torch.Tensor, torch.Tensor]:
    if len(images) != len(point_maps) or not images:
        raise ValueError(f"{len(images)} images vs {len(point_maps)} point maps (need equal, > 0)")
    shape = images[0].shape
    for k, (im, pm) in enumerate(zip(images, point_maps)):
        if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
            raise ValueError(f"image {k}: expected uint8 (H, W, 3), got {im.dtype} {im.shape}")
        if im.shape != shape:
            raise ValueError(f"image {k}: shape {im.shape} differs from {shape} (equal sizes required)")
        if pm.shape != im.shape[:2]:
            raise ValueError(f"point map {k}: shape {pm.shape} != image {im.shape[:2]}")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(np.stack(point_maps).astype(np.int64))
    return x, y


def train_point_wsss(
    *,
    images: list[np.ndarray],
    point_maps: list[np.ndarray],
    num_classes: int,
    config: PointWsssConfig,
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> torch.nn.Module:
    """Train :class:`PointSegNet` with L_sem (Eq. 5) from point labels; returns it in eval mode.

    Args:
        images: uint8 (H, W, 3) RGB images, all the same size.
        point_maps: per image, (H, W) integer maps: a semantic index at each point pixel, 255
            elsewhere (:func:`point_label_maps`); expanded to ``config.point_square`` squares here.
        num_classes: C (stuff + things, the canonical semantic index order).
        config: :class:`PointWsssConfig`.
        progress: show a tqdm bar with the loss.
        on_step: called after every step with ``(step, {"loss", "partial", "lab"?, "rgb"?})``
            (step counts from 1).

    Batches: epochs of a random permutation (seeded generator), the last partial batch of an
    epoch dropped when the set is larger than a batch. Raises ``FloatingPointError`` with the
    step number when the loss is not finite. On CPU the run is deterministic
    (``torch.use_deterministic_algorithms`` inside the call, restored afterwards).
    """
    device = resolve_device(config.device)
    x_all, y_all = _stack_inputs(images, point_maps)
    labelled = y_all[y_all != IGNORE_INDEX]
    if labelled.numel() and (int(labelled.max()) >= num_classes or int(labelled.min()) < 0):
        raise ValueError(f"a point label is outside [0, {num_classes})")
    n = x_all.shape[0]
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    model = PointSegNet(
        num_classes, backbone=config.backbone, out_indices=config.out_indices,
        decoder_channels=config.decoder_channels,
    ).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    precision = mixed_precision(device, config.amp)
    scaler = precision.scaler

    bs = min(config.batch_size, n)
    order: list[int] = []

    def next_batch() -> torch.Tensor:
        nonlocal order
        if len(order) < bs:
            order = torch.randperm(n, generator=gen).tolist()
        idx, order = order[:bs], order[bs:]
        return torch.tensor(idx)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.iterations, desc="point-wsss", leave=False)
    model.train()
    with deterministic(device.type == "cpu"):
        for step in range(1, config.iterations + 1):
            idx = next_batch()
            xb, yb = x_all[idx], y_all[idx]
            if config.hflip:
                flip = torch.rand(len(idx), generator=gen) < 0.5
                xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(-1), xb)
                yb = torch.where(flip.view(-1, 1, 1), yb.flip(-1), yb)
            xb, yb = xb.to(device), yb.to(device)
            with precision.autocast(device):
                logits = model(normalize_images(xb))
            losses = compute_losses(logits, xb, yb, config, pairwise_ramp(step, config))
            loss = losses["loss"]
            if not torch.isfinite(loss):
                if bar is not None:
                    bar.close()
                parts = {k: float(v.detach()) for k, v in losses.items()}
                raise FloatingPointError(f"non-finite loss at step {step}: {parts}")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            values = {k: float(v.detach()) for k, v in losses.items()}
            if on_step is not None:
                on_step(step, values)
            if bar is not None:
                bar.set_postfix(loss=f"{values['loss']:.4f}")
                bar.update(1)
    if bar is not None:
        bar.close()
    model.eval()
    return model


@torch.no_grad()
def predict_semantic(model: torch.nn.Module, images: Sequence[np.ndarray], *, batch_size: int = 8) -> list[np.ndarray]:
    """uint8 (H, W) argmax semantic maps, one per uint8 (H, W, 3) image (sizes may differ:
    consecutive images of equal size are batched). The model is put in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    out: list[np.ndarray] = []
    k = 0
    while k < len(images):
        shape = images[k].shape
        j = k
        while j < len(images) and j - k < batch_size and images[j].shape == shape:
            j += 1
        x = torch.from_numpy(np.stack(images[k:j])).permute(0, 3, 1, 2).to(device)
        logits = model(normalize_images(x))
        out.extend(m for m in logits.argmax(1).to(torch.uint8).cpu().numpy())
        k = j
    return out
