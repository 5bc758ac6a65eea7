"""``bench wsss`` — semantic pseudo-maps of the training images (stages ``wsss``, ``wsss-table4``,
``wsss-image``, ``wsss-pam-ablation``, ``wsss-oracle``, ``wsss-coco``).

Writes ``runs/<slot>/wsss/<name>/`` with ``train_semantic/<stem>.png`` (the maps methods train
from: semantic indices of docs/formats.md, 255 = unsure/ignore) and ``val_semantic/`` where the
mode can produce it; ``bench evaluate`` scores both (``semantic.train.mIoU``, ``semantic.mIoU``).

Variants (``wsss.method`` for the ``active`` maps methods consume; ``--variant`` for table rows):

- ``oracle`` — the ground-truth semantic maps (BESTIE Table 4's "ground truth" row);
- ``external`` — a folder of user maps (e.g. SAM or PMM outputs): ``<external_dir>/<stem>.png``
  for every training image (``<external_dir>/val/<stem>.png`` optional), validated;
- ``points-partial``, ``points-partial-lab``, ``points-partial-rgb``, ``points-all`` — a network
  trained from the point labels with Point2Mask's L_sem (Eq. 5) and the Table 4 loss switches;
- ``cam``, ``pam`` — image level: a multi-label classifier's CAMs (``pam``: with BESTIE's peak
  attention module, Sec. 3.1), maps = argmax over [``wsss.cam.bg_threshold``, CAMs], and the
  CAM peaks of the train images (BESTIE's image-level instance cues) as ``train_peaks.json`` — a
  points file (docs/formats.md) with a ``score`` per point and ``annotation_id`` null;
- ``pam-alpha-0.3``, ``pam-alpha-0.5``, ``pam-l4`` … ``pam-l4-l6`` — ``pam`` with another controller α
  or PAM after other extra convs (BESTIE Tables 7, 8: layer 4 / 5 / 6 = extra conv 1 / 2 / 3).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bench import predictions as P
from bench.commands import COMMANDS, Command, params_argument, slot_argument
from bench.io import atomic_path, read_json, write_json, write_run_record
from bench.methods import Producer, StageGroup, register
from bench.paths import canonical_dir, points_file, run_dir
from bench.registry import Registry
from bench.stages.base import declare_stage, run_stage, seed_everything
from bench.stages.run import WEIGHTS, save_weights
from bench.tracking import Run, environment_record
from datasets.canonical import CanonicalDataset, CanonicalSplit
from datasets.errors import DatasetError
from datasets.imageio import read_index_png

log = logging.getLogger(__name__)
STAGE = declare_stage("wsss", "data", "wsss")
#: Run name of the maps the methods consume (``wsss.method``).
ACTIVE = "active"


@dataclass
class WsssJob:
    """Everything a variant needs: the splits, where to write, its params and the stage's run."""

    slot: str
    dataset: CanonicalDataset
    train: CanonicalSplit
    val: CanonicalSplit
    out: Path
    params: Any  # the validated ``wsss`` section
    seed: int
    run: Run
    info: dict[str, Any] = field(default_factory=dict)  # extra run.json fields


@dataclass(frozen=True)
class Variant:
    build: Callable[[WsssJob, dict[str, Any]], None]
    options: dict[str, Any] = field(default_factory=dict)


VARIANTS: Registry[Variant] = Registry("wsss variant")


def _oracle(job: WsssJob, options: dict[str, Any]) -> None:
    shutil.copytree(job.train.root / "semantic", job.out / P.TRAIN_SEMANTIC_DIR)
    shutil.copytree(job.val.root / "semantic", job.out / P.SEMANTIC_DIR)


def _external(job: WsssJob, options: dict[str, Any]) -> None:
    if not job.params.external_dir:
        raise ValueError("wsss.method = external needs wsss.external_dir (a folder of <stem>.png maps)")
    root = Path(job.params.external_dir)
    for split, folder, target, required in ((job.train, root, P.TRAIN_SEMANTIC_DIR, True),
                                            (job.val, root / "val", P.SEMANTIC_DIR, False)):
        if not required and not folder.is_dir():
            continue
        validate_external_maps(split, folder)
        (job.out / target).mkdir()
        for image in split.images:
            shutil.copyfile(folder / f"{image.stem}.png", job.out / target / f"{image.stem}.png")


