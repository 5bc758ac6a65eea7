"""``bench bestie`` — BESTIE (Kim et al., CVPR 2022) in the point and image-label settings.

Writes ``runs/<slot>/bestie/<variant>/seed<k>/``: ``val_instances.json`` (inference on val), ``model.pt``
(the trained network and its config, read by the inference rows),
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
``pam-l*`` (T8), the inference rows ``points-val-clean`` (the kept ``points`` network inferred with the
release's ``--val_clean``) and ``points-class-score`` (its val masks scored by the mean class probability),
and the training-free ``transfer-only`` baseline (the WSSS components with exactly one point, on train and
val, no network). The stage groups at the end of the module say which ``dvc.yaml`` stage runs which row.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import predictions as P
from bench.bestie_family import (
    checkpointing,
    curve_steps,
    kept_network,
    make_config,
    predict_val,
    pseudo_records,
    rule_records,
    transfer_rule,
    write_rule_outputs,
)
from bench.commands import COMMANDS, Command, params_argument, slot_argument
from bench.inputs import (
    image_label_classes,
    load_cues,
    load_semantic_maps,
    resolve_peaks,
    resolve_wsss_run,
    thing_classes,
)
from bench.io import write_json
from bench.methods import Producer, StageGroup, register, segmentor_group
from bench.paths import points_file, run_dir
from bench.registry import Registry
from bench.stages.base import declare_stage
from bench.stages.run import WEIGHTS, RunFolder, method_run, save_weights

log = logging.getLogger(__name__)
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
    #: an inference row: the variant whose kept network (same slot and seed) it infers with ``options``
    source: str | None = None


VARIANTS: Registry[Variant] = Registry("bestie variant")
#: Image setting: CAM maps as the WSSS (the stand-in for PMM, Table 4 mIoU from wsss/cam), PAM peaks as cues.
_IMAGE = dict(supervision="image", wsss="cam/seed0", peaks="pam/seed0")
VARIANTS.add("points", Variant("points", rows="T1/T2 point rows (and p2seg bestie† via the segmentor)"))
VARIANTS.add("transfer-only", Variant("transfer", rows="training-free baseline: WSSS components with one point"))
VARIANTS.add("points-val-clean", Variant("points", options={"val_clean": True}, source="points",
                                         rows="the point setting inferred with the val points (release --val_clean): "
                                              "like for like with transfer-only"))
VARIANTS.add("points-class-score", Variant("points", options={"score": "class"}, source="points",
                                           rows="the points network's val masks scored by the mean class probability "
                                                "alone (bestie.score: class), beside transfer-only"))
VARIANTS.add("image", Variant(**_IMAGE,
                              rows="T1/T2 image rows; T3 full; T4 PMM stand-in; T5 iters=0; T6; T7 α=0.7; T8"))
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


def _run_training(args: argparse.Namespace, ctx: Any, variant: Variant, run: RunFolder, wsss: Path) -> None:
    from methods.bestie.train import (
        Sample,
        annotated_instances,
        predict_outputs,
        refined_instances,
        targets_from_instances,
        train_bestie,
        transfer_samples,
    )

    p, dataset, train, info, out = ctx.params.bestie, run.dataset, run.train, run.info, run.out
    config = make_config(p, variant.supervision, args.seed, variant.options, slot=args.dataset)
    things = thing_classes(dataset)
    maps = load_semantic_maps(wsss / P.TRAIN_SEMANTIC_DIR, train)
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
        write_json(run.partial / curve_files[f"step {step}"], records(at_step[step][0]), indent=None)

    for round_ in range(variant.rounds + 1):
        t0 = time.perf_counter()
        if steps and round_ == last:
            initial = (rule_records(train, maps, cues, transfer_rule(config.min_area),
                                    tag=variant.supervision == "points")[0] if round_ == 0 else records(exported))
            write_json(run.partial / curve_files["step 0"], initial, indent=None)
        round_config = dataclasses.replace(config, seed=args.seed + round_)
        model = train_bestie(
            samples=samples, num_semantic=len(dataset.semantic_classes), thing_classes=things, config=round_config,
            on_step=lambda step, losses, r=round_: ctx.run.log_metrics(
                {f"train.r{r}.{k}": v for k, v in losses.items()}, step=step),
            checkpoints=steps if round_ == last else (),
            on_checkpoint=export_checkpoint,
            checkpointing=checkpointing(run, f"round{round_}", round_config, samples, p.checkpoint_every))
        seconds = time.perf_counter() - t0
        info["rounds"].append({"steps": config.iterations})
        info["timing"][f"round{round_}"] = {
            "train_seconds": round(seconds, 2),
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
        shutil.copyfile(run.partial / name, out / name)
    info["pseudo_curve"] = curve_files
    pseudo = records(exported)
    t0 = time.perf_counter()
    save_weights(out / WEIGHTS, model, config.to_dict())
    val_records = predict_val(model, run, things, config, desc="bestie val")
    info["timing"]["val_seconds"] = round(time.perf_counter() - t0, 2)
    write_json(out / P.INSTANCES, val_records, indent=None)
    write_json(out / P.PSEUDO, pseudo, indent=None)
    ctx.run.log_metrics({"val_instances": len(val_records), "train_pseudo_instances": len(pseudo)})


def _label_center(instance: Any, config: Any) -> tuple[float, float]:
    if config.refined_offset_target == "center":
        return instance.center
    ys, xs = np.nonzero(instance.mask)
    return float(ys.mean()), float(xs.mean())


def _run_inference(args: argparse.Namespace, ctx: Any, variant: Variant, run: RunFolder) -> None:
    """An inference row: the kept network of ``variant.source`` (same slot and seed) inferred on val with the
    row's options (the release's ``--val_clean``, the class score); nothing is trained."""
    assert variant.source is not None
    source = run_dir(args.dataset, "bestie", variant.source) / f"seed{args.seed}"
    config = make_config(ctx.params.bestie, variant.supervision, args.seed, variant.options, slot=args.dataset)
    things = thing_classes(run.dataset)
    model = kept_network(source, len(run.dataset.semantic_classes), len(things), config)
    run.info.update({"source": str(source), "config": config.to_dict()})
    t0 = time.perf_counter()
    val_records = predict_val(model, run, things, config, desc=f"bestie {args.variant} val")
    run.info["timing"]["val_seconds"] = round(time.perf_counter() - t0, 2)
    write_json(run.out / P.INSTANCES, val_records, indent=None)
    ctx.run.log_metrics({"val_instances": len(val_records)})


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


def _handle(args: argparse.Namespace) -> int:
    variant = VARIANTS.get(args.variant)
    with method_run(STAGE, slot=args.dataset, method="bestie", variant=args.variant, seed=args.seed,
                    params_path=Path(args.params), supervision=variant.supervision) as (ctx, run):
        p = ctx.params.bestie
        run.info["points_mode"] = p.point_mode
        if variant.source is not None:
            _run_inference(args, ctx, variant, run)
            return 0
        wsss = resolve_wsss_run(args.dataset, (args.wsss or variant.wsss).format(seed=args.seed))
        run.info["wsss_run"] = str(wsss)
        if variant.supervision == "transfer":
            run.info["transfer"] = write_rule_outputs(run, wsss, p.point_mode, transfer_rule(p.min_area))
        else:
            _run_training(args, ctx, variant, run, wsss)
    return 0


_CODE = ("bench/bestie_family.py", "methods/bestie", "methods/backbones.py", "methods/checkpointing.py")
_IMAGE_DEPS = ("runs/voc/pretrain", "runs/voc/wsss/cam/seed0", "runs/voc/wsss/pam/seed0")
PRODUCER = register(Producer(
    name="bestie", title="BESTIE", paper="bestie", sections=("bestie",), code=_CODE,
    variants={name: v.rows for name, v in VARIANTS.items()},
    external={name: f"another WSSS method's maps: `bench wsss --variant external` with wsss.external_dir, then "
                    f"`bench bestie --variant {name} --wsss <that run>`"
              for name in ("wsss-singlestage", "wsss-rrm")},
    groups=(
        StageGroup("bestie-points", "voc", ("points",),
                   deps=("data/points/voc", "runs/voc/pretrain", "runs/voc/wsss/points-partial/seed${item.seed}")),
        StageGroup("bestie-infer", "voc", ("points-val-clean", "points-class-score"),
                   deps=("data/points/voc", f"runs/voc/bestie/points/seed${{item.seed}}/{WEIGHTS}")),
        StageGroup("bestie-image", "voc", ("image",), deps=_IMAGE_DEPS),
        StageGroup("bestie-baseline", "voc", ("transfer-only",), per_seed=False,
                   deps=("data/points/voc", "runs/voc/wsss/points-partial/seed0")),
        StageGroup("bestie-ablation", "voc", ("abl-cam", "abl-pam", "abl-pam-iag", "abl-pam-iag-refine",
                                              "abl-pam-refine", "iter-1", "iter-2", "pam-off"), deps=_IMAGE_DEPS),
        StageGroup("bestie-peaks", "voc", tuple(n for n in VARIANTS if n.startswith("pam-") and n != "pam-off"),
                   deps=("runs/voc/pretrain", "runs/voc/wsss/cam/seed0", "runs/voc/wsss/${item.variant}/seed0")),
        StageGroup("bestie-wsss-gt", "voc", ("wsss-gt",),
                   deps=("runs/voc/pretrain", "runs/voc/wsss/oracle/seed0", "runs/voc/wsss/pam/seed0")),
        StageGroup("bestie-coco-points", "coco", ("points",),
                   deps=("data/points/coco", "runs/coco/pretrain", "runs/coco/wsss/points-partial/seed${item.seed}")),
        StageGroup("bestie-coco-image", "coco", ("image",),
                   deps=("runs/coco/pretrain", "runs/coco/wsss/cam/seed0", "runs/coco/wsss/pam/seed0")),
        StageGroup("bestie-one-point", "voc", ("points",), runner="point-filter", row="${item.variant}-one-point",
                   args="--source bestie/${item.variant} --row bestie/${item.variant}-one-point --seed ${item.seed}",
                   deps=("data/points/voc", "runs/voc/bestie/${item.variant}/seed${item.seed}/run.json",
                         "runs/voc/bestie/${item.variant}/seed${item.seed}/val_instances.json")),
        segmentor_group("segment-bestie", "bestie", "voc", ("points", "image")),
        segmentor_group("segment-bestie-baseline", "bestie", "voc", ("transfer-only",), per_seed=False),
        segmentor_group("segment-bestie-solov2", "bestie", "voc", ("points",), "solov2"),
        segmentor_group("segment-bestie-coco", "bestie", "coco", ("points",)),
    )), __name__)
STAGE = declare_stage("bestie", "data", *PRODUCER.sections)
COMMANDS.add("bestie", Command("BESTIE instance segmentation from points or image labels (and its baselines)",
                               _configure, _handle))
