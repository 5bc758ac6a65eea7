"""Image-level WSSS: class activation maps of a multi-label classifier, optionally with BESTIE's PAM.

BESTIE's image-level setting (paper 002, Sec. 3.1 and appendix "Details of Peak Attention
Module"; release ``PAM/models/classifier.py``, ``PAM/train.py``, ``PAM/point_extraction.py``):

- **Classifier** (:class:`CamNet`): a backbone at output stride 8 (release: VGG-16 with the last
  max-pool at stride 1 and dilated conv5), ``extra_convs`` 3x3 convs ("extra_conv1-3", 512 ch in
  the release), a 1x1 conv to K class maps ("extra_conv4", the CAMs), global average pooling ->
  K logits. Between the extra convs: ReLU, or the peak attention module (PAM, :mod:`.pam`: ReLU,
  then zero every value below alpha x the channel max, alpha = 0.7) after the extra convs listed
  in ``pam_layers`` (1-based, negative from the end; Table 8's layer 4 / 5 / 6 = extra conv 1 / 2 / 3).
  The appendix (Fig. 10) and the release put PAM after all three extra convs; Table 8 finds the last
  layer alone best (41.8 vs 34.8 mAP50), so ``pam_layers = (-1,)`` is the default.
- **Loss**: ``multilabel_soft_margin_loss(logits, labels)`` (release) = the mean over classes of
  the binary cross-entropy on sigmoid(logit) (paper: "binary cross-entropy") — identical.
- **CAM** (release ``cam_normalize``): ReLU of the class maps, absent classes zeroed with the
  image labels, bilinear upsampling to the image size, division by each channel's max + 1e-5
  (:func:`~.peaks.normalize_cam`); flip TTA: (cam(x) + flip(cam(flip(x)))) / 2
  (:func:`~.peaks.flip_average`).
- **Semantic map** (:func:`semantic_from_cam`, common CAM practice, e.g. IRN / PSA): argmax over
  ``[bg_threshold, cam_1 .. cam_K]``; channel 0 = background. Pixels whose top CAM lies within
  ``unsure_margin`` of the threshold can be written as 255 (off by default).
- **Peaks** (instance cues): :func:`~.peaks.extract_peaks` (3x3 smoothing, NMS 15, top 25 per
  class, score > 0.5 paper / > 0.7 release training filter) over the image-label classes.

Training is a fixed number of steps over epochs of a seeded permutation (own generator),
horizontal flip p = 0.5 from the same generator; images are resized to ``input_size`` squared
(labels are image-level, so any resize keeps them valid; the release random-crops 321 px).
No pipeline imports: torch, numpy, timm (lazy) and tqdm (lazy) only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from methods.runtime import deterministic, mixed_precision, resolve_device

from .model import normalize_images
from .pam import PeakAttention
from .peaks import Peak, extract_peaks, flip_average, normalize_cam

__all__ = [
    "CamConfig",
    "CamNet",
    "CamResult",
    "train_cam",
    "iter_cams",
    "label_masked_cam",
    "semantic_from_cam",
    "cam_peaks",
]

IGNORE_INDEX = 255


@dataclass(frozen=True)
class CamConfig:
    """Hyper-parameters of the CAM / PAM classifier (paper / release values noted per field)."""

    use_pam: bool = False
    """Peak attention module after the ``pam_layers`` extra convs (mode ``pam``); False = ReLU (``cam``)."""
    pam_alpha: float = 0.7
    """PAM controller alpha (paper 0.7; Table 7: 0.3-0.7 hardly matter)."""
    pam_layers: tuple[int, ...] = (-1,)
    """The extra convs followed by PAM instead of ReLU, 1-based or counted from the end (-1 = the
    last): (-1,) = the last layer only (paper Table 8's layer 6, best); (1, 2, 3) = all three of
    the default 3 (appendix Fig. 10, release ``classifier.py``)."""
    backbone: str = "resnet18"
    """timm backbone (``pretrained=False``, ``features_only``; the release: ImageNet VGG-16)."""
    feature_index: int = 2
    """timm ``out_indices`` level fed to the extra convs (resnet18: 2 = layer2, 128 ch, stride 8; 3 =
    layer3 dilated to stride 8, slower per step)."""
    output_stride: int | None = 8
    """Backbone output stride, by dilation (release VGG-16 variant: 8); None = the backbone's own
    stride at ``feature_index`` (timm's VGG cannot dilate; its level 3, conv4_3, is at stride 8)."""
    extra_convs: int = 3
    """3x3 convs between the backbone and the 1x1 classifier (release: 3)."""
    extra_channels: int = 128
    """Width of the extra convs (release: 512)."""
    input_size: int = 128
    """Images are resized to input_size x input_size for training and CAM inference (release:
    random 321 crops of the long-side-384 image); CAMs are upsampled to the original size."""
    iterations: int = 150
    """Optimizer steps (release: 15 epochs of batch 5)."""
    batch_size: int = 16
    """Images per step (release: 5)."""
    optimizer: Literal["adamw", "sgd"] = "adamw"
    """``sgd``: the paper's SGD (momentum 0.9, nesterov as the release; extra layers at 10x lr;
    lr x0.1 after 1/3 and 2/3 of the steps = epochs 5 and 10 of 15). ``adamw``: constant lr, for
    the from-scratch embedded profile."""
    lr: float = 1e-3
    """Base learning rate (paper: 0.001 with SGD)."""
    weight_decay: float = 1e-4
    """Weight decay (paper: 0.0005)."""
    hflip: bool = True
    """Random horizontal flip, p = 0.5 per image (paper: flip + colour jitter + crop)."""
    seed: int = 0
    """Seeds the weights (torch.manual_seed), batch order and flips (own generator)."""
    amp: bool = True
    """Mixed precision on CUDA (bf16 where supported, else fp16 + GradScaler); never on CPU."""
    device: str | None = None
    """'cpu', 'cuda', ...; None = CUDA when available, else CPU."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.pam_alpha <= 1.0:
            raise ValueError(f"pam_alpha must be in [0, 1], got {self.pam_alpha}")
        if self.extra_convs < 1:
            raise ValueError(f"need extra_convs >= 1, got {self.extra_convs}")
        n = self.extra_convs
        if not self.pam_layers or not all(1 <= abs(k) <= n for k in self.pam_layers) or \
                len(self.pam_positions) != len(self.pam_layers):
            raise ValueError(f"pam_layers must list distinct extra convs, 1..{n} or -{n}..-1, "
                             f"got {list(self.pam_layers)}")
        if min(self.iterations, self.batch_size, self.input_size, self.extra_channels) < 1:
            raise ValueError("iterations, batch_size, input_size and extra_channels must be >= 1")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")

    @property
    def pam_positions(self) -> set[int]:
        """The 1-based positions of the extra convs in ``pam_layers`` (-1 = ``extra_convs``)."""
        return {k if k > 0 else self.extra_convs + 1 + k for k in self.pam_layers}

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON values (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# ---------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------


class CamNet(nn.Module):
    """Backbone -> extra 3x3 convs (ReLU or PAM) -> 1x1 conv (K class maps) -> GAP logits.

    Args:
        num_classes: K, the thing classes (the release: 20 on VOC; no background channel).
        config: architecture fields of :class:`CamConfig`.
        backbone_module: replaces the timm backbone (tests): any module mapping (B, 3, H, W) to a
            list whose last entry is the (B, C, h, w) feature map; ``in_channels`` then gives C.
    """

    def __init__(
        self,
        num_classes: int,
        config: CamConfig = CamConfig(),
        *,
        backbone_module: nn.Module | None = None,
        in_channels: int | None = None,
    ) -> None:
        super().__init__()
        if backbone_module is None:
            import timm

            stride = {} if config.output_stride is None else {"output_stride": config.output_stride}
            backbone_module = timm.create_model(
                config.backbone, pretrained=False, features_only=True, out_indices=(config.feature_index,), **stride
            )
            in_channels = backbone_module.feature_info.channels()[-1]
        if in_channels is None:
            raise ValueError("in_channels is required with a custom backbone_module")
        self.backbone = backbone_module
        chans = [in_channels] + [config.extra_channels] * config.extra_convs
        self.extra = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(chans[:-1], chans[1:]))
        self.classifier = nn.Conv2d(config.extra_channels, num_classes, 1)
        # activation after each extra conv: PAM after the pam_layers, ReLU elsewhere (release: PAM includes the ReLU)
        self.acts = nn.ModuleList(
            PeakAttention(config.pam_alpha) if config.use_pam and k in config.pam_positions else nn.ReLU()
            for k in range(1, config.extra_convs + 1)
        )
        self.num_classes = num_classes
        for m in [*self.extra, self.classifier]:  # release _initialize_weights: N(0, sqrt(2 / (k*k*out)))
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
            nn.init.zeros_(m.bias)

    def class_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Raw (B, K, h, w) class activation maps (the 1x1 classifier's output, before ReLU)."""
        f = self.backbone(x)[-1]
        for conv, act in zip(self.extra, self.acts):
            f = act(conv(f))
        return self.classifier(f)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (B, K), class maps (B, K, h, w))``; logits = GAP of the class maps (release ``fc``)."""
        maps = self.class_maps(x)
        return maps.mean(dim=(2, 3)), maps


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def _resize_batch(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """uint8 (H, W, 3) images -> uint8 (B, 3, size, size) (bilinear, antialiased when shrinking)."""
    out = []
    for k, im in enumerate(images):
        if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
            raise ValueError(f"image {k}: expected uint8 (H, W, 3), got {im.dtype} {im.shape}")
        t = torch.from_numpy(np.array(im, copy=True)).permute(2, 0, 1)[None]
        if t.shape[-2:] != (size, size):
            t = F.interpolate(t.float(), size=(size, size), mode="bilinear", align_corners=False,
                              antialias=True).round().clamp(0, 255).to(torch.uint8)
        out.append(t)
    return torch.cat(out)


def _make_optimizer(model: CamNet, config: CamConfig) -> tuple[torch.optim.Optimizer, Callable[[int], None]]:
    """The optimizer and a per-step lr update (``sgd``: paper schedule; ``adamw``: constant)."""
    if config.optimizer == "sgd":
        new = [*model.extra.parameters(), *model.classifier.parameters()]
        new_ids = {id(p) for p in new}
        old = [p for p in model.parameters() if id(p) not in new_ids]
        groups = [{"params": old, "lr": config.lr, "base": config.lr},
                  {"params": new, "lr": 10 * config.lr, "base": 10 * config.lr}]
        opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True,
                                                     weight_decay=config.weight_decay)
        milestones = (config.iterations // 3, 2 * config.iterations // 3)

        def update(step: int) -> None:
            factor = 0.1 ** sum(step > m for m in milestones)
            for g in opt.param_groups:
                g["lr"] = g["base"] * factor

        return opt, update
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return opt, lambda step: None


def train_cam(
    *,
    images: Sequence[np.ndarray],
    labels: np.ndarray,
    config: CamConfig,
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    model: CamNet | None = None,
) -> CamNet:
    """Train the multi-label classifier; returns it in eval mode.

    Args:
        images: uint8 (H, W, 3) RGB images (any sizes; resized to ``config.input_size``).
        labels: (N, K) 0/1 image-level labels (K = thing classes; an image without any is a valid
            all-negative example).
        config: :class:`CamConfig`.
        progress: tqdm bar with the loss.
        on_step: ``(step, {"loss", "lr"})`` after every step (step counts from 1).
        model: a prebuilt :class:`CamNet` (tests); default: built from ``config`` after
            ``torch.manual_seed(config.seed)``.

    Deterministic on CPU (``torch.use_deterministic_algorithms`` inside the call, restored
    afterwards); a non-finite loss raises ``FloatingPointError`` naming the step.
    """
    y_all = torch.as_tensor(np.asarray(labels), dtype=torch.float32)
    if y_all.ndim != 2 or y_all.shape[0] != len(images) or not len(images):
        raise ValueError(f"labels must be (N, K) with N = {len(images)} images > 0, got {tuple(y_all.shape)}")
    if not torch.all((y_all == 0) | (y_all == 1)):
        raise ValueError("labels must be 0/1")
    device = resolve_device(config.device)
    x_all = _resize_batch(images, config.input_size)
    n = x_all.shape[0]
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    if model is None:
        model = CamNet(y_all.shape[1], config)
    model = model.to(device)
    opt, update_lr = _make_optimizer(model, config)
    precision = mixed_precision(device, config.amp)
    scaler = precision.scaler
    bs = min(config.batch_size, n)
    order: list[int] = []

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.iterations, desc="pam" if config.use_pam else "cam", leave=False)
    model.train()
    try:
        with deterministic(device.type == "cpu"):
            for step in range(1, config.iterations + 1):
                if len(order) < bs:  # a new epoch; the incomplete rest of the last one is dropped
                    order = torch.randperm(n, generator=gen).tolist()
                idx, order = torch.tensor(order[:bs]), order[bs:]
                xb, yb = x_all[idx], y_all[idx]
                if config.hflip:
                    flip = torch.rand(len(idx), generator=gen) < 0.5
                    xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(-1), xb)
                xb, yb = xb.to(device), yb.to(device)
                update_lr(step)
                with precision.autocast(device):
                    logits, _ = model(normalize_images(xb))
                loss = F.multilabel_soft_margin_loss(logits.float(), yb)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss at step {step}: {float(loss.detach())}")
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                values = {"loss": float(loss.detach()), "lr": float(opt.param_groups[0]["lr"])}
                if on_step is not None:
                    on_step(step, values)
                if bar is not None:
                    bar.set_postfix(loss=f"{values['loss']:.4f}")
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    model.eval()
    return model


# ---------------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------------


def label_masked_cam(maps: torch.Tensor, labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Release ``cam_normalize``: ReLU, zero absent classes, bilinear to ``size``, / (channel max + 1e-5).

    Args:
        maps: (B, K, h, w) raw class maps.
        labels: (B, K) 0/1 (the classes kept).
        size: (H, W) output size.
    """
    cam = F.relu(maps.float()) * labels.float()[:, :, None, None]
    cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)
    return normalize_cam(cam)