def _points(job: WsssJob, options: dict[str, Any]) -> None:
    """Train Point2Mask's semantic branch from the train points; predict train and val maps."""
    from methods.wsss.point_train import PointWsssConfig, point_label_maps, predict_semantic, train_point_wsss

    p = job.params.points
    config = PointWsssConfig(
        iterations=p.iterations, batch_size=p.batch_size, lr=p.lr, weight_decay=p.weight_decay,
        alpha_lab=p.alpha_lab, alpha_rgb=p.alpha_rgb, pairwise_warmup=p.pairwise_warmup, point_square=p.point_square,
        loss_stride=p.loss_stride,
        backbone=p.backbone, rgb_sigma=p.rgb_sigma, rgb_guide_normalized=p.rgb_guide_normalized,
        rgb_mask_numerator=p.rgb_mask_numerator, seed=job.seed, **options,
    )
    points = read_json(points_file(job.slot, job.train.name, p.point_mode))
    maps = point_label_maps(points, job.train, job.dataset)
    images = [job.train.load_image(image.id) for image in job.train.images]
    model = train_point_wsss(
        images=images, point_maps=[maps[image.id] for image in job.train.images],
        num_classes=len(job.dataset.semantic_classes), config=config,
        on_step=lambda step, losses: job.run.log_metrics({f"train.{k}": v for k, v in losses.items()}, step=step),
    )
    for split, target in ((job.train, P.TRAIN_SEMANTIC_DIR), (job.val, P.SEMANTIC_DIR)):
        (job.out / target).mkdir()
        split_images = images if split is job.train else [split.load_image(i.id) for i in split.images]
        for image, semantic in zip(split.images, predict_semantic(model, split_images, batch_size=p.batch_size)):
            P.write_semantic_png(job.out / target / f"{image.stem}.png", semantic)
    job.info["config"] = config.to_dict()
    save_weights(job.out / WEIGHTS, model, job.info["config"])


def image_label_matrix(split: CanonicalSplit, thing_ids: list[int]) -> np.ndarray:
    """(N, K) 0/1 image-level labels of a split over the thing classes, in image order.

    From the canonical ``image_labels.json`` (categories of the non-crowd segments with pixels);
    stuff categories are dropped: the cam / pam classifier is defined over thing classes, with
    background = everything else (BESTIE on VOC: 20 classes, no background channel).
    """
    column = {c: k for k, c in enumerate(thing_ids)}
    labels = np.zeros((len(split.images), len(thing_ids)), np.float32)
    by_image = split.image_labels
    for row, image in enumerate(split.images):
        for cat in by_image[image.id]:
            if cat in column:
                labels[row, column[cat]] = 1.0
    return labels


def background_index(dataset: CanonicalDataset) -> int:
    """Value of the cam / pam maps on non-thing pixels: the one stuff class's semantic index (VOC:
    0 = background), or 255 (ignore) when the dataset has several stuff classes (COCO panoptic):
    a thing classifier cannot tell sky from grass, so those pixels are left unlabelled."""
    stuff = dataset.stuff_ids
    return dataset.semantic_index(stuff[0]) if len(stuff) == 1 else 255


def peak_point_records(split: CanonicalSplit, peaks: dict[int, list[Any]],
                       thing_ids: list[int]) -> list[dict[str, Any]]:
    """Points-file records (docs/formats.md) for the peaks of each image: ``annotation_id`` null (a
    peak names no GT instance), ``point_index`` 0 (each peak stands for one presumed instance),
    ``isthing`` 1, plus ``score`` (the normalised, flip-averaged CAM value at the peak)."""
    records: list[dict[str, Any]] = []
    for image in split.images:
        for peak in peaks.get(image.id, []):
            records.append({"id": len(records) + 1, "image_id": image.id, "annotation_id": None, "point_index": 0,
                            "category_id": thing_ids[peak.cls], "isthing": 1, "x": int(peak.x), "y": int(peak.y),
                            "score": round(float(peak.score), 6)})
    return records


