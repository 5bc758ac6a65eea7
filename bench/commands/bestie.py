"""``bench bestie`` — BESTIE (paper 002) in the point and image-label settings (stage ``bestie``).

Writes ``runs/<slot>/bestie/<variant>/seed<k>/``: ``val_instances.json`` (inference on val),
``train_pseudo.json`` (the labels the trained network exports for the training images,
``bestie.export``: by default its inference with the image's own weak labels — one record per point
with ``point_annotation_id`` in the point setting, ``null`` in the image setting — or the final
refined labels), ``train_pseudo_steps/`` (the self-refinement's labels at ``bestie.pseudo_curve_points``
training steps, for Fig. 6; listed in ``run.json`` as ``pseudo_curve``) and ``run.json``.

Inputs: the WSSS maps of a wsss run (``<run>/train_semantic/<stem>.png``; ``--wsss``, default per
variant), the instance cues — GT points (``data/points/<slot>/<split>_<bestie.point_mode>.json``)
or PAM peaks (``<wsss run>/train_peaks.json``: the points format plus ``score``; ``--peaks``).

Variants (table rows; one code path, options only — see :data:`VARIANTS` and docs/bestie.md):
``points``, ``image``, ``wsss-gt``, ``wsss-singlestage``, ``wsss-rrm`` (T1, T2, T4), ``abl-*`` (T3, T6),
``iter-1``, ``iter-2`` (T5, offline re-training rounds), ``pam-alpha-*`` (T7), ``pam-off`` and
``pam-l*`` (T8), ``points-val-clean`` (the ``points`` network inferred with the release's
``--val_clean``), ``points-class-score`` (its val masks scored by the mean class probability) and the training-free ``transfer-only`` baseline (the WSSS components with exactly
one point, on train and val, no network).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bench import predictions as P
from bench.commands import COMMANDS, Command, params_argument, slot_argument
from bench.config.loader import flatten
from bench.io import atomic_path, read_json, write_json, write_run_record
from bench.paths import backbone_checkpoint, canonical_dir, points_file, run_dir
from bench.registry import Registry
from bench.stages.base import StageInfo, declare_stage, run_stage, seed_everything
from datasets.canonical import CanonicalDataset, CanonicalSplit
from datasets.errors import DatasetError
from datasets.imageio import read_index_png

log = logging.getLogger(__name__)
STAGE = declare_stage("bestie", "data", "bestie")
#: The peaks file a wsss ``pam`` / ``cam`` run writes next to its maps.
PEAKS = P.TRAIN_PEAKS
#: Train pseudo labels at training checkpoints (``step<N>.json``, the format of train_pseudo.json).
PSEUDO_STEPS_DIR = "train_pseudo_steps"


@dataclass(frozen=True)
class Variant:
    """A table row: supervision, default wsss run (maps) and peaks run, config overrides, rounds."""

    supervision: str  # "points" | "image" | "transfer" (no training)
    wsss: str = "points-partial/seed{seed}"  # {seed} = the run's seed
    peaks: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    rounds: int = 0  # offline re-training rounds after the first training (Table 5)
    rows: str = ""


VARIANTS: Registry[Variant] = Registry("bestie variant")
#: Image setting: CAM maps as the WSSS (the stand-in for PMM, Table 4 mIoU from wsss/cam), PAM peaks as cues.
_IMAGE = dict(supervision="image", wsss="cam/seed0", peaks="pam/seed0")
VARIANTS.add("points", Variant("points", rows="T1/T2 point rows (and p2seg bestie† via the segmentor)"))
VARIANTS.add("transfer-only", Variant("transfer", rows="training-free baseline: WSSS components with one point"))
VARIANTS.add("points-val-clean", Variant("points", options={"val_clean": True},
                                         rows="the point setting inferred with the val points (release --val_clean): "
                                              "like for like with transfer-only"))
VARIANTS.add("points-class-score", Variant("points", options={"score": "class"},
                                           rows="the points network's val masks scored by the mean class probability "
                                                "alone (bestie.score: class), beside transfer-only"))
VARIANTS.add("image", Variant(**_IMAGE, rows="T1/T2 image rows; T3 full; T4 PMM stand-in; T5 iters=0; T6; T7 α=0.7; T8"))
VARIANTS.add("wsss-gt", Variant(**{**_IMAGE, "wsss": "oracle/seed0"}, rows="T4 ground truth"))
VARIANTS.add("wsss-singlestage", Variant(**{**_IMAGE, "wsss": "singlestage"}, rows="T4 SingleStage (external maps)"))
VARIANTS.add("wsss-rrm", Variant(**{**_IMAGE, "wsss": "rrm"}, rows="T4 RRM (external maps)"))
_NO_IAG_REFINE_CLUSTER = {"iag": False, "refine": False, "cluster": None}
VARIANTS.add("abl-cam", Variant(**{**_IMAGE, "peaks": "cam/seed0"}, options=_NO_IAG_REFINE_CLUSTER, rows="T3 row 1"))
VARIANTS.add("abl-pam", Variant(**_IMAGE, options=_NO_IAG_REFINE_CLUSTER, rows="T3 row 2, T6 row 1"))
VARIANTS.add("abl-pam-iag", Variant(**_IMAGE, options={"refine": False, "cluster": None}, rows="T3 row 3, T6 row 2"))
VARIANTS.add("abl-pam-iag-refine", Variant(**_IMAGE, options={"cluster": None}, rows="T3 row 4"))
VARIANTS.add("abl-pam-refine", Variant(**_IMAGE, options={"iag": False}, rows="T6 row 4"))
VARIANTS.add("iter-1", Variant(**_IMAGE, rounds=1, rows="T5 iters=1"))
VARIANTS.add("iter-2", Variant(**_IMAGE, rounds=2, rows="T5 iters=2"))
# T7 / T8: the image setting with the peaks of the wsss run of the same name (PAM α, PAM layers)
for _alpha in ("0.3", "0.5"):
    VARIANTS.add(f"pam-alpha-{_alpha}", Variant(**{**_IMAGE, "peaks": f"pam-alpha-{_alpha}/seed0"}, rows="T7"))
VARIANTS.add("pam-off", Variant(**{**_IMAGE, "peaks": "cam/seed0"}, rows="T8 no PAM"))
for _layers in ("l4", "l5", "l4-l5", "l5-l6", "l4-l5-l6", "l4-l6"):
    VARIANTS.add(f"pam-{_layers}", Variant(**{**_IMAGE, "peaks": f"pam-{_layers}/seed0"}, rows="T8"))


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def resolve_wsss_run(slot: str, spec: str) -> Path:
    """A wsss run folder: an existing directory path, else ``runs/<slot>/wsss/<spec>``."""
    path = Path(spec)
    if path.is_dir() and (path / P.TRAIN_SEMANTIC_DIR).is_dir():
        return path
    path = run_dir(slot, "wsss", spec)
    if not (path / P.TRAIN_SEMANTIC_DIR).is_dir():
        raise FileNotFoundError(f"wsss run {spec!r}: {path / P.TRAIN_SEMANTIC_DIR} does not exist; "
                                f"run `bench wsss --dataset {slot} --variant ...` or pass --wsss <run folder>")
    return path


def resolve_peaks(slot: str, spec: str) -> Path:
    """A peaks JSON: a file path, else ``runs/<slot>/wsss/<spec>/train_peaks.json``."""
    path = Path(spec)
    if path.is_file():
        return path
    path = run_dir(slot, "wsss", spec) / PEAKS
    if not path.is_file():
        raise FileNotFoundError(f"peaks {spec!r}: {path} does not exist (written by the wsss pam/cam variants); "
                                f"pass --peaks <file>")
    return path


@dataclass
class Cues:
    """Instance cues of one image: (y, x), semantic index, GT annotation id (None for peaks)."""

    yx: np.ndarray
    classes: np.ndarray
    annotation_ids: list[int | None]


def load_cues(path: Path, split: CanonicalSplit, dataset: CanonicalDataset) -> dict[int, Cues]:
    """Thing cues per image from a points file (or a peaks file: the same records plus ``score``).

    A cue on an unknown image, outside its image or of an unknown / stuff category stops with a
    message naming the file and record."""
    data = read_json(path)
    records = data["points"] if isinstance(data, dict) else data
    by_image: dict[int, list[tuple[int, int, int, int | None]]] = defaultdict(list)
    for k, p in enumerate(records):
        where = f"record {k} (id {p.get('id')})"
        image_id = int(p["image_id"])
        try:
            info = split.image(image_id)
        except DatasetError:
            raise DatasetError(f"image {image_id} is not in split {split.name!r}", path=path, record=where) from None
        cat = int(p["category_id"])
        if cat not in dataset.category_by_id:
            raise DatasetError(f"unknown category {cat}", path=path, record=where)
        if not dataset.category_by_id[cat].isthing:
            continue
        x, y = int(p["x"]), int(p["y"])
        if not (0 <= x < info.width and 0 <= y < info.height):
            raise DatasetError(f"point ({x}, {y}) outside the {info.width}x{info.height} image", path=path, record=where)
        aid = p.get("annotation_id")
        by_image[image_id].append((y, x, dataset.semantic_index(cat), None if aid is None else int(aid)))
    out = {}
    for image in split.images:
        rows = by_image.get(image.id, [])
        out[image.id] = Cues(np.array([(r[0], r[1]) for r in rows], dtype=np.int64).reshape(-1, 2),
                             np.array([r[2] for r in rows], dtype=np.int64), [r[3] for r in rows])
    return out


def load_semantic_maps(folder: Path, split: CanonicalSplit) -> dict[int, np.ndarray]:
    maps = {}
    for image in split.images:
        path = folder / f"{image.stem}.png"
        if not path.is_file():
            raise DatasetError("WSSS map is missing", path=path, record=f"image {image.id}")
        m = read_index_png(path, record=f"image {image.id}")
        if m.shape != (image.height, image.width):
            raise DatasetError(f"map is {m.shape}, image {image.height}x{image.width}", path=path)
        maps[image.id] = m
    return maps


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


def make_config(p: Any, supervision: str, seed: int, options: dict[str, Any], *, slot: str = "voc") -> Any:
    """The validated ``bestie`` section → :class:`methods.bestie.train.BestieConfig` (+ variant options);
    ``slot`` locates the backbone checkpoint ``backbone_init`` names (:func:`bench.paths.backbone_checkpoint`)."""
    from methods.bestie import ClusterConfig, LossWeights
    from methods.bestie.train import BestieConfig

    cluster = ClusterConfig(magnitude_threshold=p.cluster_magnitude, area=p.cluster_area, epsilon=p.cluster_epsilon,
                            inclusive=p.cluster_bounds == "inclusive", min_distance=p.cluster_min_distance,
                            min_center=p.cluster_min_center)
    config = BestieConfig(
        supervision=supervision, backbone=p.backbone,
        backbone_weights=backbone_checkpoint(slot, p.backbone_init, p.backbone),
        out_indices=tuple(p.out_indices), decoder=p.decoder,
        decoder_channels=p.decoder_channels, head_channels=p.head_channels, iterations=p.iterations,
        batch_size=p.batch_size, lr=p.lr, weight_decay=p.weight_decay, warmup_iterations=p.warmup_iterations,
        warmup_factor=p.warmup_factor, poly_power=p.poly_power, crop_size=p.crop_size,
        scale_range=(p.scale_min, p.scale_max), scale_step=p.scale_step,
        hflip=p.hflip, photometric_distort=p.photometric_distort, sigma=p.sigma, min_area=p.min_area,
        offset_target=p.offset_target, center_map_source=p.center_map_source, iag=p.iag, refine=p.refine,
        refine_start=p.refine_start, refine_threshold=p.refine_threshold, nms_kernel=p.nms_kernel,
        refine_max_per_component=p.refine_max_per_component, refined_offset_target=p.refined_offset_target,
        refined_center_loss=p.refined_center_loss, cluster=cluster if p.cluster else None,
        loss_weights=LossWeights(p.lambda_center, p.lambda_offset, p.lambda_semantic), combine=p.loss_combine,
        hard_pixel_ratio=p.hard_pixel_ratio if p.semantic_loss == "hard-pixel" else None,
        infer_threshold=p.infer_threshold, score=p.score,
        flip_tta=p.flip_tta == "all" or (p.flip_tta == "points" and supervision == "points"),
        flip_tta_offsets=p.flip_tta_offsets, val_clean=p.val_clean,
        seed=seed,
    )
    return dataclasses.replace(config, **options)


# ---------------------------------------------------------------------------------------------
# Variants
# ---------------------------------------------------------------------------------------------


#: A training-free rule on one image: (WSSS map, its cues) → instances as (mask, semantic index, cue
#: index) and the rule's counts (an object with ``add`` and ``to_dict``).
Rule = Callable[[np.ndarray, Cues], tuple[list[tuple[np.ndarray, int, int]], Any]]


def transfer_rule(min_area: int) -> Rule:
    """BESTIE's semantic knowledge transfer as a rule: the components with exactly one cue."""
    from methods.bestie import pseudo_instances

    def rule(semantic: np.ndarray, cues: Cues) -> tuple[list[tuple[np.ndarray, int, int]], Any]:
        found, stats = pseudo_instances(semantic, cues.yx, cues.classes, min_area=min_area)
        return [(f.mask, f.semantic_class, f.cue) for f in found], stats

    return rule


