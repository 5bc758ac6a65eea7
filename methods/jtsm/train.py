"""JTSM training and inference (paper 003, Sec. 3 and 4.1), in the style of the torchvision references:
read it top to bottom.

Training (:func:`train_jtsm`): every step draws ``batch_size`` images (a seeded permutation per epoch),
one shorter-side scale for the batch from ``train_scales`` and a flip per image, resizes each image with
its proposals (bilinear image, nearest superpixel map, scaled boxes), pads the batch, and minimises
L = L_MIL + Σ_r L_PR^r + L_IS + L_SS (:meth:`JtsmNet.training_losses`, Eq. 1-4, 9-10) with SGD
(momentum, ×0.1 at ``lr_step``). Seeded; deterministic kernels on CPU; AMP on CUDA; a tqdm bar; the
per-step losses go to ``on_step``; :class:`Checkpointing` saves and resumes the whole training state.

Inference (:func:`predict`): the proposal scores averaged over the test scales and flips (Sec. 4.1) give
the detections (per-class NMS over the thing columns), their masks (the instance branch's, Eq. 9, pasted
into the box; the proposal's own mask without that branch) and the panoptic map (things by score, then
stuff from the semantic branch, or from the top stuff proposals without it; :mod:`methods.jtsm.panoptic`).

No pipeline imports: numpy, opencv, torch, timm, tqdm and ``methods.backbones`` / ``methods.runtime``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms

from methods.backbones import feature_extractor, load_backbone_weights, normalize_images
from methods.checkpointing import Checkpointing
from methods.jtsm.config import JtsmConfig
from methods.jtsm.inference import average_over_views
from methods.jtsm.model import JtsmNet
from methods.jtsm.panoptic import PanopticSegment, merge_panoptic
from methods.jtsm.segments import SegmentBatch
from methods.runtime import deterministic, mixed_precision, resolve_device

log = logging.getLogger(__name__)

__all__ = ["ImagePrediction", "Proposals", "Sample", "build_model", "predict", "proposal_masks",
           "stuff_map_from_proposals", "train_jtsm"]

#: One image's proposals: (superpixels (H, W) int, members [superpixel ids of each proposal], boxes (N, 4)
#: x0, y0, x1, y1 ends exclusive, scores (N,)) — ``datasets.proposals.ImageProposals.as_arrays()``.
Proposals = tuple[np.ndarray, list[np.ndarray], np.ndarray, np.ndarray]


@dataclass
class Sample:
    """A training image: RGB uint8 (H, W, 3), its proposals and its image labels (n^c,) 0/1 over the
    network's classes (things first, then stuff)."""

    image_id: int
    image: np.ndarray
    proposals: Proposals
    labels: np.ndarray


# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------