def peak_quality(split: CanonicalSplit, records: list[dict[str, Any]]) -> dict[str, float]:
    """How good the peaks are as instance cues, against the train split's GT instances.

    ``n_peaks``; ``precision`` = fraction of peaks on a pixel of a non-crowd GT instance of the
    peak's class; ``recall`` = fraction of non-crowd GT instances holding >= 1 such peak;
    ``duplicates`` = instances holding >= 2 (BESTIE wants one cue per instance); ``peaks_per_image``.
    Precision and recall are NaN-free: 0 when there is no peak / no instance.
    """
    by_image: dict[int, list[dict[str, Any]]] = {}
    for r in records:
        by_image.setdefault(r["image_id"], []).append(r)
    n_instances = hits = found = duplicates = 0
    for image in split.images:
        masks = [(ann["category_id"], m) for ann, m in split.instance_masks(image.id) if not ann.get("iscrowd", 0)]
        n_instances += len(masks)
        per_instance = [0] * len(masks)
        for r in by_image.get(image.id, []):
            inside = [k for k, (cat, m) in enumerate(masks) if cat == r["category_id"] and m[r["y"], r["x"]]]
            hits += bool(inside)
            for k in inside:
                per_instance[k] += 1
        found += sum(c > 0 for c in per_instance)
        duplicates += sum(c > 1 for c in per_instance)
    n = len(records)
    return {"n_peaks": n, "peaks_per_image": n / max(len(split.images), 1), "precision": hits / n if n else 0.0,
            "recall": found / n_instances if n_instances else 0.0, "duplicates": duplicates,
            "gt_instances": n_instances}


def _cam(job: WsssJob, options: dict[str, Any]) -> None:
    """Train the CAM / PAM classifier on the train image labels; write train / val maps and the train peaks."""
    from methods.wsss.cam import CamConfig, cam_peaks, iter_cams, semantic_from_cam, train_cam

    p = job.params.cam
    config = CamConfig(**{
        "pam_alpha": p.pam_alpha, "pam_layers": tuple(p.pam_layers), "backbone": p.backbone,
        "feature_index": p.feature_index, "output_stride": p.output_stride, "extra_convs": p.extra_convs,
        "extra_channels": p.extra_channels, "input_size": p.input_size, "iterations": p.iterations,
        "batch_size": p.batch_size, "optimizer": p.optimizer, "lr": p.lr, "weight_decay": p.weight_decay,
        "seed": job.seed, **options})  # a variant's options override the params (BESTIE Tables 7, 8)
    thing_ids = list(job.dataset.thing_ids)
    if not thing_ids:
        raise ValueError(f"{job.dataset.root}: the cam / pam modes need thing classes; the dataset has none")
    channel_index = [job.dataset.semantic_index(c) for c in thing_ids]
    background = background_index(job.dataset)
    train_labels = image_label_matrix(job.train, thing_ids)
    images = [job.train.load_image(image.id) for image in job.train.images]
    log_step = (lambda step, losses: job.run.log_metrics({f"train.{k}": v for k, v in losses.items()}, step=step)) \
        if job.run is not None else None
    start = time.perf_counter()
    model = train_cam(images=images, labels=train_labels, config=config, on_step=log_step)
    train_seconds = time.perf_counter() - start
    peaks: dict[int, list[Any]] = {}
    for split, target in ((job.train, P.TRAIN_SEMANTIC_DIR), (job.val, P.SEMANTIC_DIR)):
        (job.out / target).mkdir()
        is_train = split is job.train
        split_images = images if is_train else [split.load_image(i.id) for i in split.images]
        labels = train_labels if is_train else (
            image_label_matrix(split, thing_ids) if p.val_labels == "ground-truth" else None)
        results = iter_cams(model, split_images, labels, input_size=config.input_size, batch_size=p.batch_size)
        for result in tqdm(results, total=len(split_images), desc=f"{'pam' if config.use_pam else 'cam'} {split.name}",
                           unit="img", leave=False):
            image = split.images[result.index]
            semantic = semantic_from_cam(result.cam, channel_index, bg_threshold=p.bg_threshold,
                                         background_index=background, unsure_margin=p.unsure_margin)
            P.write_semantic_png(job.out / target / f"{image.stem}.png", semantic)
            if is_train:
                peaks[image.id] = cam_peaks(result.cam, result.labels, kernel=p.peak_kernel, top_k=p.peak_top_k,
                                            threshold=p.peak_threshold, smooth_kernel=p.smooth_kernel)
    records = peak_point_records(job.train, peaks, thing_ids)
    mode = "pam" if config.use_pam else "cam"
    info = {"dataset": job.dataset.name, "split": job.train.name, "mode": f"{mode}-peaks", "seed": job.seed,
            "points_per_target": 1, "source": f"wsss {mode}", "peak_kernel": p.peak_kernel, "peak_top_k": p.peak_top_k,
            "peak_threshold": p.peak_threshold, "smooth_kernel": p.smooth_kernel}
    write_json(job.out / P.TRAIN_PEAKS, {"info": info, "categories": job.dataset.meta["categories"],
                                         "points": records}, indent=None)
    quality = peak_quality(job.train, records)
    if job.run is not None:
        job.run.log_metrics({f"peaks.{k}": v for k, v in quality.items()})
    save_weights(job.out / WEIGHTS, model, config.to_dict())
    job.info.update({"config": config.to_dict(), "peaks": quality, "background_index": background,
                     "val_labels": p.val_labels, "timing": {"train_seconds": round(train_seconds, 1)}})


