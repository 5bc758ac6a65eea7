"""The generic training and prediction loop of every segmentor (model-agnostic).

Any model that follows torchvision's detection convention works::

    model.train(); losses = model(images, targets)   # dict of scalar losses
    model.eval();  outputs = model(images)           # [{boxes, labels, scores, masks (N, 1, H, W)}]

with ``images`` float (3, H, W) in [0, 1] (resizing and normalisation inside the model) and
targets ``{boxes xyxy, labels 1..K, masks uint8 (N, H, W), weights (N,)}``.

:func:`train` — read top to bottom, like torchvision's ``references/detection``:

1. SGD (momentum, weight decay) with a linear warm-up and multi-step decay, per iteration;
2. each step takes the next ``batch_size`` images of a stream of seeded epoch permutations and
   flips each with p = 0.5; both are pure functions of ``(seed, step)``, so a resumed run sees
   the same batches; multi-scale resizing is the model's (``min_size`` tuple);
3. forward / backward (AMP on CUDA), a NaN guard, the losses and LR reported to ``on_step``
   and a tqdm bar (loss, LR, ETA);
4. a checkpoint (model, optimizer, scheduler, AMP scaler, torch RNG states, iteration) every
   ``checkpoint_every`` steps and at the end, written atomically. When ``checkpoint_dir``
   holds a checkpoint with the same ``fingerprint``, training resumes from it and ends with
   the same weights as an uninterrupted run (on CPU, where it is deterministic).

:func:`predict` — thresholded masks, labels and scores per image, best first.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from methods.runtime import deterministic, mixed_precision, resolve_device

__all__ = ["EngineConfig", "TrainResult", "Prediction", "train", "predict", "lr_factor", "batch_indices",
           "flip_flags", "hflip", "CHECKPOINT_NAME", "load_checkpoint"]

log = logging.getLogger(__name__)
CHECKPOINT_NAME = "last.pt"
Target = dict[str, torch.Tensor]


class TrainingSet(Protocol):
    """What :func:`train` iterates: ``len`` and ``(image float (3, H, W) in [0, 1], target)`` items."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]: ...