def rule_records(split: CanonicalSplit, maps: dict[int, np.ndarray], cues: dict[int, Cues], rule: Rule,
                 tag: bool) -> tuple[list[dict], dict[str, int]]:
    """A training-free rule's instances on every image of ``split``, score 1 (tagged with the cues'
    annotation ids when ``tag``), and its summed counts."""
    classes, records, total = split.dataset.semantic_classes, [], None
    for image in split.images:
        c = cues[image.id]
        found, stats = rule(maps[image.id], c)
        if total is None:
            total = stats
        else:
            total.add(stats)
        records += P.instance_records(
            image.id, [m for m, _, _ in found], [classes[k] for _, k, _ in found], [1.0] * len(found),
            point_annotation_ids=[c.annotation_ids[i] for _, _, i in found] if tag else None)
    return records, {} if total is None else total.to_dict()


def write_rule_outputs(args: argparse.Namespace, out: Path, inputs: MethodInputs, point_mode: str,
                       rule: Rule) -> dict[str, dict[str, int]]:
    """A training-free rule as a run (BESTIE's ``transfer-only``, P2Seg's ``s2i-transfer``): its
    instances of the wsss run's maps from the points — on val (val maps and the **val** points:
    BESTIE and P2Seg never see those) and on train (tagged with the points' annotation ids); the
    counts per split."""
    if not (inputs.wsss / P.SEMANTIC_DIR).is_dir():
        raise FileNotFoundError(f"{inputs.wsss / P.SEMANTIC_DIR}: the {args.variant} variant needs the wsss run's "
                                "val maps")
    stats = {}
    for split, folder, target, tag in ((inputs.val, P.SEMANTIC_DIR, P.INSTANCES, False),
                                       (inputs.train, P.TRAIN_SEMANTIC_DIR, P.PSEUDO, True)):
        cues = load_cues(points_file(args.dataset, split.name, point_mode), split, inputs.dataset)
        records, stats[split.name] = rule_records(split, load_semantic_maps(inputs.wsss / folder, split), cues, rule,
                                                  tag)
        write_json(out / target, records, indent=None)
    return stats


