"""Fine-tuning a fully supervised instance segmentor on train labels and predicting val: the jobs, the
architectures (Mask R-CNN, SOLOv2) and the backends (torchvision's engine, detectron2) that ``bench segment``
(and the segmentor benchmark) run. Backends and architectures are registries (``segmentor.backend`` /
``segmentor.arch``)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from bench import predictions as P
from bench.config.schema import SegmentorParams
from bench.io import write_json
from bench.paths import backbone_checkpoint, run_dir
from bench.registry import Registry
from bench.tracking import Run
from datasets.canonical import CanonicalDataset, CanonicalSplit

if TYPE_CHECKING:  # torch is imported only when the stage runs, not by every `bench` command
    from methods.segmentor.labels import CategoryMap, TrainingLabels

log = logging.getLogger(__name__)
GROUND_TRUTH = "ground-truth"
MODEL_FILE = "model.pt"


@dataclass
class SegmentJob:
    """Everything a backend needs: the splits, the labels, the params, where to write."""

    slot: str
    dataset: CanonicalDataset
    train: CanonicalSplit
    val: CanonicalSplit
    labels: TrainingLabels
    categories: CategoryMap
    params: SegmentorParams
    seed: int
    out: Path  # the run folder being written (temporary until the stage succeeds)
    checkpoint_dir: Path  # survives an interruption; removed on success
    fingerprint: str
    run: Run | None
    info: dict[str, Any] = field(default_factory=dict)  # extra run.json fields


# --------------------------------------------------------------------------- architectures
@dataclass(frozen=True)
class Arch:
    """Builds a torchvision-convention detection model for a job (imports lazily)."""

    build: Callable[[SegmentJob], Any]
    extra_pool: bool  # the backbone's "pool" level (Mask R-CNN's RPN uses it)


ARCHS: Registry[Arch] = Registry("segmentor arch")


def backbone_weights(job: SegmentJob) -> str | None:
    """The checkpoint ``segmentor.backbone_init`` names for the job's slot and backbone (None: random weights)."""
    return backbone_checkpoint(job.slot, job.params.backbone_init, job.params.backbone)


def _backbone(job: SegmentJob, extra_pool: bool) -> Any:
    from methods.segmentor.backbone import TimmFPN

    p = job.params
    return TimmFPN(p.backbone, out_channels=p.fpn_channels, extra_pool=extra_pool, weights=backbone_weights(job))


def _mask_rcnn(job: SegmentJob) -> Any:
    from methods.segmentor.mask_rcnn import MaskRCNNOptions, build_mask_rcnn

    p, m = job.params, job.params.mask_rcnn
    options = MaskRCNNOptions(
        anchor_sizes=tuple(m.anchor_sizes), aspect_ratios=tuple(m.aspect_ratios),
        rpn_pre_nms_top_n_train=m.rpn_pre_nms_top_n_train, rpn_post_nms_top_n_train=m.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=m.rpn_pre_nms_top_n_test, rpn_post_nms_top_n_test=m.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=m.rpn_batch_size_per_image, box_batch_size_per_image=m.box_batch_size_per_image,
        representation_size=m.representation_size, mask_head_layers=m.mask_head_layers,
        box_score_thresh=p.score_threshold, box_nms_thresh=m.box_nms_thresh, detections_per_img=p.detections_per_image,
    )
    return build_mask_rcnn(job.categories.num_classes, _backbone(job, True), min_size=tuple(p.min_size),
                           max_size=p.max_size, options=options)


def _solov2(job: SegmentJob) -> Any:
    from methods.segmentor.solov2 import SOLOv2  # written separately; imported only when selected

    p = job.params
    options = {"max_per_img": p.detections_per_image, "mask_thr": p.mask_threshold, **p.solov2}
    return SOLOv2(job.categories.num_classes, _backbone(job, False), min_size=tuple(p.min_size),
                  max_size=p.max_size, **options)


ARCHS.add("mask_rcnn", Arch(_mask_rcnn, extra_pool=True))
ARCHS.add("solov2", Arch(_solov2, extra_pool=False))


# ------------------------------------------------------------------------------- backends
@dataclass(frozen=True)
class Backend:
    """``check(params)`` runs before any work (raises with the fix); ``run(job)`` trains and predicts."""

    check: Callable[[SegmentorParams], None]
    run: Callable[[SegmentJob], None]


BACKENDS: Registry[Backend] = Registry("segmentor backend")