@dataclass(frozen=True)
class EngineConfig:
    """Optimisation settings of :func:`train` (iterations count optimizer steps)."""

    iterations: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 0
    """Linear warm-up from ``lr * warmup_factor`` to ``lr`` over these steps (detectron2: 1000)."""
    warmup_factor: float = 0.001
    lr_steps: tuple[int, ...] = ()
    """Iterations at which the LR is multiplied by ``lr_gamma``."""
    lr_gamma: float = 0.1
    hflip: bool = True
    checkpoint_every: int = 0
    """Save a resumable checkpoint every this many steps (0 = only at the end)."""
    seed: int = 0
    amp: bool = True
    """Mixed precision on CUDA (bf16 where supported, else fp16 + GradScaler); never on CPU."""
    device: str | None = None
    """'cpu', 'cuda', ...; None = CUDA when available."""

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.batch_size < 1:
            raise ValueError("iterations and batch_size must be >= 1")
        if list(self.lr_steps) != sorted(self.lr_steps):
            raise ValueError(f"lr_steps must be increasing, got {self.lr_steps}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """What a :func:`train` call did: total iterations, where it resumed, its own wall time and speed."""

    iterations: int
    resumed_from: int
    seconds: float
    images_per_second: float
    last_losses: dict[str, float] = field(default_factory=dict)


@dataclass
class Prediction:
    """One image's detections, best score first: bool masks (N, H, W), model labels, scores."""

    masks: np.ndarray
    labels: np.ndarray
    scores: np.ndarray


def lr_factor(iteration: int, config: EngineConfig) -> float:
    """LR multiplier at 0-based ``iteration``: linear warm-up times ``gamma ** (steps passed)``."""
    warm = 1.0
    if iteration < config.warmup_iters:
        alpha = iteration / config.warmup_iters
        warm = config.warmup_factor * (1 - alpha) + alpha
    return warm * config.lr_gamma ** bisect.bisect_right(config.lr_steps, iteration)


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> list[int]:
    """Dataset indices of 0-based ``step``: positions ``step*bs ..`` of the stream of epoch
    permutations, epoch ``e`` permuted by ``default_rng([seed, 0, e])``."""
    out = []
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch, offset = divmod(position, n)
        out.append(int(np.random.default_rng([seed, 0, epoch]).permutation(n)[offset]))
    return out


def flip_flags(step: int, batch_size: int, seed: int) -> list[bool]:
    """Horizontal-flip decision (p = 0.5) per image of 0-based ``step``."""
    return (np.random.default_rng([seed, 1, step]).random(batch_size) < 0.5).tolist()


def hflip(image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
    """Mirror an image (3, H, W) and its target (boxes xyxy, masks (N, H, W))."""
    width = image.shape[-1]
    out = dict(target)
    boxes = target["boxes"].clone()
    boxes[:, 0], boxes[:, 2] = width - target["boxes"][:, 2], width - target["boxes"][:, 0]
    out["boxes"] = boxes
    out["masks"] = target["masks"].flip(-1)
    return image.flip(-1), out


def _save_atomic(state: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by :func:`train`, loaded with ``weights_only=True`` on the CPU."""
    return torch.load(path, map_location="cpu", weights_only=True)


def train(
    model: nn.Module,
    dataset: TrainingSet,
    config: EngineConfig,
    *,
    checkpoint_dir: Path | None = None,
    fingerprint: str = "",
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` in place for ``config.iterations`` steps (resuming from ``checkpoint_dir``).

    Args:
        model: a torchvision-convention detection model (see the module docstring).
        dataset: :class:`TrainingSet`; at least one image.
        config: :class:`EngineConfig`.
        checkpoint_dir: where ``last.pt`` is kept; ``None`` = no checkpoints, no resume.
        fingerprint: identifies the run (config, labels, model); a checkpoint with another
            fingerprint is ignored (and later overwritten) rather than resumed.
        on_step: called after each step with ``(step from 1, {loss names..., "loss", "lr"})``.
        progress: show a tqdm bar.

    Raises:
        FloatingPointError: a non-finite loss, naming the step and the loss terms.
    """
    n = len(dataset)
    if n == 0:
        raise ValueError("the training set is empty (no image has a usable instance)")
    device = resolve_device(config.device)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, config))
    precision = mixed_precision(device, config.amp)
    scaler = precision.scaler

    start = 0
    torch.manual_seed(config.seed)  # the model's own randomness (proposal sampling, multi-scale choice)
    path = checkpoint_dir / CHECKPOINT_NAME if checkpoint_dir is not None else None
    if path is not None and path.is_file():
        state = load_checkpoint(path)
        if state.get("fingerprint") == fingerprint and 0 < int(state["iteration"]) <= config.iterations:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            torch.set_rng_state(state["rng_cpu"])
            if device.type == "cuda" and "rng_cuda" in state:
                torch.cuda.set_rng_state(state["rng_cuda"], device)
            start = int(state["iteration"])
            log.info("resuming from %s at iteration %d of %d", path, start, config.iterations)
        else:
            log.warning("ignoring checkpoint %s: it belongs to another configuration or labels", path)

    def save(iteration: int) -> None:
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {"iteration": iteration, "fingerprint": fingerprint, "model": model.state_dict(),
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "scaler": scaler.state_dict(), "rng_cpu": torch.get_rng_state(), "config": config.to_dict()}
        if device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(device)
        _save_atomic(state, path)

    bar = None
    if progress and start < config.iterations:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.iterations, initial=start, desc="segmentor", unit="it", leave=False)
    values: dict[str, float] = {}
    t0 = time.perf_counter()
    model.train()
    with deterministic(device.type == "cpu", warn_only=True):
        for step in range(start, config.iterations):
            images, targets = [], []
            flips = flip_flags(step, config.batch_size, config.seed)
            for index, flip in zip(batch_indices(step, n, config.batch_size, config.seed), flips):
                image, target = dataset[index]
                if config.hflip and flip:
                    image, target = hflip(image, target)
                images.append(image.to(device))
                targets.append({k: v.to(device) for k, v in target.items()})
            with precision.autocast(device):
                losses = model(images, targets)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                if bar is not None:
                    bar.close()
                terms = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
                raise FloatingPointError(
                    f"training diverged: non-finite loss at iteration {step + 1}: {terms} (lr "
                    f"{optimizer.param_groups[0]['lr']:.3g}); try a lower segmentor.lr (now {config.lr:g}) or a "
                    f"longer segmentor.warmup_iters (now {config.warmup_iters})")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            values = {k: float(v.detach()) for k, v in losses.items()}
            values["loss"] = float(loss.detach())
            values["lr"] = optimizer.param_groups[0]["lr"]
            scheduler.step()
            done = step + 1
            if config.checkpoint_every and done % config.checkpoint_every == 0 and done < config.iterations:
                save(done)
            if bar is not None:
                bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{values['lr']:.2g}")
                bar.update(1)
            if on_step is not None:
                on_step(done, values)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    if start < config.iterations:
        save(config.iterations)
    run_steps = config.iterations - start
    model.eval()
    return TrainResult(config.iterations, start, seconds,
                       run_steps * config.batch_size / seconds if run_steps and seconds > 0 else math.nan, values)


@torch.no_grad()
def predict(
    model: nn.Module,
    images: Iterable[np.ndarray],
    *,
    batch_size: int = 4,
    mask_threshold: float = 0.5,
    max_detections: int = 100,
    amp: bool = True,
) -> Iterator[Prediction]:
    """Predictions for uint8 (H, W, 3) RGB images, in order: at most ``max_detections`` per image,
    best score first, masks ``> mask_threshold``; detections whose mask is empty are left out."""
    model.eval()
    device = next(model.parameters()).device
    use_amp = bool(amp and device.type == "cuda")

    def run(batch: Sequence[np.ndarray]) -> Iterator[Prediction]:
        x = [torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0).to(device)
             for im in batch]
        with torch.autocast(device.type, enabled=use_amp):
            outputs = model(x)
        for out in outputs:
            scores = out["scores"].float().cpu()
            order = torch.argsort(scores, descending=True, stable=True)
            masks = (out["masks"][order, 0].float() > mask_threshold).cpu().numpy()
            keep = np.flatnonzero(masks.any(axis=(1, 2)))[:max_detections]
            yield Prediction(masks[keep], out["labels"][order].cpu().numpy()[keep], scores[order].numpy()[keep])

    batch: list[np.ndarray] = []
    for image in images:
        batch.append(image)
        if len(batch) == batch_size:
            yield from run(batch)
            batch = []
    if batch:
        yield from run(batch)