def build_model(config: JtsmConfig, *, backbone: str, num_things: int, num_stuff: int,
                backbone_weights: str | Path | None = None) -> JtsmNet:
    """:class:`JtsmNet` on the level of the timm ``backbone`` at stride ``config.feature_stride``, started
    from ``backbone_weights`` (a local checkpoint, e.g. the ``pretrain`` stage's) or random weights."""
    reductions = list(feature_extractor(backbone).feature_info.reduction())
    if config.feature_stride not in reductions:
        raise ValueError(f"jtsm.feature_stride {config.feature_stride}: backbone {backbone} has levels at strides "
                         f"{reductions}")
    body = feature_extractor(backbone, (reductions.index(config.feature_stride),))
    if backbone_weights is not None:
        load_backbone_weights(body, backbone_weights, param="jtsm.backbone_init")
    return JtsmNet(config, backbone=body, channels=body.feature_info.channels()[-1], num_things=num_things,
                   num_stuff=num_stuff)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def _resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) integer map (pixel centres), exact for any dtype."""
    h, w = array.shape
    rows = np.minimum(((np.arange(size[0]) + 0.5) * h / size[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * w / size[1]).astype(np.int64), w - 1)
    return array[rows][:, cols]


def _train_view(sample: Sample, scale: int, flip: bool) -> tuple[np.ndarray, Proposals]:
    """The image resized to shorter side ``scale`` (and mirrored) with its proposals carried along."""
    sp, members, boxes, scores = sample.proposals
    h, w = sample.image.shape[:2]
    nh, nw = max(1, round(h * scale / min(h, w))), max(1, round(w * scale / min(h, w)))
    image, boxes = sample.image, np.asarray(boxes, np.float32)
    if (nh, nw) != (h, w):
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        sp = _resize_nearest(sp, (nh, nw))
        boxes = boxes * np.array([nw / w, nh / h, nw / w, nh / h], np.float32)
        count = int(sp.max()) + 1  # a downscale may drop superpixels: proposals keep the ones left
        members = [m[m < count] for m in members]
    if flip:
        image, sp = image[:, ::-1], sp[:, ::-1]
        boxes = np.stack([nw - boxes[:, 2], boxes[:, 1], nw - boxes[:, 0], boxes[:, 3]], 1)
    return np.ascontiguousarray(image), (np.ascontiguousarray(sp), members, boxes, scores)


def _collate(views: Sequence[tuple[np.ndarray, Proposals]], device: torch.device
             ) -> tuple[torch.Tensor, SegmentBatch, np.ndarray]:
    """Images padded bottom/right to the largest (normalised tensor and the uint8 copy GrabCut reads) and
    their proposals as one :class:`SegmentBatch`."""
    hmax = max(v[0].shape[0] for v in views)
    wmax = max(v[0].shape[1] for v in views)
    rgb = np.zeros((len(views), hmax, wmax, 3), np.uint8)
    for b, (image, _) in enumerate(views):
        rgb[b, :image.shape[0], :image.shape[1]] = image
    segments = SegmentBatch.from_arrays([p for _, p in views], device)
    images = normalize_images(torch.from_numpy(rgb).permute(0, 3, 1, 2).to(device))
    return images, segments, rgb


def lr_factor(step: int, config: JtsmConfig) -> float:
    """Step decay (paper: ×0.1 at 70k of 100k); ``step`` counts from 0; ``lr_step`` 0 = none."""
    return 0.1 if 0 < config.lr_step <= step else 1.0


def train_jtsm(samples: Sequence[Sample], *, config: JtsmConfig, backbone: str, num_things: int, num_stuff: int,
               seed: int, backbone_weights: str | Path | None = None, device: str | None = None, amp: bool = True,
               progress: bool = True, desc: str = "jtsm",
               on_step: Callable[[int, dict[str, float]], None] | None = None,
               checkpoints: Sequence[int] = (), on_checkpoint: Callable[[int, JtsmNet], None] | None = None,
               checkpointing: Checkpointing | None = None) -> JtsmNet:
    """Train JTSM on ``samples`` for ``config.iterations`` steps; the model is returned in eval mode.
    ``on_step(step, losses)`` is called after every step (from 1) with every loss term, their sum
    ``loss`` and ``lr``; ``on_checkpoint(step, model)`` after each step in ``checkpoints`` (and at step 0 when
    listed), with the model in eval mode (the learning curve; it never changes the trained weights). A
    non-finite loss raises ``FloatingPointError`` naming the step."""
    if not samples:
        raise ValueError("no training samples")
    dev = resolve_device(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model(config, backbone=backbone, num_things=num_things, num_stuff=num_stuff,
                        backbone_weights=backbone_weights).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, config))
    precision = mixed_precision(dev, amp)
    n, bs = len(samples), min(config.batch_size, len(samples))
    order: list[int] = []
    start = 1
    state = checkpointing.load(config.iterations) if checkpointing is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        precision.scaler.load_state_dict(state["scaler"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        order, start = list(state["order"]), int(state["step"]) + 1
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.iterations, initial=start - 1, desc=desc, leave=False)
    if on_checkpoint is not None and 0 in checkpoints and start == 1:
        on_checkpoint(0, model.eval())
    model.train()
    with deterministic(dev.type == "cpu"):
        for step in range(start, config.iterations + 1):
            # 1. the batch: images of a seeded epoch order, one scale per batch, a flip per image
            if len(order) < bs:
                order = rng.permutation(n).tolist()
            idx, order = order[:bs], order[bs:]
            scale = int(config.train_scales[int(rng.integers(len(config.train_scales)))])
            flips = rng.random(bs) < 0.5 if config.train_flip else np.zeros(bs, bool)
            views = [_train_view(samples[i], scale, bool(f)) for i, f in zip(idx, flips)]
            images, segments, rgb = _collate(views, dev)
            labels = torch.from_numpy(np.stack([samples[i].labels for i in idx]).astype(np.float32)).to(dev)
            # 2. every term of Eq. 1 (the pseudo labels of Eq. 3 and 9-10 are mined inside, detached)
            with precision.autocast(dev):
                terms = model.training_losses(images, segments, labels, rgb if config.reestimate else None)
            terms = {k: v.float() for k, v in terms.items()}
            loss = torch.stack(list(terms.values())).sum()
            if not torch.isfinite(loss):
                if bar is not None:
                    bar.close()
                raise FloatingPointError(f"non-finite loss at step {step}: { {k: float(v) for k, v in terms.items()} }")
            # 3. the SGD step
            opt.zero_grad(set_to_none=True)
            precision.scaler.scale(loss).backward()
            precision.scaler.step(opt)
            precision.scaler.update()
            sched.step()
            values = {k: float(v.detach()) for k, v in terms.items()}
            values.update(loss=float(loss.detach()), lr=float(opt.param_groups[0]["lr"]))
            if on_step is not None:
                on_step(step, values)
            if bar is not None:
                bar.set_postfix(loss=f"{values['loss']:.3f}")
                bar.update(1)
            if on_checkpoint is not None and step in checkpoints:
                on_checkpoint(step, model.eval())
                model.train()
            if checkpointing is not None and (step % checkpointing.every == 0 or step == config.iterations):
                checkpointing.save({"step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
                                    "scheduler": sched.state_dict(), "scaler": precision.scaler.state_dict(),
                                    "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                                    "order": order})
    if bar is not None:
        bar.close()
    return model.eval()


# ---------------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------------


@dataclass
class ImagePrediction:
    """One image's outputs. ``scores`` (N, n^c) the test proposal scores; the detections ``boxes`` (D, 4)
    x0, y0, x1, y1, ``det_scores`` (D,), ``det_classes`` (D,) thing index, ``det_proposals`` (D,) the
    proposal each box is; ``masks`` (D, H, W) bool their instance masks; ``panoptic`` the segment-id map
    and its segments (category = class index, things first), None without stuff classes."""

    scores: np.ndarray
    boxes: np.ndarray
    det_scores: np.ndarray
    det_classes: np.ndarray
    det_proposals: np.ndarray
    masks: np.ndarray | None = None
    panoptic: tuple[np.ndarray, list[PanopticSegment]] | None = None


def nms_detections(boxes: torch.Tensor, scores: torch.Tensor, *, nms_threshold: float, max_per_image: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class NMS of proposal boxes (N, 4) scored (N, K): (proposal index, class, score) of the best
    ``max_per_image`` kept (score > 0), best first."""
    n, k = scores.shape
    flat = scores.reshape(-1).float()
    ok = (flat > 0).nonzero().flatten()
    proposal, cls = ok // k, ok % k
    keep = batched_nms(boxes[proposal].float(), flat[ok], cls, nms_threshold)[:max_per_image]
    return proposal[keep], cls[keep], flat[ok][keep]


