"""``bench p2seg`` — P2Seg (Wang et al., 2024): the Mutual Distillation Module on BESTIE's point setting.

Writes ``runs/<slot>/p2seg/<variant>/seed<k>/``: ``val_instances.json`` (BESTIE inference on val),
``model.pt`` (the last stage's network and its config),
``train_pseudo.json`` (the last stage's instance map: one record per point, ``point_annotation_id``
= the point's GT annotation), ``run.json`` (per stage: S2I counts, the train mIoU of the semantic
map the stage trained on and of its I2S map) and ``timing.json`` (training and val seconds).

Inputs: the WSSS maps of a wsss run (``--wsss``, default ``points-partial/seed<k>``: the
point-supervised WSSS run of the same seed, Point2Mask Table 4's partial-CE row) and the GT
points (``data/points/<slot>/<split>_<bestie.point_mode>.json``).

Variants (table rows; one code path, options only — :data:`VARIANTS`, docs/p2seg.md): ``hrnet``
(the default run: every ``mdm`` value as configured — T5's current point, T6 "points first", the
source of the ``*-mrcnn`` / ``*-solov2`` segmentor rows), ``resnet`` (``mdm.resnet_backbone`` with
``mdm.resnet_decoder``),
``s2i`` (no I2S), ``bestie-s2i`` / ``bestie-s2i-i2s`` (BESTIE's semantic-results-first transfer
in place of S2I, T3), ``hpr-<r>`` (T5's sweep, the hard pixel ratio fixed to r) and the
training-free ``s2i-transfer`` (the S2I instances themselves, Table 6's controlled "points first").
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

from bench import predictions as P
from bench.bestie_family import checkpointing, make_config, predict_val, pseudo_records, write_rule_outputs
from bench.commands import COMMANDS, Command, params_argument, slot_argument
from bench.config.schema import MdmParams
from bench.inputs import load_cues, load_semantic_maps, resolve_wsss_run, thing_classes
from bench.io import write_json
from bench.methods import Producer, SameRun, StageGroup, register, segmentor_group
from bench.paths import backbone_checkpoint, canonical_dir, points_file
from bench.registry import Registry
from bench.stages.base import declare_stage
from bench.stages.run import WEIGHTS, RunFolder, method_run, save_weights
from datasets.canonical import CanonicalSplit

log = logging.getLogger(__name__)
#: T5's sweep: the hard pixel ratios of the paper's Table 5.
SWEEP_RATIOS = ("0.1", "0.2", "0.4", "0.8")
#: The schema's mdm.hard_pixel_ratio: its sweep row is the default run p2seg/hrnet (Producer.same_runs).
DEFAULT_RATIO = str(MdmParams().hard_pixel_ratio)


@dataclass(frozen=True)
class Variant:
    """A table row: :class:`~methods.p2seg.train.P2SegConfig` overrides, and the network fields."""

    options: dict[str, Any] = field(default_factory=dict)
    backbone: str = "backbone"  # the mdm field naming the backbone
    backbone_init: str = "backbone_init"  # the mdm field naming where that backbone starts
    decoder: str = "decoder"  # the mdm field naming the decoder
    hard_pixel_ratio: float | None = None  # None = mdm.hard_pixel_ratio
    rows: str = ""
    training: bool = True  # False: the S2I pseudo instances themselves, no network


VARIANTS: Registry[Variant] = Registry("p2seg variant")
_NO_I2S = {"i2s": False, "stages": 1}  # without I2S a later stage would re-train on the same maps
VARIANTS.add("hrnet", Variant(rows="T1/T2/T4 'Ours (HRNet)' via the segmentor; T5 current ratio; T6 points first"))
VARIANTS.add("resnet", Variant(backbone="resnet_backbone", backbone_init="resnet_backbone_init",
                                  decoder="resnet_decoder", rows="T1 'Ours (R101)' via the segmentor"))
VARIANTS.add("s2i", Variant(options=_NO_I2S, rows="T3 S2I without I2S"))
VARIANTS.add("bestie-s2i", Variant(options={**_NO_I2S, "s2i": "semantic-first"}, rows="T3 BESTIE transfer"))
VARIANTS.add("bestie-s2i-i2s", Variant(options={"s2i": "semantic-first"}, rows="T3 BESTIE transfer + I2S"))
VARIANTS.add("s2i-transfer", Variant(training=False, rows="T6 controlled: the S2I instances themselves (no network)"))
for _ratio in SWEEP_RATIOS:
    VARIANTS.add(f"hpr-{_ratio}", Variant(hard_pixel_ratio=float(_ratio), rows=f"T5 hard pixel ratio {_ratio}"))


def make_p2seg_config(params: Any, variant: Variant, seed: int, *, slot: str = "voc") -> Any:
    """The validated ``bestie`` and ``mdm`` sections → :class:`~methods.p2seg.train.P2SegConfig`; ``slot``
    locates the backbone checkpoint ``mdm.backbone_init`` names."""
    from methods.bestie import LossWeights
    from methods.p2seg.train import P2SegConfig

    m = params.mdm
    bestie = make_config(params.bestie, "points", seed, {}, slot=slot)
    backbone = getattr(m, variant.backbone)
    init = getattr(m, variant.backbone_init)
    ratio = m.hard_pixel_ratio if variant.hard_pixel_ratio is None else variant.hard_pixel_ratio
    bestie = dataclasses.replace(
        bestie, backbone=backbone, backbone_weights=backbone_checkpoint(slot, init, backbone),
        decoder=getattr(m, variant.decoder), iterations=m.iterations,
        batch_size=m.batch_size, warmup_iterations=m.warmup_iterations, optimizer=m.optimizer, lr=m.lr,
        weight_decay=m.weight_decay, offset_loss=m.offset_loss,
        hard_pixel_ratio=ratio, refined_offset_target="center",  # Eq. 2: offsets point to the annotated points
        loss_weights=LossWeights(center=params.bestie.lambda_center, offset=m.lambda_offset,
                                 semantic=m.lambda_semantic))
    shared = {f.name: getattr(m, f.name) for f in dataclasses.fields(P2SegConfig) if f.name in type(m).model_fields}
    config = P2SegConfig(**{**shared, "bestie": bestie,
                            "affinity_normalize": None if m.affinity_normalize == "none" else m.affinity_normalize})
    return dataclasses.replace(config, **variant.options)


def train_miou(maps: list[np.ndarray], split: CanonicalSplit, gt: Any) -> float:
    """mIoU (%) of a split's semantic maps (in split order) under the harness's semantic protocol
    (:class:`~bench.evaluation.semantic.SemanticEvaluator`, ``gt``: the split's CanonicalGT)."""
    from bench.evaluation.semantic import SemanticEvaluator

    evaluator = SemanticEvaluator(gt)
    for image, pred in zip(split.images, maps):
        evaluator.process(image.id, pred)
    return evaluator.summarize()["semantic.mIoU"]


def _run(args: argparse.Namespace, ctx: Any, variant: Variant, run: RunFolder, wsss: Path) -> None:
    from bench.evaluation.gt import CanonicalGT
    from methods.p2seg.train import export_instances, train_p2seg

    dataset, train, info, out = run.dataset, run.train, run.info, run.out
    config = make_p2seg_config(ctx.params, variant, args.seed, slot=args.dataset)
    things = thing_classes(dataset)
    num_semantic = len(dataset.semantic_classes)
    maps = load_semantic_maps(wsss / P.TRAIN_SEMANTIC_DIR, train)
    cue_file = points_file(args.dataset, train.name, ctx.params.bestie.point_mode)
    cues = load_cues(cue_file, train, dataset)
    ids = [image.id for image in train.images]
    images = [train.load_image(i) for i in ids]
    points, classes = [cues[i].yx for i in ids], [cues[i].classes for i in ids]
    info.update({"cues": str(cue_file), "config": config.to_dict()})
    t0 = time.perf_counter()
    stages = train_p2seg(
        images=images, maps=[maps[i] for i in ids], points=points, point_classes=classes, num_semantic=num_semantic,
        thing_classes=things, config=config,
        on_step=lambda stage, step, losses: ctx.run.log_metrics({f"train.s{stage}.{k}": v for k, v in losses.items()},
                                                                step=step),
        checkpointing=lambda stage, bestie, samples: checkpointing(
            run, f"stage{stage + 1}", dataclasses.replace(config, bestie=bestie), samples,
            ctx.params.bestie.checkpoint_every))
    seconds = time.perf_counter() - t0
    info["timing"]["train_seconds"] = round(seconds, 2)
    info["timing"]["images_per_second"] = round(
        config.stages * config.bestie.iterations * config.bestie.batch_size / seconds, 2)
    gt = CanonicalGT.load(canonical_dir(args.dataset), train.name)
    # stage k + 1 trains on stage k's I2S map: each distinct map list is scored once
    mious = {id(m): round(train_miou(m, train, gt), 2)
             for m in {id(m): m for s in stages for m in (s.semantic, s.refined) if m is not None}.values()}
    info["stages"] = [{"s2i": s.stats, "input_train_miou": mious[id(s.semantic)],
                       "i2s_train_miou": None if s.refined is None else mious[id(s.refined)]} for s in stages]
    for k, s in enumerate(info["stages"]):
        log.info("stage %d: S2I %s; train mIoU of its input map %.1f, of its I2S map %s", k + 1, s["s2i"],
                 s["input_train_miou"], s["i2s_train_miou"])
    pseudo: list[dict] = []
    for image_id, found in zip(ids, export_instances(stages[-1], images, points, classes, things, config)):
        pseudo += pseudo_records(image_id, found, dataset.semantic_classes, cues[image_id].annotation_ids)
    t0 = time.perf_counter()
    save_weights(out / WEIGHTS, stages[-1].model, config.to_dict())
    val_records = predict_val(stages[-1].model, run, things, config.bestie, desc="p2seg val")
    info["timing"]["val_seconds"] = round(time.perf_counter() - t0, 2)
    write_json(out / P.INSTANCES, val_records, indent=None)
    write_json(out / P.PSEUDO, pseudo, indent=None)
    ctx.run.log_metrics({"val_instances": len(val_records), "train_pseudo_instances": len(pseudo),
                         **{f"stage{k + 1}.i2s_train_miou": s["i2s_train_miou"] for k, s in enumerate(info["stages"])
                            if s["i2s_train_miou"] is not None}})


def s2i_rule(params: Any) -> Any:
    """P2Seg's S2I as a training-free rule (Table 6's "points first" on its own, the counterpart of
    BESTIE's transfer): the points-first instances, default boxes as in training."""
    from methods.p2seg.s2i import points_first_instances

    m, b = params.mdm, params.bestie
    box = m.default_box if m.default_box_in_training else None

    def rule(semantic: np.ndarray, cues: Any) -> tuple[list[tuple[np.ndarray, int, int]], Any]:
        found, stats = points_first_instances(semantic, cues.yx, cues.classes, min_area=b.min_area,
                                              single_point_target=m.single_point_target, default_box=box)
        return [(f.mask, f.semantic_class, f.point) for f in found], stats

    return rule


def _configure(parser: argparse.ArgumentParser) -> None:
    slot_argument(parser)
    parser.add_argument("--variant", required=True, choices=list(VARIANTS), help="table row (docs/p2seg.md)")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--wsss", default="points-partial/seed{seed}",
                        help="wsss run whose train_semantic/ maps are stage 1's input: a run name under "
                             "runs/<slot>/wsss/ (points-partial/seed{seed} = the point-supervised WSSS of the same "
                             "seed, active, oracle/seed0) or a folder; {seed} is replaced by --seed")
    params_argument(parser)