@dataclass(frozen=True)
class CamResult:
    """The CAM of one image: flip-averaged normalised (K, H, W) maps, the labels used, the logits."""

    index: int
    cam: torch.Tensor
    labels: np.ndarray
    logits: np.ndarray


@torch.no_grad()
def iter_cams(
    model: CamNet,
    images: Sequence[np.ndarray],
    labels: np.ndarray | None,
    *,
    input_size: int,
    batch_size: int = 8,
    flip: bool = True,
) -> Iterator[CamResult]:
    """Yield every image's CAM in input order (streamed: one batch of maps in memory at a time).

    Args:
        model: a trained :class:`CamNet` (put in eval mode).
        images: uint8 (H, W, 3) images; each is resized to ``input_size`` and its CAM upsampled
            back to (H, W).
        labels: (N, K) 0/1 labels whose classes are kept (the release masks with the GT image
            labels); None = the predicted labels: classes with sigmoid(logit) > 0.5, the logits
            averaged over the two flip views.
        flip: flip TTA (release ``point_extraction.py``); each view is normalised, then averaged.
    """
    model.eval()
    device = next(model.parameters()).device
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        x = _resize_batch(chunk, input_size).to(device)
        x = normalize_images(x)
        logits, maps = model(x)
        if flip:
            logits_f, maps_f = model(x.flip(-1))
            logits = (logits + logits_f) / 2
        if labels is None:
            lab = (torch.sigmoid(logits.float()) > 0.5).float()
        else:
            lab = torch.as_tensor(np.asarray(labels[start:start + len(chunk)]), dtype=torch.float32, device=device)
        for k, im in enumerate(chunk):
            size = im.shape[:2]
            cam = label_masked_cam(maps[k:k + 1], lab[k:k + 1], size)
            if flip:
                cam = flip_average(cam, label_masked_cam(maps_f[k:k + 1], lab[k:k + 1], size))
            yield CamResult(start + k, cam[0].cpu(), lab[k].cpu().numpy().astype(np.uint8),
                            logits[k].float().cpu().numpy())