def thing_classes(dataset: CanonicalDataset) -> list[int]:
    """Semantic indices of the thing categories, in order: centre channel c ↔ ``thing_classes[c]``."""
    return [i for i, cat in enumerate(dataset.semantic_classes)
            if cat != dataset.void_label and dataset.category_by_id[cat].isthing]


def curve_steps(iterations: int, points: int) -> list[int]:
    """``points`` training steps evenly spaced over the schedule, the last one final (BESTIE Fig. 6)."""
    return sorted({max(1, round(k * iterations / points)) for k in range(1, points + 1)}) if points else []


def sample_arrays(samples: list[Any]) -> Iterator[np.ndarray]:
    """The arrays a round trains on (images, maps, pseudo targets): its checkpoint's data fingerprint."""
    for sample in samples:
        t = sample.targets
        yield from (sample.image, sample.semantic, t.instance_map, t.centers, t.classes, t.cues, t.cue_classes)


def image_label_classes(split: CanonicalSplit) -> dict[int, list[int]]:
    """Image id → the semantic indices of the classes its image labels name (``image_labels.json``)."""
    labels = split.image_labels
    return {im.id: [split.dataset.semantic_index(c) for c in labels[im.id]] for im in split.images}


def predict_val(model: Any, inputs: MethodInputs, things: list[int], config: Any, desc: str) -> list[dict]:
    """Inference on the val split (Sec. 3.2 of BESTIE; P2Seg infers the same way): instance records.
    With ``config.val_clean`` (release ``--val_clean``) it reads the val image labels and, in the point
    setting, the val points (``data/points/<slot>/<val>_<point_mode>.json``)."""
    from methods.bestie.train import infer_instances, predict_outputs

    val = inputs.val
    classes, dataset = val.dataset.semantic_classes, val.dataset
    images = [val.load_image(im.id) for im in val.images]
    present: dict[int, list[int]] = {}
    points: dict[int, Cues] = {}
    if config.val_clean:
        present = image_label_classes(val)
        if config.supervision == "points":
            points = load_cues(points_file(inputs.info["dataset"], val.name, inputs.info["points_mode"]), val, dataset)
    records: list[dict] = []
    predicted = predict_outputs(model, images, flip_tta=config.flip_tta, flip_tta_offsets=config.flip_tta_offsets)
    for im, outputs in tqdm(zip(val.images, predicted), total=len(images), desc=desc, unit="img", leave=False):
        cues = points.get(im.id)
        found = infer_instances(outputs, things, config, present=present.get(im.id),
                                points=None if cues is None else (cues.yx, cues.classes))
        records += P.instance_records(im.id, [f.mask for f in found], [classes[f.cls] for f in found],
                                      [f.score for f in found])
    return records