VARIANTS.add("oracle", Variant(_oracle))
VARIANTS.add("external", Variant(_external))
VARIANTS.add("points-partial", Variant(_points, {"use_lab": False, "use_rgb": False}))
VARIANTS.add("points-partial-lab", Variant(_points, {"use_lab": True, "use_rgb": False}))
VARIANTS.add("points-partial-rgb", Variant(_points, {"use_lab": False, "use_rgb": True}))
VARIANTS.add("points-all", Variant(_points, {"use_lab": True, "use_rgb": True}))
VARIANTS.add("cam", Variant(_cam, {"use_pam": False}))
VARIANTS.add("pam", Variant(_cam, {"use_pam": True}))
# BESTIE Table 7 (the PAM controller α) and Table 8 (PAM after other layers: Table 8's layer 4 / 5 / 6
# = extra conv 1 / 2 / 3 of the release's 3, so pam-l4-l6 puts PAM after extra convs 1 and 3; the
# classifier must have wsss.cam.extra_convs = 3): peaks for the bestie variants of the same name
for _alpha in (0.3, 0.5):
    VARIANTS.add(f"pam-alpha-{_alpha}", Variant(_cam, {"use_pam": True, "pam_alpha": _alpha}))
for _layers in ("l4", "l5", "l4-l5", "l5-l6", "l4-l5-l6", "l4-l6"):
    VARIANTS.add(f"pam-{_layers}", Variant(_cam, {"use_pam": True,
                                                   "pam_layers": tuple(int(t[1:]) - 3 for t in _layers.split("-"))}))


def validate_external_maps(split: CanonicalSplit, folder: Path) -> None:
    """Every image of ``split`` has ``folder/<stem>.png``: its size, semantic indices or 255; no extras."""
    if not folder.is_dir():
        raise DatasetError("external WSSS folder does not exist", path=folder)
    expected = {f"{image.stem}.png" for image in split.images}
    present = {p.name for p in folder.glob("*.png")}
    missing, extra = sorted(expected - present), sorted(present - expected)
    if missing:
        raise DatasetError(f"{len(missing)} of {len(expected)} {split.name} images have no map, e.g. {missing[:3]}",
                           path=folder)
    if extra:
        raise DatasetError(f"{len(extra)} maps match no {split.name} image, e.g. {extra[:3]}", path=folder)
    n_classes = len(split.dataset.semantic_classes)
    for image in tqdm(split.images, desc=f"check {folder.name or 'maps'}", unit="img", leave=False):
        path = folder / f"{image.stem}.png"
        semantic = read_index_png(path, record=f"image {image.id}")
        if semantic.shape != (image.height, image.width):
            raise DatasetError(f"map is {semantic.shape[1]}x{semantic.shape[0]} (WxH), image is "
                               f"{image.width}x{image.height}", path=path, record=f"image {image.id}")
        bad = np.unique(semantic[(semantic >= n_classes) & (semantic != 255)])
        if bad.size:
            raise DatasetError(f"values {bad.tolist()} are neither semantic indices 0..{n_classes - 1} nor 255",
                               path=path, record=f"image {image.id}")


