"""``bench point2mask`` — Point2Mask (Li et al., ICCV 2023): one point per thing and stuff target → panoptic
segmentation, the network trained end to end with its optimal-transport pseudo-label branch (docs/point2mask.md).

Writes ``runs/<slot>/point2mask/<variant>/seed<k>/`` through the method run frame
(``bench.stages.run.method_run``):

- ``model.pt`` — the trained network and its config (``save_weights``; Table 1's ``*-cocopre`` rows start from
  the COCO-like run's kept weights, class heads re-initialised);
- ``val_panoptic.json`` + ``val_panoptic/`` (PQ) and ``val_instances.json`` (the thing segments with their
  scores: the VOC / COCO instance protocols of P2Seg's tables) — inference with the panoptic branch only;
- ``train_panoptic.json`` + ``train_panoptic/`` — the pseudo labels of the final network on the training images
  (Alg. 1 on its P^s and P^b), scored here against the ground truth: ``run.json`` ``train_pseudo_pq``;
- ``run.json`` — config, counts and timing, with the share of the training time spent in the pseudo-label
  branch (``timing.pseudo_share``).

Points: the ``uniform`` points file (one uniform random point per thing instance and per stuff segment, the
paper's protocol), stuff points kept (``bench.inputs.load_cues(stuff=True)``). The row ``full`` is the fully
supervised reference: the same network and panoptic head trained on the ground-truth panoptic maps.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bench import predictions as P
from bench.commands import COMMANDS, Command, params_argument, slot_argument
from bench.inputs import load_cues, thing_classes
from bench.io import write_json
from bench.methods import Producer, StageGroup, register
from bench.paths import backbone_checkpoint, canonical_dir, points_file, run_dir
from bench.registry import Registry
from bench.stages.base import declare_stage
from bench.stages.run import WEIGHTS, RunFolder, load_weights, method_run, save_weights

log = logging.getLogger(__name__)
#: The training images' pseudo labels of the final network, as COCO panoptic (scored in the stage).
TRAIN_PANOPTIC_JSON = "train_panoptic.json"
TRAIN_PANOPTIC_DIR = "train_panoptic"
COCOPRE = "-cocopre"


@dataclass(frozen=True)
class Variant:
    """A table row: the backbone (``r50`` / ``r101`` / ``swinl`` → ``point2mask.backbone`` / ``backbone_r101`` /
    ``backbone_swinl``), :class:`~methods.point2mask.config.Point2MaskConfig` overrides, the supervision, and
    for the ``*-cocopre`` rows the COCO-like run whose weights it fine-tunes."""

    backbone: str = "r50"
    options: dict[str, Any] = field(default_factory=dict)
    supervision: str = "points"
    source: str | None = None
    rows: str = ""


VARIANTS: Registry[Variant] = Registry("point2mask variant")
VARIANTS.add("r50", Variant(rows="T1/T2 ResNet-50 (main row); T3 all maps; T4 all losses; T5 nearest centroid; "
                                 "T6 1 iteration"))
VARIANTS.add("r101", Variant("r101", rows="T1/T2 ResNet-101 (and P2Seg T1/T2's Point2Mask row)"))
VARIANTS.add("swinl", Variant("swinl", rows="T1/T2 Swin-L"))
for _bb in ("r50", "r101", "swinl"):
    VARIANTS.add(f"{_bb}{COCOPRE}", Variant(_bb, source=_bb, rows=f"T1 {_bb}, VOC 2012 with COCO pre-training"))
VARIANTS.add("full", Variant(supervision="full", rows="fully supervised reference: the same network and panoptic "
                                                      "head on ground-truth panoptic masks"))
_ABLATIONS = {
    "maps-ps": ({"use_high_boundary": False, "use_low_boundary": False}, "T3 P^s only"),
    "maps-ps-blow": ({"use_high_boundary": False}, "T3 P^s + P^b_low"),
    "maps-ps-bhigh": ({"use_low_boundary": False}, "T3 P^s + P^b_high"),
    "sem-partial": ({"use_lab": False, "use_rgb": False}, "T4 L_partial (PQ columns)"),
    "sem-partial-lab": ({"use_rgb": False}, "T4 L_partial + L_LAB (PQ columns)"),
    "sem-partial-rgb": ({"use_lab": False}, "T4 L_partial + L_RGB (PQ columns)"),
    "units-equal": ({"unit_number": "equal"}, "T5 equal division"),
    "units-nearest-gt": ({"unit_number": "nearest-point"}, "T5 nearest gt point"),
    **{f"centroid-iters-{n}": ({"centroid_iterations": n}, f"T6 {n} iterations" + (" (T7 OT)" if n == 8 else ""))
       for n in (2, 4, 8, 10)},
    "min-cost": ({"decode": "min-cost"}, "T7 minimum cost without OT"),
}
for _name, (_options, _rows) in _ABLATIONS.items():
    VARIANTS.add(_name, Variant(options=_options, rows=_rows))


def make_configs(p: Any, variant: Variant) -> tuple[Any, Any]:
    """(Point2MaskConfig, TrainConfig) from the validated ``point2mask`` section and the row's overrides."""
    from methods.point2mask.config import Point2MaskConfig
    from methods.point2mask.train import TrainConfig

    def values(cls: type) -> dict[str, Any]:
        return {f.name: getattr(p, f.name) for f in dataclasses.fields(cls)}

    train = values(TrainConfig)
    train["backbone"] = {"r50": p.backbone, "r101": p.backbone_r101, "swinl": p.backbone_swinl}[variant.backbone]
    train["out_indices"] = tuple(train["out_indices"])
    return Point2MaskConfig(**{**values(Point2MaskConfig), **variant.options}), TrainConfig(**train)


