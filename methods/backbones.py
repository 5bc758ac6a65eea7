"""Backbone weights every method shares: loading a local checkpoint into a timm feature extractor, and
the classification pre-training that stands in for ImageNet weights on the synthetic profiles.

Every paper reproduced here starts its backbone from ImageNet classification weights (BESTIE, P2Seg:
HRNet-W48 / ResNet-101; the segmentors: ResNet-50/101). None can be downloaded on the machines this
harness targets, and a network trained from random weights for minutes of CPU does not learn BESTIE's
centre heatmaps (docs/bestie.md). :func:`pretrain_classifier` gives the embedded profile the same kind of
start: multi-label image classification (which classes are present — image-level labels only, no
masks, boxes or points) on images the benchmark never evaluates or trains on (a separate stream of the
synthetic generator, :func:`datasets.synthetic.render_classification_set`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from methods.distributed import (
    convert_sync_batchnorm,
    current,
    gather_rows,
    mean_across_ranks,
    per_rank_batch,
    rank_slice,
    shard,
    wrap_model,
)
from methods.runtime import deterministic, resolve_device

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "PretrainConfig", "PretrainResult", "classification_scores",
           "feature_extractor", "load_backbone_weights", "normalize_images", "pretrain_classifier"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 or [0, 1] float → ImageNet mean/std-normalised float32 (every network's input)."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def feature_extractor(name: str, out_indices: Sequence[int] | None = None) -> nn.Module:
    """``timm.create_model(name, features_only=True)`` with random weights (nothing is downloaded);
    ``out_indices`` None = every level (what pre-training trains: its checkpoint then loads into an
    extractor of any ``out_indices``, whose modules are a prefix of the full model's)."""
    import timm

    kwargs = {} if out_indices is None else {"out_indices": tuple(out_indices)}
    return timm.create_model(name, pretrained=False, features_only=True, **kwargs)


def load_backbone_weights(body: nn.Module, path: Path | str, *, param: str = "backbone weights") -> None:
    """Load a local checkpoint into a ``features_only`` timm model.

    The checkpoint is a ``state_dict`` (or a dict holding one under ``"state_dict"`` / ``"model"``) of the
    same timm model, with or without its classifier: keys the feature extractor lacks are ignored, keys
    it has and the checkpoint lacks raise (naming ``param``, the parameter that points at the file).
    A checkpoint holds every level of the model, so it loads for any ``out_indices``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{param}: {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    own = body.state_dict()
    missing = sorted(k for k in own if k not in state)
    if missing:
        raise ValueError(f"{param}: {path} lacks {len(missing)} keys of the feature extractor, e.g. {missing[:3]}")
    body.load_state_dict({k: state[k] for k in own}, strict=True)


@dataclass(frozen=True)
class PretrainConfig:
    """Multi-label classification pre-training of one backbone (AdamW, linear warm-up then cosine decay,
    horizontal flips; binary cross-entropy per class on the pooled coarsest level)."""

    iterations: int = 1500
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    hflip: bool = True
    eval_every: int = 100
    seed: int = 0
    device: str | None = None

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.batch_size < 1 or self.eval_every < 1:
            raise ValueError("iterations, batch_size and eval_every must be >= 1")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")

    def lr_factor(self, step: int) -> float:
        """The learning-rate multiplier after ``step`` optimiser steps (0-based)."""
        warmup = max(1, round(self.warmup_fraction * self.iterations))
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, self.iterations - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class PretrainResult:
    """The pre-trained feature extractor's ``state_dict`` and the held-out classification scores."""

    state_dict: dict[str, torch.Tensor]
    metrics: dict[str, float]
    history: list[dict[str, float]]

    def summary(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "history": self.history}


def _normalize(images: np.ndarray, device: torch.device) -> torch.Tensor:
    return normalize_images(torch.from_numpy(images).to(device).permute(0, 3, 1, 2))


class _Classifier(nn.Module):
    def __init__(self, body: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.body = body
        self.fc = nn.Linear(body.feature_info.channels()[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x)[-1].mean((2, 3)))


def classification_scores(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Held-out multi-label scores (%): mAP over the classes present in ``labels`` (sklearn's average
    precision), per-label accuracy and exact-match accuracy at probability 0.5."""
    from sklearn.metrics import average_precision_score

    present = labels.sum(0) > 0
    predicted = probabilities >= 0.5
    truth = labels > 0.5
    return {
        "mAP": 100.0 * float(average_precision_score(labels[:, present], probabilities[:, present], average="macro")),
        "label_accuracy": 100.0 * float((predicted == truth).mean()),
        "exact_match": 100.0 * float((predicted == truth).all(1).mean()),
    }


@torch.no_grad()
def _predict(model: _Classifier, images: np.ndarray, device: torch.device, batch_size: int) -> np.ndarray:
    """Class probabilities of ``images``; under DDP each rank scores its shard (methods.distributed.shard) with
    the unwrapped network (no collectives) and every rank gets all rows back, in order."""
    model.eval()
    part = shard(len(images), current())
    mine = images[part.start:part.stop]
    out = [model(_normalize(mine[k:k + batch_size], device)).sigmoid().cpu().numpy()
           for k in range(0, len(mine), batch_size)]
    model.train()
    return gather_rows(np.concatenate(out) if out else np.zeros((0, model.fc.out_features), np.float32))


def pretrain_classifier(
    backbone: str,
    images: np.ndarray,
    labels: np.ndarray,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    config: PretrainConfig,
    *,
    progress: bool = True,
    desc: str = "pretrain",
    on_eval: Callable[[int, dict[str, float]], None] | None = None,
) -> PretrainResult:
    """Train the timm feature extractor ``backbone`` from random weights with a linear classifier on its
    pooled coarsest level to predict the multi-hot ``labels`` (N, K) of ``images`` (N, H, W, 3 uint8);
    score the held-out ``val_images`` every ``config.eval_every`` steps and at the end. Returns the
    body's weights (the classifier is dropped, as ImageNet heads are) and the scores. ``config.seed``
    fixes the initial weights, the batch order and the flips: deterministic on CPU for a seed and a
    thread count, whatever the global random state before the call.

    Under torchrun (methods.distributed) every rank draws the same global batch of ``config.batch_size`` images
    and trains on its slice of it; DDP averages the gradients and the batch-norm statistics are the global batch's,
    so the schedule is the single-process one (equal up to the order of floating-point sums). Every rank returns
    the same result."""
    if len(images) == 0 or len(val_images) == 0:
        raise ValueError("pre-training needs training and held-out images")
    world = current()
    per_rank_batch(config.batch_size, world.size)  # a batch that does not split evenly stops here
    device = world.device if world.size > 1 and world.device is not None else resolve_device(config.device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    classifier = convert_sync_batchnorm(_Classifier(feature_extractor(backbone), labels.shape[1]).to(device), world)
    model = wrap_model(classifier, world)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, config.lr_factor)
    bar = None
    if progress and world.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.iterations, desc=desc, leave=False)
    history: list[dict[str, float]] = []
    order: list[int] = []
    model.train()
    with deterministic(device.type == "cpu"):
        for step in range(1, config.iterations + 1):
            if len(order) < config.batch_size:
                order += rng.permutation(len(images)).tolist()
            idx, order = order[:config.batch_size], order[config.batch_size:]
            flip = rng.random(len(idx)) < 0.5 if config.hflip else np.zeros(len(idx), bool)  # global draws
            idx, flip = rank_slice(idx, world), rank_slice(flip, world)
            batch = np.where(flip[:, None, None, None], images[idx][:, :, ::-1], images[idx])
            local = F.binary_cross_entropy_with_logits(model(_normalize(np.ascontiguousarray(batch), device)),
                                                       torch.from_numpy(labels[idx]).float().to(device))
            loss = mean_across_ranks(local)  # the global batch's loss; every rank sees the same value
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite pre-training loss at step {step}")
            opt.zero_grad(set_to_none=True)
            local.backward()
            opt.step()
            sched.step()
            if bar is not None:
                bar.set_postfix(loss=f"{loss.item():.3f}")
                bar.update(1)
            if step % config.eval_every == 0 or step == config.iterations:
                scores = classification_scores(_predict(classifier, val_images, device, 4 * config.batch_size),
                                               val_labels)
                entry = {"step": float(step), "loss": float(loss.item()), **{f"val.{k}": v for k, v in scores.items()}}
                history.append(entry)
                if on_eval is not None:
                    on_eval(step, entry)
    if bar is not None:
        bar.close()
    final = {k: v for k, v in history[-1].items() if k.startswith("val.")}
    state = {k: v.detach().cpu().clone() for k, v in classifier.body.state_dict().items()}
    return PretrainResult(state, final, history)