def _run_training(args: argparse.Namespace, ctx: Any, variant: Variant, out: Path, inputs: MethodInputs) -> None:
    from methods.bestie.train import (Sample, annotated_instances, predict_outputs, refined_instances,
                                      targets_from_instances, train_bestie, transfer_samples)

    p, dataset, train, info = ctx.params.bestie, inputs.dataset, inputs.train, inputs.info
    config = make_config(p, variant.supervision, args.seed, variant.options, slot=args.dataset)
    things = thing_classes(dataset)
    maps = load_semantic_maps(inputs.wsss / P.TRAIN_SEMANTIC_DIR, train)
    if variant.supervision == "points":
        cue_file = points_file(args.dataset, train.name, p.point_mode)
    else:
        cue_file = resolve_peaks(args.dataset, args.peaks or variant.peaks)
    cues = load_cues(cue_file, train, dataset)
    images = {image.id: train.load_image(image.id) for image in train.images}
    train_ims = [images[i.id] for i in train.images]
    samples, stats = transfer_samples(train_ims, [maps[i.id] for i in train.images],
                                      [cues[i.id].yx for i in train.images],
                                      [cues[i.id].classes for i in train.images], config)
    log.info("semantic knowledge transfer: %s", stats.to_dict())
    info.update({"cues": str(cue_file), "transfer": stats.to_dict(), "config": config.to_dict(), "rounds": []})

    train_labels = image_label_classes(train)
    Labels = list[list[tuple[Any, int | None]]]  # per training image: (instance, cue index or None)

    def label_train(model: Any, *, curve: bool, export: bool) -> tuple[Labels, Labels]:
        """One pass of the network over the training images: with ``curve``, the refinement's labels
        (Fig. 6); with ``export``, the labels a finished round hands on (train_pseudo.json, the next
        round, the segmentor: ``bestie.export``); each empty when not asked for."""
        export_refined = export and p.export == "refined"
        refined: Labels = []
        exported: Labels = []
        for im, o in zip(train.images, predict_outputs(model, train_ims, flip_tta=config.flip_tta,
                                                      flip_tta_offsets=config.flip_tta_offsets)):
            if curve or export_refined:
                refined.append(refined_instances(o, maps[im.id], cues[im.id].yx, cues[im.id].classes, things,
                                                 config))
            if export and p.export == "network":
                exported.append(annotated_instances(o, things, config, present=train_labels[im.id],
                                                    points=(cues[im.id].yx, cues[im.id].classes)))
        return (refined if curve else []), (refined if export_refined else exported)

    def records(labels: Labels) -> list[dict]:
        return [r for im, found in zip(train.images, labels)
                for r in pseudo_records(im.id, found, dataset.semantic_classes, cues[im.id].annotation_ids)]

    last = variant.rounds
    steps = curve_steps(config.iterations, p.pseudo_curve_points)
    # Fig. 6 (last round): the labels the network would export at each step, and at step 0 the pseudo
    # labels the round starts from, listed in run.json for `bench evaluate` (written to the partial
    # folder, which a resumed run keeps, then copied into the run)
    curve_files = {f"step {step}": f"{PSEUDO_STEPS_DIR}/step{step}.json" for step in ([0, *steps] if steps else [])}
    exported: Labels = []
    at_step: dict[int, tuple[Labels, Labels]] = {}  # the last round's labels per checkpoint

    def export_checkpoint(step: int, model: Any) -> None:
        at_step[step] = label_train(model, curve=True, export=step == config.iterations)
        write_json(inputs.partial / curve_files[f"step {step}"], records(at_step[step][0]), indent=None)

    for round_ in range(variant.rounds + 1):
        t0 = time.perf_counter()
        if steps and round_ == last:
            initial = (rule_records(train, maps, cues, transfer_rule(config.min_area),
                                    tag=variant.supervision == "points")[0] if round_ == 0 else records(exported))
            write_json(inputs.partial / curve_files["step 0"], initial, indent=None)
        round_config = dataclasses.replace(config, seed=args.seed + round_)
        model = train_bestie(
            samples=samples, num_semantic=len(dataset.semantic_classes), thing_classes=things, config=round_config,
            on_step=lambda step, losses, r=round_: ctx.run.log_metrics(
                {f"train.r{r}.{k}": v for k, v in losses.items()}, step=step),
            checkpoints=steps if round_ == last else (),
            on_checkpoint=export_checkpoint,
            checkpointing=inputs.checkpointing(f"round{round_}", round_config, sample_arrays(samples)))
        seconds = time.perf_counter() - t0
        info["rounds"].append({"steps": config.iterations})
        info["timing"][f"round{round_}"] = {"train_seconds": round(seconds, 2),
                                            "images_per_second": round(config.iterations * config.batch_size / seconds, 2)}
        # the final checkpoint already labelled with the final model (not when a finished checkpoint was resumed)
        final = at_step[config.iterations] if round_ == last and config.iterations in at_step else None
        exported = (final or label_train(model, curve=False, export=True))[1]
        if round_ < last:  # Table 5: the exported labels become the next round's pseudo labels
            samples = [Sample(images[im.id], maps[im.id], targets_from_instances(
                maps[im.id].shape, [i.mask for i, _ in r], [_label_center(i, config) for i, _ in r],
                [i.cls for i, _ in r], cues[im.id].yx, cues[im.id].classes)) for im, r in zip(train.images, exported)]
    for name in curve_files.values():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(inputs.partial / name, out / name)
    info["pseudo_curve"] = curve_files
    pseudo = records(exported)
    t0 = time.perf_counter()
    val_records = predict_val(model, inputs, things, config, desc="bestie val")
    info["timing"]["val_seconds"] = round(time.perf_counter() - t0, 2)
    write_json(out / P.INSTANCES, val_records, indent=None)
    write_json(out / P.PSEUDO, pseudo, indent=None)
    ctx.run.log_metrics({"val_instances": len(val_records), "train_pseudo_instances": len(pseudo)})