def proposal_masks(proposals: Proposals, index: Sequence[int]) -> np.ndarray:
    """(len(index), H, W) bool masks of the proposals ``index``."""
    sp, members, _, _ = proposals
    out = np.zeros((len(index), *sp.shape), bool)
    count = int(sp.max()) + 1
    for j, k in enumerate(index):
        inside = np.zeros(count, bool)
        inside[members[int(k)]] = True
        out[j] = inside[sp]
    return out


def stuff_map_from_proposals(proposals: Proposals, stuff_scores: np.ndarray, threshold: float) -> np.ndarray:
    """(H, W) stuff-index map (-1 = none) from proposals scored per stuff class (N, n^s): each stuff class
    whose best proposal scores at least ``threshold`` paints that proposal, higher scores on top."""
    sp = proposals[0]
    out = np.full(sp.shape, -1, np.int64)
    if stuff_scores.size == 0:
        return out
    best = stuff_scores.argmax(0)
    peak = stuff_scores[best, np.arange(stuff_scores.shape[1])]
    for s in np.argsort(peak, kind="stable"):
        if peak[s] >= threshold:
            out[proposal_masks(proposals, [int(best[s])])[0]] = s
    return out


def _paste(probabilities: torch.Tensor, boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(D, m, m) mask probabilities pasted into their integer boxes of an (H, W) image, > 0.5."""
    out = np.zeros((len(boxes), *shape), bool)
    for j, (x0, y0, x1, y1) in enumerate(np.round(boxes).astype(np.int64)):
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(shape[1], x1), min(shape[0], y1)
        if x1 <= x0 or y1 <= y0:
            continue
        patch = F.interpolate(probabilities[j][None, None], size=(y1 - y0, x1 - x0), mode="bilinear",
                              align_corners=False)[0, 0]
        out[j, y0:y1, x0:x1] = (patch > 0.5).cpu().numpy()
    return out


@torch.no_grad()
def predict(model: JtsmNet, image: np.ndarray, proposals: Proposals, *, device: str | torch.device = "cpu",
            max_detections: int = 100, masks: bool = True, panoptic: bool = True) -> ImagePrediction:
    """JTSM's test outputs on one RGB uint8 image (module doc). ``masks`` / ``panoptic`` False skip them
    (the detections alone, e.g. for CorLoc on the training images)."""
    cfg, dev = model.config, torch.device(device)
    segments = SegmentBatch.from_arrays([proposals], dev)
    x = normalize_images(torch.from_numpy(np.array(image, np.uint8)).permute(2, 0, 1)[None].to(dev))

    def score(view: torch.Tensor, view_segments: SegmentBatch) -> torch.Tensor:
        return model.proposal_scores(model(view, view_segments)).float()

    scores = average_over_views(score, x, segments, scales=cfg.test_scales, flip=cfg.test_flip)
    index, classes, det_scores = nms_detections(segments.boxes, scores[:, :model.num_things],
                                                nms_threshold=cfg.nms_threshold, max_per_image=max_detections)
    boxes = segments.boxes[index].cpu().numpy()
    out = ImagePrediction(scores.cpu().numpy(), boxes, det_scores.cpu().numpy(), classes.cpu().numpy(),
                          index.cpu().numpy())
    if not (masks or panoptic):
        return out
    h, w = image.shape[:2]
    features = model.backbone(x)[-1]
    thing_masks = proposal_masks(proposals, out.det_proposals)
    if cfg.loss_instance and len(index):
        logits = model.instance_masks(features, segments.boxes[index], segments.batch_index[index])
        probabilities = torch.sigmoid(logits[torch.arange(len(index), device=dev), classes].float())
        pasted = _paste(probabilities, boxes, (h, w))
        keep = pasted.reshape(len(pasted), -1).any(1)  # an empty predicted mask keeps its proposal's
        thing_masks[keep] = pasted[keep]
    out.masks = thing_masks
    if panoptic and model.num_stuff:
        if cfg.loss_semantic:
            logits = F.interpolate(model.semantic(features).float(), size=(h, w), mode="bilinear",
                                   align_corners=False)
            stuff = logits[0].argmax(0).cpu().numpy()
        else:
            stuff = stuff_map_from_proposals(proposals, out.scores[:, model.num_things:], cfg.panoptic_score_threshold)
        out.panoptic = merge_panoptic(thing_masks, out.det_classes, out.det_scores, stuff, num_things=model.num_things,
                                      overlap=cfg.panoptic_overlap, score_threshold=cfg.panoptic_score_threshold,
                                      stuff_area_limit=cfg.stuff_area_limit)
    return out


def baseline_prediction(proposals: Proposals, labels: np.ndarray, *, num_things: int, rule: str,
                        config: JtsmConfig) -> ImagePrediction:
    """A training-free baseline on the same proposals, given the image's labels (n^c,): per present class
    the ``top``-ranked proposal (the generator's best score) or the ``largest`` one, scored by the
    generator's score; its masks and the panoptic map of those proposals (stuff painted by the same
    rule, things on top)."""
    sp, _, boxes, gen_scores = proposals
    n = len(boxes)
    if rule == "top":
        pick = 0
    elif rule == "largest":
        areas = np.bincount(sp.ravel(), minlength=int(sp.max()) + 1)
        pick = int(np.argmax([areas[m].sum() for m in proposals[1]]))
    else:
        raise ValueError(f"unknown baseline rule {rule!r} (top, largest)")
    present = np.flatnonzero(labels)
    scores = np.zeros((n, len(labels)), np.float32)
    scores[pick, present] = max(float(gen_scores[pick]), 1e-3)
    things = present[present < num_things]
    out = ImagePrediction(scores, np.repeat(np.asarray(boxes, np.float32)[pick][None], len(things), 0),
                          scores[pick, things], things, np.full(len(things), pick))
    out.masks = proposal_masks(proposals, out.det_proposals)
    if len(labels) > num_things:
        stuff = stuff_map_from_proposals(proposals, scores[:, num_things:], 1e-6)  # every present stuff class
        out.panoptic = merge_panoptic(out.masks, things, out.det_scores, stuff, num_things=num_things,
                                      overlap=config.panoptic_overlap, score_threshold=0.0,
                                      stuff_area_limit=config.stuff_area_limit)
    return out