def _handle(args: argparse.Namespace) -> int:
    variant = VARIANTS.get(args.variant)
    with method_run(STAGE, slot=args.dataset, method="p2seg", variant=args.variant, seed=args.seed,
                    params_path=Path(args.params)) as (ctx, run):
        point_mode = ctx.params.bestie.point_mode
        wsss = resolve_wsss_run(args.dataset, args.wsss.format(seed=args.seed))
        run.info.update({"points_mode": point_mode, "wsss_run": str(wsss)})
        if variant.training:
            _run(args, ctx, variant, run, wsss)
        else:
            run.info["s2i"] = write_rule_outputs(run, wsss, point_mode, s2i_rule(ctx.params))
    return 0


_TRAIN_DEPS = ("data/points/voc", "runs/voc/pretrain", "runs/voc/wsss/points-partial/seed${item.seed}")
PRODUCER = register(Producer(
    name="p2seg", title="P2Seg", paper="p2seg", sections=("mdm", "bestie"),
    code=("bench/bestie_family.py", "methods/bestie", "methods/p2seg", "methods/backbones.py",
          "methods/checkpointing.py"),
    variants={name: v.rows for name, v in VARIANTS.items()},
    # the sweep's row at the default ratio is the default run: trained once
    same_runs={f"hpr-{r}": SameRun("hrnet", "mdm.hard_pixel_ratio", float(r)) for r in SWEEP_RATIOS},
    groups=(
        StageGroup("p2seg", "voc", ("hrnet",), deps=_TRAIN_DEPS),
        StageGroup("p2seg-transfer", "voc", ("s2i-transfer",),
                   deps=("data/points/voc", "runs/voc/wsss/points-partial/seed${item.seed}"),
                   params=("bestie.min_area", "bestie.point_mode", "mdm.single_point_target", "mdm.default_box",
                           "mdm.default_box_in_training")),
        StageGroup("p2seg-ablation", "voc", ("s2i", "bestie-s2i", "bestie-s2i-i2s", "resnet"), deps=_TRAIN_DEPS),
        # the sweep fixes the ratio: every mdm key but mdm.hard_pixel_ratio
        StageGroup("p2seg-sweep", "voc", tuple(f"hpr-{r}" for r in SWEEP_RATIOS if r != DEFAULT_RATIO),
                   deps=_TRAIN_DEPS, params=("bestie", "mdm -hard_pixel_ratio")),
        StageGroup("p2seg-coco", "coco", ("hrnet",),
                   deps=("data/points/coco", "runs/coco/pretrain", "runs/coco/wsss/points-partial/seed${item.seed}")),
        segmentor_group("segment-p2seg", "p2seg", "voc", ("hrnet", "resnet", "s2i", "bestie-s2i", "bestie-s2i-i2s")),
        segmentor_group("segment-p2seg-solov2", "p2seg", "voc", ("hrnet",), "solov2"),
        segmentor_group("segment-p2seg-coco", "p2seg", "coco", ("hrnet",)),
    )), __name__)
STAGE = declare_stage("p2seg", "data", *PRODUCER.sections)
COMMANDS.add("p2seg", Command("P2Seg: the Mutual Distillation Module (S2I + I2S) on BESTIE's point setting",
                              _configure, _handle))