def schedule(p: SegmentorParams, num_images: int) -> tuple[int, tuple[int, ...]]:
    """Iterations and LR-step iterations; an epoch budget is ``ceil(num_images / batch_size)`` steps per epoch."""
    if p.epochs is None:
        return int(p.iterations), tuple(int(s) for s in p.lr_steps)
    per_epoch = -(-num_images // p.batch_size)
    return max(1, round(p.epochs * per_epoch)), tuple(round(s * per_epoch) for s in p.lr_steps)


def _write_predictions(job: SegmentJob, predictions: Any) -> int:
    """``val_instances.json`` from ``(image_id, masks, category_ids, scores)`` tuples; returns the count."""
    records: list[dict[str, Any]] = []
    for image_id, masks, category_ids, scores in predictions:
        records += P.instance_records(image_id, list(masks), [int(c) for c in category_ids], [float(s) for s in scores])
    write_json(job.out / P.INSTANCES, records, indent=None)
    return len(records)


def _torchvision_run(job: SegmentJob) -> None:
    import torch

    from methods.segmentor.engine import EngineConfig, predict, train
    from methods.segmentor.labels import DetectionDataset

    p = job.params
    sizes = {im.id: (im.height, im.width) for im in job.train.images}
    data = DetectionDataset(job.labels, sizes, job.train.load_image, job.categories)
    iterations, steps = schedule(p, len(data))
    config = EngineConfig(
        iterations=iterations, batch_size=p.batch_size, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay,
        warmup_iters=p.warmup_iters, warmup_factor=p.warmup_factor, lr_steps=steps, lr_gamma=p.lr_gamma,
        hflip=p.hflip, checkpoint_every=p.checkpoint_every, seed=job.seed, amp=p.amp,
    )
    torch.manual_seed(job.seed)
    model = ARCHS.get(p.arch).build(job)
    log.info("%s %s/%s: %d training images (%d without instances skipped), %d iterations of %d",
             job.slot, p.arch, p.backbone, len(data), data.skipped_images, iterations, p.batch_size)

    def on_step(step: int, values: dict[str, float]) -> None:
        if job.run is not None:
            job.run.log_metrics({f"train.{k}": v for k, v in values.items()}, step=step)

    result = train(model, data, config, checkpoint_dir=job.checkpoint_dir, fingerprint=job.fingerprint,
                   on_step=on_step)
    torch.save({"model": model.state_dict(), "arch": p.arch, "num_classes": job.categories.num_classes,
                "category_ids": job.categories.category_ids, "segmentor": p.model_dump(mode="json")},
               job.out / MODEL_FILE)
    images = (job.val.load_image(im.id) for im in tqdm(job.val.images, desc="predict val", unit="img", leave=False))
    predictions = predict(model, images, batch_size=p.batch_size, mask_threshold=p.mask_threshold,
                          max_detections=p.detections_per_image, amp=p.amp)
    n = _write_predictions(job, ((im.id, pr.masks, [job.categories.category(int(lab)) for lab in pr.labels], pr.scores)
                                 for im, pr in zip(job.val.images, predictions)))
    job.info["training"] = {"iterations": iterations, "lr_steps": list(steps), "resumed_from": result.resumed_from,
                            "train_images": len(data), "skipped_images": data.skipped_images,
                            "last_losses": result.last_losses}
    job.info["timing"] = {"train_seconds": round(result.seconds, 2),
                          "images_per_second": round(result.images_per_second, 3)}
    job.info["predictions"] = n


def _check_nothing(params: SegmentorParams) -> None:
    return None


def _detectron2_check(params: SegmentorParams) -> None:
    from methods.segmentor.detectron2_backend import require_detectron2, resnet_depth

    require_detectron2()
    resnet_depth(params.backbone)


def _detectron2_run(job: SegmentJob) -> None:
    import torch

    from methods.segmentor import detectron2_backend as d2

    p, m = job.params, job.params.mask_rcnn
    images = [{"id": im.id, "file_name": im.file_name, "height": im.height, "width": im.width}
              for im in job.train.images]
    instances = {iid: [(i.category_id, i.rle, i.weight) for i in v] for iid, v in job.labels.by_image.items()}
    categories = [{"id": c.id, "name": c.name} for c in job.dataset.categories if c.isthing]
    job.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    train_json = job.checkpoint_dir / "train_instances.json"
    data = d2.coco_instances_json(images, instances, categories)
    write_json(train_json, data, indent=None)
    n_images = len({a["image_id"] for a in data["annotations"]})
    iterations, steps = schedule(p, n_images)
    settings = d2.Detectron2Settings(
        config_name=p.detectron2_config, depth=d2.resnet_depth(p.backbone), fpn_channels=p.fpn_channels,
        anchor_sizes=tuple(m.anchor_sizes), aspect_ratios=tuple(m.aspect_ratios),
        rpn_pre_nms_top_n_train=m.rpn_pre_nms_top_n_train, rpn_post_nms_top_n_train=m.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=m.rpn_pre_nms_top_n_test, rpn_post_nms_top_n_test=m.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=m.rpn_batch_size_per_image, box_batch_size_per_image=m.box_batch_size_per_image,
        representation_size=m.representation_size, mask_head_layers=m.mask_head_layers,
        box_nms_thresh=m.box_nms_thresh, ims_per_batch=p.batch_size, base_lr=p.lr, momentum=p.momentum,
        weight_decay=p.weight_decay, max_iter=iterations, steps=steps, gamma=p.lr_gamma,
        warmup_iters=p.warmup_iters, warmup_factor=p.warmup_factor,
        checkpoint_period=p.checkpoint_every or iterations, min_size_train=tuple(p.min_size), max_size=p.max_size,
        hflip=p.hflip, mask_threshold=p.mask_threshold, detections_per_image=p.detections_per_image,
        score_threshold=p.score_threshold, seed=job.seed, amp=p.amp,
    )

    def on_step(step: int, values: dict[str, float]) -> None:
        if job.run is not None:
            job.run.log_metrics({f"train.{k}": v for k, v in values.items()}, step=step)

    result = d2.train(settings, train_json=train_json, image_root=job.train.root / "images",
                      num_classes=len(categories), output_dir=job.checkpoint_dir / "detectron2",
                      fingerprint=job.fingerprint, backbone_weights=backbone_weights(job), on_step=on_step)
    torch.save({"model": result.model.state_dict(), "arch": p.arch, "backend": "detectron2",
                "num_classes": len(categories), "category_ids": [c["id"] for c in categories],
                "segmentor": p.model_dump(mode="json"), "config": result.cfg.dump()}, job.out / MODEL_FILE)
    val = ((im.id, job.val.load_image(im.id))
           for im in tqdm(job.val.images, desc="predict val", unit="img", leave=False))
    job.info["predictions"] = _write_predictions(job, d2.predict(
        result.model, result.cfg, val, [c["id"] for c in categories], mask_threshold=p.mask_threshold,
        max_detections=p.detections_per_image, batch_size=p.batch_size))
    weighted = sum(1 for v in job.labels.by_image.values() for i in v if i.weight != 1.0)
    run_steps = result.iterations - result.resumed_from
    job.info["training"] = {"iterations": iterations, "lr_steps": list(steps), "resumed_from": result.resumed_from,
                            "train_images": n_images, "skipped_images": len(images) - n_images,
                            "last_losses": result.last_losses, "backend": "detectron2",
                            "detectron2": {"config": p.detectron2_config, "resnet_depth": settings.depth,
                                           "workers": settings.workers, "not_mapped": d2.NOT_MAPPED,
                                           "weights_ignored": weighted}}
    job.info["timing"] = {"train_seconds": round(result.seconds, 2)}
    if run_steps and result.seconds > 0:
        job.info["timing"].update(images_per_second=round(run_steps * p.batch_size / result.seconds, 3),
                                  seconds_per_step=round(result.seconds / run_steps, 4))


BACKENDS.add("torchvision", Backend(_check_nothing, _torchvision_run))
BACKENDS.add("detectron2", Backend(_detectron2_check, _detectron2_run))


# ------------------------------------------------------------------------------ the stage
def resolve_labels(slot: str, labels: str, seed: int) -> Path | None:
    """The pseudo-label file ``--labels`` names: ``None`` for ground truth; ``METHOD/VARIANT`` →
    ``runs/<slot>/METHOD/VARIANT/seed<seed>/train_pseudo.json`` (or without ``seed<seed>``); else a path."""
    if labels == GROUND_TRUTH:
        return None
    if labels.endswith(".json") or Path(labels).is_file():
        return Path(labels)
    method, sep, variant = labels.partition("/")
    if not sep or not method or not variant or "/" in variant:
        raise ValueError(f"--labels {labels!r}: expected {GROUND_TRUTH}, METHOD/VARIANT or a .json file")
    tried = [run_dir(slot, method, variant) / f"seed{seed}" / P.PSEUDO, run_dir(slot, method, variant) / P.PSEUDO]
    for path in tried:
        if path.is_file():
            return path
    raise FileNotFoundError(f"--labels {labels}: no pseudo labels at {' or '.join(map(str, tried))}; "
                            f"run that method's stage first")


def job_fingerprint(params: SegmentorParams, seed: int, label_file: Path, dataset: CanonicalDataset) -> str:
    """What a resumable checkpoint must match: resolved params, seed, label bytes, dataset name."""
    h = hashlib.sha256()
    h.update(json.dumps({"segmentor": params.model_dump(mode="json"), "seed": seed, "dataset": dataset.name},
                        sort_keys=True).encode())
    h.update(label_file.read_bytes())
    return h.hexdigest()