def semantic_from_cam(
    cam: torch.Tensor | np.ndarray,
    channel_index: Sequence[int],
    *,
    bg_threshold: float,
    background_index: int = 0,
    unsure_margin: float = 0.0,
) -> np.ndarray:
    """Semantic map from CAMs: argmax over ``[bg_threshold, cam_1 .. cam_K]``.

    Args:
        cam: (K, H, W) normalised CAMs (absent classes already zero).
        channel_index: semantic index written for each of the K channels.
        bg_threshold: the constant background score (a pixel whose every CAM is <= it is background;
            ties go to background, the first entry of the argmax).
        background_index: value written for background (VOC: 0; 255 where the dataset's
            non-thing pixels cannot be named by one class).
        unsure_margin: pixels whose top CAM is within this of ``bg_threshold`` (strictly) become
            255 (ignore); 0 = off.

    Returns:
        uint8 (H, W) map.
    """
    t = torch.as_tensor(cam).float()
    if t.ndim != 3 or t.shape[0] != len(channel_index):
        raise ValueError(f"cam must be (K={len(channel_index)}, H, W), got {tuple(t.shape)}")
    bg = torch.full((1, *t.shape[1:]), float(bg_threshold))
    arg = torch.cat([bg, t]).argmax(0)
    lut = torch.tensor([background_index, *channel_index], dtype=torch.uint8)
    out = lut[arg]
    if unsure_margin > 0:
        top = t.amax(0) if t.shape[0] else torch.zeros(t.shape[1:])
        out[(top - bg_threshold).abs() < unsure_margin] = IGNORE_INDEX
    return out.numpy()


def cam_peaks(
    cam: torch.Tensor,
    labels: np.ndarray,
    *,
    kernel: int = 15,
    top_k: int = 25,
    threshold: float = 0.5,
    smooth_kernel: int | None = 3,
) -> list[Peak]:
    """BESTIE's instance cues of one image: :func:`~.peaks.extract_peaks` over its labelled classes."""
    classes = np.flatnonzero(np.asarray(labels)).tolist()
    if not classes:
        return []
    return extract_peaks(cam, kernel=kernel, top_k=top_k, threshold=threshold, smooth_kernel=smooth_kernel,
                         classes=classes)
