"""``bench jtsm`` — JTSM (Shen et al., CVPR 2021): image labels → panoptic, instance and WSOD outputs by
joint thing-and-stuff mining over segment proposals (docs/jtsm.md).

Three kinds of run, all through the method run frame (``bench.stages.run.method_run``):

- ``--variant proposals``: the segment proposals of every train and val image (``datasets.proposals``, the
  MCG stand-in) → ``runs/<slot>/jtsm/proposals/seed0/<split>/<stem>.npz`` (docs/formats.md, "Segment
  proposals"); ``run.json`` records the generator's settings, the proposal counts and the recall (best
  overlap ≥ 0.5 / 0.7 with the ground-truth things, stuff and all segments, per split), ``timing.json`` the
  seconds and proposals per second. Every other JTSM run reads these files.
- the training rows (``panoptic``, ``instance``, ``wsod``, Tables 1-3's ``roipool`` … ``nr-5``): train JTSM
  (``methods.jtsm.train``) from the image labels on the cached proposals, with the backbone started from
  ``jtsm.backbone_init`` (the ``pretrain`` stage's weights by default), and write ``model.pt``,
  ``val_instances.json``, ``val_detections.json`` + ``train_detections.json`` (CorLoc is measured on the
  training images, the WSOD convention), ``val_panoptic.json`` + ``val_panoptic/`` (rows with stuff
  classes) and ``run.json``.
- the training-free baselines ``top-proposal`` / ``largest-proposal``: per class the image labels name,
  the generator's best-ranked / the largest proposal (the same proposals, the same output files; on val
  they read the val image labels, which JTSM never sees).

A proposal file that fails its checks stops the run with the file and the proposal named, before anything
is trained; the run folder only appears complete.
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

from bench.commands import COMMANDS, Command, params_argument, slot_argument
from bench.jtsm_outputs import (
    PROPOSALS,
    class_layout,
    gt_segments,
    label_vectors,
    load_proposals,
    make_jtsm_config,
    proposal_config,
    proposals_folder,
    write_predictions,
)
from bench.methods import Producer, SameRun, StageGroup, register
from bench.paths import backbone_checkpoint
from bench.registry import Registry
from bench.stages.base import declare_stage
from bench.stages.run import WEIGHTS, RunFolder, method_run, save_weights

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    """A table row: what the run does (``train``, ``proposals``, or a baseline rule ``top`` / ``largest``),
    :class:`~methods.jtsm.config.JtsmConfig` overrides, and whether only thing classes are mined."""

    kind: str = "train"
    options: dict[str, Any] = field(default_factory=dict)
    things_only: bool = False
    rows: str = ""


VARIANTS: Registry[Variant] = Registry("jtsm variant")
VARIANTS.add(PROPOSALS, Variant("proposals", rows="segment proposals of every image (the MCG stand-in), read by "
                                                  "every other row"))
VARIANTS.add("panoptic", Variant(rows="T1 MoIPool shape-invariant, T2 full, T3 n_r = 4, T4 / T5 JTSM (the default "
                                      "configuration)"))
VARIANTS.add("instance", Variant(options={"loss_semantic": False}, things_only=True,
                                 rows="T6 / T7: thing classes only, no semantic branch (Sec. 4.3)"))
VARIANTS.add("wsod", Variant(options={"loss_instance": False, "loss_semantic": False, "reestimate": False},
                             things_only=True, rows="T8: thing classes only, no segmentation refinement (Sec. 4.4)"))
for _pooling in ("roipool", "roialign", "moipool-interp"):
    VARIANTS.add(_pooling, Variant(options={"pooling": _pooling}, rows=f"T1 {_pooling}"))
_REFINE = {"refine-none": (False, False), "refine-is": (True, False), "refine-ss": (False, True),
           "refine-is-ss": (True, True)}
for _name, (_is, _ss) in _REFINE.items():
    VARIANTS.add(_name, Variant(options={"loss_instance": _is, "loss_semantic": _ss, "reestimate": False},
                                rows=f"T2 L_IS {'yes' if _is else 'no'}, L_SS {'yes' if _ss else 'no'}, "
                                     "no re-estimate"))
#: Table 3's sweep; n_r = 4 is the default run ``panoptic`` (Producer.same_runs), not trained twice.
SWEEP = (0, 1, 2, 3, 4, 5)
DEFAULT_NR = 4
for _nr in SWEEP:
    if _nr != DEFAULT_NR:
        VARIANTS.add(f"nr-{_nr}", Variant(options={"n_refine": _nr}, rows=f"T3 n_r = {_nr}"))
VARIANTS.add("top-proposal", Variant("top", rows="training-free baseline: the best-ranked proposal per labelled "
                                                 "class"))
VARIANTS.add("largest-proposal", Variant("largest", rows="training-free baseline: the largest proposal per labelled "
                                                         "class"))


# ---------------------------------------------------------------------------------------------
# proposals
# ---------------------------------------------------------------------------------------------


def _run_proposals(ctx: Any, run: RunFolder) -> None:
    from datasets.proposals import generate_proposals, recall, write_proposals

    config = proposal_config(ctx.params.jtsm)
    run.info["config"] = {**dataclasses.asdict(config), "colour_spaces": list(config.colour_spaces),
                          "scales": list(config.scales)}
    run.info["proposals"] = {}
    for split in (run.train, run.val):
        counts, best_things, best_stuff, seconds = [], [], [], 0.0
        for image in tqdm(split.images, desc=f"jtsm proposals {split.name}", unit="img", leave=False):
            rgb = split.load_image(image.id)
            t0 = time.perf_counter()
            found = generate_proposals(rgb, config, image_id=image.id)
            seconds += time.perf_counter() - t0
            write_proposals(run.out / split.name / f"{image.stem}.npz", found)
            masks, isthing = gt_segments(split, image.id)
            _, best = recall(found, masks)
            best_things += best[isthing].tolist()
            best_stuff += best[~isthing].tolist()
            counts.append(len(found))

        def rates(best: list[float]) -> dict[str, float | int]:
            b = np.asarray(best)
            return {"segments": len(b), **({f"recall@{t}": round(float((b >= t).mean()) * 100, 2) for t in (0.5, 0.7)}
                                           if len(b) else {}), **({"mean_best_iou": round(float(b.mean()), 4)}
                                                                   if len(b) else {})}

        run.info["proposals"][split.name] = {
            "images": len(counts), "proposals_per_image": round(float(np.mean(counts)), 1),
            "things": rates(best_things), "stuff": rates(best_stuff), "all": rates(best_things + best_stuff)}
        run.info["timing"][split.name] = {"seconds": round(seconds, 2), "seconds_per_image": round(seconds / max(
            len(counts), 1), 3), "proposals_per_second": round(sum(counts) / max(seconds, 1e-9), 1)}
        log.info("proposals %s: %s", split.name, run.info["proposals"][split.name])
        ctx.run.log_metrics({f"{split.name}.{kind}.{k}": v for kind in ("things", "stuff", "all")
                             for k, v in run.info["proposals"][split.name][kind].items()})


# ---------------------------------------------------------------------------------------------
# training rows and baselines
# ---------------------------------------------------------------------------------------------


def _run_training(args: argparse.Namespace, ctx: Any, variant: Variant, run: RunFolder) -> None:
    from methods.checkpointing import Checkpointing
    from methods.jtsm.train import Sample, predict, train_jtsm

    p = ctx.params.jtsm
    config = make_jtsm_config(p, variant.options)
    things, stuff = class_layout(run.dataset, variant.things_only)
    classes = things + stuff
    folder = proposals_folder(args.dataset)
    train_props = load_proposals(folder, run.train, config.max_proposals)  # all checked before training
    val_props = load_proposals(folder, run.val, config.max_proposals)
    labels = label_vectors(run.train, classes)
    samples = [Sample(im.id, run.train.load_image(im.id), train_props[im.id], labels[im.id]) for im in run.train.images]
    weights = backbone_checkpoint(args.dataset, p.backbone_init, p.backbone)
    network = {"backbone": p.backbone, "backbone_weights": weights, "classes": classes, "num_things": len(things)}
    run.info.update({"proposals_run": str(folder), "config": {**config.as_dict(), **network}})
    checkpointing = None
    if p.checkpoint_every:
        arrays = [a for s in samples for a in (s.image, s.labels, s.proposals[0], s.proposals[2])]
        checkpointing = Checkpointing(*run.checkpoint("train", run.info["config"], arrays), p.checkpoint_every)
    t0 = time.perf_counter()
    model = train_jtsm(samples, config=config, backbone=p.backbone, num_things=len(things), num_stuff=len(stuff),
                       seed=args.seed, backbone_weights=weights, desc=f"jtsm {args.variant}",
                       on_step=lambda step, values: ctx.run.log_metrics({f"train.{k}": v for k, v in values.items()},
                                                                        step=step),
                       checkpointing=checkpointing)
    seconds = time.perf_counter() - t0
    run.info["timing"]["train_seconds"] = round(seconds, 2)
    run.info["timing"]["images_per_second"] = round(config.iterations * config.batch_size / seconds, 2)
    save_weights(run.out / WEIGHTS, model, run.info["config"])
    t0 = time.perf_counter()
    counts = write_predictions(run.out, run.val, run.train, lambda split, image_id, props, full: predict(
        model, split.load_image(image_id), props, masks=full, panoptic=full), val_props, train_props, classes,
        panoptic=bool(stuff), desc=f"jtsm {args.variant}")
    run.info["timing"]["predict_seconds"] = round(time.perf_counter() - t0, 2)
    run.info["counts"] = counts
    ctx.run.log_metrics(counts)


def _run_baseline(args: argparse.Namespace, ctx: Any, variant: Variant, run: RunFolder) -> None:
    from methods.jtsm.train import baseline_prediction

    config = make_jtsm_config(ctx.params.jtsm)
    things, stuff = class_layout(run.dataset, False)
    classes = things + stuff
    folder = proposals_folder(args.dataset)
    props = {split.name: load_proposals(folder, split, config.max_proposals) for split in (run.train, run.val)}
    labels = {split.name: label_vectors(split, classes) for split in (run.train, run.val)}
    run.info.update({"proposals_run": str(folder), "rule": variant.kind, "config": config.as_dict()})
    counts = write_predictions(run.out, run.val, run.train, lambda split, image_id, p, full: baseline_prediction(
        p, labels[split.name][image_id], num_things=len(things), rule=variant.kind, config=config),
        props[run.val.name], props[run.train.name], classes, panoptic=bool(stuff), desc=f"jtsm {args.variant}")
    run.info["counts"] = counts


def _configure(parser: argparse.ArgumentParser) -> None:
    slot_argument(parser)
    parser.add_argument("--variant", required=True, choices=list(VARIANTS), help="table row (docs/jtsm.md)")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    params_argument(parser)


def _handle(args: argparse.Namespace) -> int:
    variant = VARIANTS.get(args.variant)
    seed = args.seed if variant.kind == "train" else 0
    with method_run(STAGE, slot=args.dataset, method="jtsm", variant=args.variant, seed=seed,
                    params_path=Path(args.params), supervision="image labels") as (ctx, run):
        if variant.kind == PROPOSALS:
            _run_proposals(ctx, run)
        elif variant.kind == "train":
            _run_training(args, ctx, variant, run)
        else:
            _run_baseline(args, ctx, variant, run)
    return 0


#: What the proposals stage reads: a change of the training params does not re-run it.
_PROPOSAL_PARAMS = ("jtsm.max_proposals", "jtsm.proposal_colour_spaces", "jtsm.proposal_scales", "jtsm.proposal_sigma")
_BASELINE_PARAMS = ("jtsm.max_proposals", "jtsm.panoptic_overlap", "jtsm.panoptic_score_threshold",
                    "jtsm.stuff_area_limit")


def _groups(slot: str) -> tuple[StageGroup, ...]:
    proposals = f"runs/{slot}/jtsm/{PROPOSALS}/seed0"
    train_deps = (f"runs/{slot}/pretrain", proposals)
    main = ("panoptic", "instance", "wsod") if slot == "voc" else ("panoptic", "instance")
    groups = [
        StageGroup(f"jtsm-{slot}-proposals", slot, (PROPOSALS,), args="--variant ${item.variant}", per_seed=False,
                   params=_PROPOSAL_PARAMS),
        StageGroup(f"jtsm-{slot}", slot, main, deps=train_deps),
        StageGroup(f"jtsm-{slot}-baseline", slot, ("top-proposal", "largest-proposal"),
                   args="--variant ${item.variant}", per_seed=False, deps=(proposals,), params=_BASELINE_PARAMS),
    ]
    if slot == "voc":
        groups.append(StageGroup("jtsm-voc-ablation", slot,
                                 ("roipool", "roialign", "moipool-interp", *_REFINE,
                                  *(f"nr-{n}" for n in SWEEP if n != DEFAULT_NR)), deps=train_deps))
    return tuple(groups)


PRODUCER = register(Producer(
    name="jtsm", title="JTSM", paper="jtsm", sections=("jtsm",),
    code=("bench/jtsm_outputs.py", "methods/jtsm", "methods/backbones.py", "methods/checkpointing.py",
          "datasets/proposals.py"),
    variants={name: v.rows for name, v in VARIANTS.items()},
    same_runs={f"nr-{DEFAULT_NR}": SameRun("panoptic", "jtsm.n_refine", DEFAULT_NR)},
    groups=_groups("voc") + _groups("coco")), __name__)
STAGE = declare_stage("jtsm", "data", *PRODUCER.sections)
COMMANDS.add("jtsm", Command("JTSM: panoptic, instance and WSOD outputs from image labels (and its proposals and "
                             "training-free baselines)", _configure, _handle))