def pseudo_records(image_id: int, found: list[tuple[Any, int | None]], semantic_classes: list[int],
                   annotation_ids: list[int | None]) -> list[dict]:
    """``train_pseudo.json`` records of one image: COCO results (RLE, bbox, score) with
    ``point_annotation_id`` = the GT annotation id of the cue an instance was grouped to, ``null``
    for cues without one (image-setting peaks)."""
    records = P.instance_records(image_id, [i.mask for i, _ in found], [semantic_classes[i.cls] for i, _ in found],
                                 [i.score for i, _ in found])
    for record, (_, cue) in zip(records, found):
        record["point_annotation_id"] = None if cue is None else annotation_ids[cue]
    return records


def _label_center(instance: Any, config: Any) -> tuple[float, float]:
    if config.refined_offset_target == "center":
        return instance.center
    ys, xs = np.nonzero(instance.mask)
    return float(ys.mean()), float(xs.mean())


def _run_transfer(args: argparse.Namespace, ctx: Any, out: Path, inputs: MethodInputs) -> None:
    p = ctx.params.bestie
    inputs.info["transfer"] = write_rule_outputs(args, out, inputs, p.point_mode, transfer_rule(p.min_area))


def _configure(parser: argparse.ArgumentParser) -> None:
    slot_argument(parser)
    parser.add_argument("--variant", required=True, choices=list(VARIANTS), help="table row (docs/bestie.md)")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--wsss", default=None,
                        help="wsss run whose train_semantic/ maps are used: a run name under runs/<slot>/wsss/ "
                             "(points-partial/seed{seed}, active, oracle/seed0, pam/seed0) or a folder; {seed} is "
                             "replaced by --seed; default per variant (point setting: points-partial/seed{seed})")
    parser.add_argument("--peaks", default=None,
                        help="image setting: peaks file, or the wsss run holding train_peaks.json; default per variant")
    params_argument(parser)