def _gt_panoptic(split: Any, image_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth panoptic map (segment k + 1, 0 = void and crowd) and the segments' semantic indices."""
    ids, segments = split.panoptic_map(image_id)
    out = np.zeros(ids.shape, np.int32)
    classes = []
    for k, s in enumerate(segments):
        if not s.get("iscrowd", 0):
            out[ids == s["id"]] = k + 1
        classes.append(split.dataset.semantic_index(s["category_id"]))
    return out, np.asarray(classes, np.int64)


def _samples(run: RunFolder, cues: dict[int, Any], full: bool) -> list[Any]:
    from methods.point2mask.train import Sample

    out = []
    for image in run.train.images:
        gt = _gt_panoptic(run.train, image.id) if full else (None, None)
        out.append(Sample(run.train.load_image(image.id), cues[image.id].yx, cues[image.id].classes,
                          f"image {image.id}", *gt))
    return out


def _panoptic_json(split: Any, writer: P.PanopticWriter) -> dict[str, Any]:
    return {"images": split.panoptic["images"], "annotations": writer.annotations(),
            "categories": split.dataset.meta["categories"]}


def _write_val(run: RunFolder, model: Any, config: Any, desc: str) -> dict[str, int]:
    """val_panoptic.json + PNGs and val_instances.json (thing segments with their scores)."""
    from methods.point2mask.train import predict_panoptic

    dataset = run.dataset
    things = thing_classes(dataset)
    stuff = [i for i in range(len(dataset.semantic_classes)) if i not in things]
    writer = P.PanopticWriter(run.out / P.PANOPTIC_DIR)
    records: list[dict] = []
    for image in tqdm(run.val.images, desc=f"{desc} val", unit="img", leave=False):
        segments, instances = predict_panoptic(model, run.val.load_image(image.id), things, stuff, config)
        writer.add(image, [(m, dataset.semantic_classes[c]) for m, c in segments])
        records += P.instance_records(image.id, [i.mask for i in instances],
                                      [dataset.semantic_classes[i.cls] for i in instances],
                                      [i.score for i in instances])
    write_json(run.out / P.PANOPTIC_JSON, _panoptic_json(run.val, writer), indent=None)
    write_json(run.out / P.INSTANCES, records, indent=None)
    return {"val_segments": sum(len(a["segments_info"]) for a in writer.annotations()), "val_instances": len(records)}


def _write_train_pseudo(ctx: Any, run: RunFolder, model: Any, samples: list[Any], p2m: Any,
                        desc: str) -> dict[str, Any]:
    """The final network's pseudo labels of the training images (Alg. 1) as panoptic, scored (PQ) here."""
    from bench.evaluation import evaluate_files
    from methods.point2mask.train import network_maps, pseudo_label_map

    dataset = run.dataset
    is_thing = np.zeros(len(dataset.semantic_classes), bool)
    is_thing[thing_classes(dataset)] = True
    writer = P.PanopticWriter(run.out / TRAIN_PANOPTIC_DIR)
    t0 = time.perf_counter()
    for image, sample in tqdm(list(zip(run.train.images, samples)), desc=f"{desc} pseudo", unit="img", leave=False):
        maps = network_maps(model, sample.image)
        labels = pseudo_label_map(maps["weak"].softmax(0), maps["boundary"], sample.image, sample, is_thing, p2m)
        writer.add(image, [(labels == p + 1, dataset.semantic_classes[int(c)])
                           for p, c in enumerate(sample.point_classes)])
    seconds = time.perf_counter() - t0
    path = run.out / TRAIN_PANOPTIC_JSON
    write_json(path, _panoptic_json(run.train, writer), indent=None)
    result = evaluate_files("pq", gt_root=canonical_dir(run.slot), split=run.train.name, predictions=path, workers=1)
    metrics = {k: round(float(v), 2) for k, v in result.metrics.items() if k.startswith("pq.")}
    ctx.run.log_metrics({f"train_pseudo.{k}": v for k, v in metrics.items()})
    return {"metrics": metrics, "seconds": round(seconds, 2)}


def _run(args: argparse.Namespace, ctx: Any, variant: Variant, run: RunFolder) -> None:
    from methods.point2mask.train import train_point2mask

    p = ctx.params.point2mask
    p2m, config = make_configs(p, variant)
    dataset = run.dataset
    things = thing_classes(dataset)
    cue_file = points_file(args.dataset, run.train.name, p.point_mode)
    cues = load_cues(cue_file, run.train, dataset, stuff=True)
    full = variant.supervision == "full"
    samples = _samples(run, cues, full)
    weights = backbone_checkpoint(args.dataset, p.backbone_init, config.backbone)
    init_state, source = None, None
    if variant.source is not None:  # Table 1, VOC 2012 with COCO pre-training
        source = run_dir("coco", "point2mask", variant.source) / f"seed{args.seed}"
        kept = load_weights(source)
        if kept["config"].get("backbone") != config.backbone:
            raise ValueError(f"{source / WEIGHTS}: trained with backbone {kept['config'].get('backbone')!r}, this row "
                             f"uses {config.backbone!r}")
        init_state, weights = kept["model"], None
    run.info.update({"points": str(cue_file), "points_mode": p.point_mode, "supervision": variant.supervision,
                     "source": None if source is None else str(source),
                     "config": {**config.to_dict(), "pseudo": p2m.to_dict(), "backbone_weights": weights}})
    result = train_point2mask(
        samples, num_semantic=len(dataset.semantic_classes), thing_classes=things, config=config, p2m=p2m,
        supervision=variant.supervision, seed=args.seed, backbone_weights=weights, init_state=init_state,
        on_step=lambda step, values: ctx.run.log_metrics({f"train.{k}": v for k, v in values.items()}, step=step),
        progress=True, desc=f"point2mask {args.variant}")
    timing = run.info["timing"]
    timing.update({"train_seconds": round(result.seconds, 2), "pseudo_seconds": round(result.pseudo_seconds, 2),
                   "pseudo_share": round(result.pseudo_seconds / max(result.seconds, 1e-9), 3),
                   "images_per_second": round(config.iterations * min(config.batch_size, len(samples))
                                              / max(result.seconds, 1e-9), 2)})
    run.info["final_losses"] = {k: round(v, 4) for k, v in result.history[-1].items()}
    save_weights(run.out / WEIGHTS, result.model, run.info["config"])
    t0 = time.perf_counter()
    run.info["counts"] = _write_val(run, result.model, config, f"point2mask {args.variant}")
    timing["val_seconds"] = round(time.perf_counter() - t0, 2)
    if not full:
        pseudo = _write_train_pseudo(ctx, run, result.model, samples, p2m, f"point2mask {args.variant}")
        run.info["train_pseudo_pq"] = pseudo["metrics"]
        timing["train_pseudo_seconds"] = pseudo["seconds"]
    ctx.run.log_metrics(run.info["counts"])


def _configure(parser: argparse.ArgumentParser) -> None:
    slot_argument(parser)
    parser.add_argument("--variant", required=True, choices=list(VARIANTS), help="table row (docs/point2mask.md)")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    params_argument(parser)


def _handle(args: argparse.Namespace) -> int:
    variant = VARIANTS.get(args.variant)
    if variant.source is not None and args.dataset != "voc":
        raise SystemExit(f"point2mask {args.variant}: the COCO pre-training rows fine-tune on the voc slot only")
    supervision = "ground-truth panoptic masks" if variant.supervision == "full" else "points"
    with method_run(STAGE, slot=args.dataset, method="point2mask", variant=args.variant, seed=args.seed,
                    params_path=Path(args.params), supervision=supervision) as (ctx, run):
        _run(args, ctx, variant, run)
    return 0


def _groups(slot: str) -> tuple[StageGroup, ...]:
    deps = (f"data/points/{slot}", f"runs/{slot}/pretrain")
    groups = [
        StageGroup(f"point2mask-{slot}", slot, ("r50", "full"), deps=deps),
        StageGroup(f"point2mask-{slot}-backbones", slot, ("r101", "swinl"), deps=deps),
    ]
    if slot == "voc":
        groups += [
            StageGroup("point2mask-voc-ablation", slot, tuple(_ABLATIONS), deps=deps),
            # Table 1's "VOC 2012 with COCO" block: the variants name the COCO-like run fine-tuned (r50 →
            # the row r50-cocopre)
            StageGroup("point2mask-voc-cocopre", slot, ("r50", "r101", "swinl"), row=f"${{item.variant}}{COCOPRE}",
                       args=f"--variant ${{item.variant}}{COCOPRE} --seed ${{item.seed}}",
                       deps=(*deps, f"runs/coco/point2mask/${{item.variant}}/seed${{item.seed}}/{WEIGHTS}")),
        ]
    return tuple(groups)


PRODUCER = register(Producer(
    name="point2mask", title="Point2Mask", paper="point2mask", sections=("point2mask",),
    code=("methods/point2mask", "methods/bestie", "methods/wsss", "methods/backbones.py", "bench/predictions.py"),
    variants={name: v.rows for name, v in VARIANTS.items()},
    groups=_groups("voc") + _groups("coco")), __name__)
STAGE = declare_stage("point2mask", "data", *PRODUCER.sections)
COMMANDS.add("point2mask", Command("Point2Mask: panoptic segmentation from one point per thing and stuff target",
                                   _configure, _handle))