def _configure(parser: argparse.ArgumentParser) -> None:
    slot_argument(parser)
    parser.add_argument("--variant", choices=list(VARIANTS),
                        help=f"a table row's variant, written to runs/<slot>/wsss/<variant>/seed<k>; "
                             f"default: wsss.method, written to runs/<slot>/wsss/{ACTIVE}")
    parser.add_argument("--seed", type=int, default=0, help="training seed of the learned variants")
    params_argument(parser)


def _handle(args: argparse.Namespace) -> int:
    with run_stage(STAGE, params_path=Path(args.params), method="wsss", variant=args.variant or ACTIVE,
                   dataset=args.dataset) as ctx:
        p = ctx.params.wsss
        name = args.variant or p.method
        variant = VARIANTS.get(name)
        out_dir = run_dir(args.dataset, "wsss", ACTIVE) if args.variant is None else \
            run_dir(args.dataset, "wsss", args.variant) / f"seed{args.seed}"
        seed_everything(args.seed)
        from methods.runtime import cap_cpu_threads

        cpu_threads = cap_cpu_threads()
        slot = getattr(ctx.params.data, args.dataset)
        dataset = CanonicalDataset(canonical_dir(args.dataset))
        with atomic_path(out_dir, directory=True) as out:
            job = WsssJob(args.dataset, dataset, dataset.split(slot.train_split), dataset.split(slot.val_split),
                          out, p, args.seed, ctx.run)
            variant.build(job, variant.options)
            write_run_record(out / P.RUN_INFO, {
                "method": "wsss", "variant": name, "dataset": args.dataset, "seed": args.seed,
                "train_split": slot.train_split, "val_split": slot.val_split, "profile": ctx.profile,
                "cpu_threads": cpu_threads, **environment_record(), **job.info})
            ctx.run.log_metrics({f"timing.{k}": v for k, v in job.info.get("timing", {}).items()})
        log.info("%s: wsss %s maps written to %s", args.dataset, name, out_dir)
    return 0


_CODE = ("methods/wsss", "methods/backbones.py")
_GROUPS = []
for _slot in ("voc", "coco"):
    _GROUPS.append(StageGroup(f"wsss-active-{_slot}", _slot, (), args="", row=ACTIVE, per_seed=False,
                              deps=(f"data/points/{_slot}",), outs=(f"runs/{_slot}/wsss/{ACTIVE}",)))
PRODUCER = register(Producer(
    name="wsss", title="WSSS", sections=("wsss",), code=_CODE,
    variants={name: f"{v.build.__name__.strip('_')} maps {v.options or ''}".strip() for name, v in VARIANTS.items()},
    groups=(
        *_GROUPS,
        StageGroup("wsss-table4", "voc", ("points-partial", "points-partial-lab", "points-partial-rgb", "points-all"),
                   deps=("data/points/voc",)),
        StageGroup("wsss-image", "voc", ("cam", "pam")),
        StageGroup("wsss-pam-ablation", "voc", tuple(n for n in VARIANTS if n.startswith("pam-")), per_seed=False),
        StageGroup("wsss-oracle", "voc", ("oracle",), per_seed=False),
        StageGroup("wsss-coco", "coco", ("points-partial", "cam", "pam"), deps=("data/points/coco",)),
    )), __name__)
COMMANDS.add("wsss", Command("semantic pseudo-maps of the training images (oracle, external, points-*, cam, pam)",
                             _configure, _handle))