@dataclass
class MethodInputs:
    """What a BESTIE-family run reads besides params: the dataset, its train / val splits, the wsss
    run folder, and the ``run.json`` record the run fills."""

    dataset: CanonicalDataset
    train: CanonicalSplit
    val: CanonicalSplit
    wsss: Path
    info: dict[str, Any]
    partial: Path  # kept across interrupted runs (training checkpoints); removed when the run completes
    checkpoint_every: int

    def checkpointing(self, name: str, config: Any, arrays: Iterable[np.ndarray]) -> Any:
        """Resumable training state ``<partial>/<name>.pt`` (None when ``bestie.checkpoint_every`` is 0),
        fingerprinted by the training config and the bytes of its input ``arrays``."""
        from methods.bestie.train import Checkpointing

        if not self.checkpoint_every:
            return None
        digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
        for array in arrays:
            digest.update(np.ascontiguousarray(array).tobytes())
        return Checkpointing(self.partial / f"{name}.pt", f"{name}:{digest.hexdigest()}", self.checkpoint_every)


@contextlib.contextmanager
def method_stage(stage: StageInfo, args: argparse.Namespace, *, method: str, wsss: str,
                 **info: Any) -> Iterator[tuple[Any, MethodInputs, Path]]:
    """The frame of a BESTIE / P2Seg run: validated params and the stage's MLflow run, the CPU thread
    cap (the embedded budget: 2 threads), seeding, the splits, the wsss run (``wsss`` with ``{seed}``),
    and ``runs/<slot>/<method>/<variant>/seed<k>/`` written atomically with ``run.json`` (``info``)
    and ``timing.json`` (its ``timing`` entry plus the stage's wall time), beside ``seed<k>.partial/`` for what must survive an interrupted run
    (training checkpoints, Fig. 6's checkpoint labels) — yields ``(ctx, inputs, out)``."""
    with run_stage(stage, params_path=Path(args.params), method=method, variant=args.variant,
                   dataset=args.dataset) as ctx:
        from methods.runtime import cap_cpu_threads

        cpu_threads = cap_cpu_threads()
        seed_everything(args.seed)
        slot = getattr(ctx.params.data, args.dataset)
        dataset = CanonicalDataset(canonical_dir(args.dataset))
        train, val = dataset.split(slot.train_split), dataset.split(slot.val_split)
        wsss_dir = resolve_wsss_run(args.dataset, wsss.format(seed=args.seed))
        record: dict[str, Any] = {"method": method, "variant": args.variant, "dataset": args.dataset,
                                  "seed": args.seed, "train_split": train.name, "val_split": val.name,
                                  "points_mode": ctx.params.bestie.point_mode, "profile": ctx.profile, **info,
                                  "wsss_run": str(wsss_dir), "cpu_threads": cpu_threads, "timing": {}}
        t0 = time.perf_counter()
        final = run_dir(args.dataset, method, args.variant) / f"seed{args.seed}"
        partial = final.with_name(f"{final.name}.partial")
        with atomic_path(final, directory=True) as out:
            yield ctx, MethodInputs(dataset, train, val, wsss_dir, record, partial,
                                    ctx.params.bestie.checkpoint_every), out
            record["timing"]["stage_seconds"] = round(time.perf_counter() - t0, 2)
            write_run_record(out / P.RUN_INFO, record)
            ctx.run.log_metrics(flatten({"timing": record["timing"]}))
        shutil.rmtree(partial, ignore_errors=True)
        log.info("%s: %s %s seed %d written (%.1f s)", args.dataset, method, args.variant, args.seed,
                 record["timing"]["stage_seconds"])


def _handle(args: argparse.Namespace) -> int:
    variant = VARIANTS.get(args.variant)
    with method_stage(STAGE, args, method="bestie", wsss=args.wsss or variant.wsss,
                      supervision=variant.supervision) as (ctx, inputs, out):
        if variant.supervision == "transfer":
            _run_transfer(args, ctx, out, inputs)
        else:
            _run_training(args, ctx, variant, out, inputs)
    return 0


COMMANDS.add("bestie", Command("BESTIE instance segmentation from points or image labels (and its baselines)",
                               _configure, _handle))
