"""``bench segment`` — fine-tune an instance segmentor on train pseudo labels, predict val (stage ``segment``).

The "pseudo labels → fully supervised segmentor" rows of the papers (BESTIE's "MRCNN refinement",
P2Seg's Mask R-CNN / SOLOv2 rows) and the fully supervised upper bound (``--labels ground-truth``)::

    bench segment --dataset voc --labels ground-truth --row segmentor/mrcnn-gt --seed 0
    bench segment --dataset voc --labels bestie/points --row bestie/points-mrcnn --seed 0
    bench segment --dataset voc --labels p2seg/hrnet --row p2seg/hrnet-solov2 --arch solov2 --seed 0

Writes ``runs/<slot>/<row method>/<row variant>/seed<k>/`` atomically: ``val_instances.json`` (COCO
results, scored by ``bench evaluate``), ``model.pt`` (weights + what built them) and ``run.json``.
Training checkpoints live in ``seed<k>.partial/`` beside it, so an interrupted stage resumes when
re-run; that folder is removed once the run folder is in place. docs/segmentor.md has the details.

Backends (``segmentor.backend``) and architectures (``segmentor.arch``) are registries below.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from bench import predictions as P
from bench.commands import COMMANDS, Command, method_variant, params_argument, slot_argument
from bench.config.schema import SegmentorParams
from bench.io import atomic_path, read_json, write_run_record
from bench.methods import Producer, StageGroup, register
from bench.paths import canonical_dir, run_dir
from bench.segmentation import ARCHS, BACKENDS, GROUND_TRUTH, SegmentJob, job_fingerprint, resolve_labels
from bench.stages.base import declare_stage, run_stage, seed_everything
from bench.tracking import environment_record
from datasets.canonical import CanonicalDataset

if TYPE_CHECKING:  # torch is imported only when the stage runs, not by every `bench` command
    pass

log = logging.getLogger(__name__)
STAGE = declare_stage("segment", "data", "segmentor")
def _configure(parser: argparse.ArgumentParser) -> None:
    slot_argument(parser)
    parser.add_argument("--labels", required=True,
                        help=f"training labels: '{GROUND_TRUTH}' (the canonical train instances: the fully supervised "
                             "upper bound), METHOD/VARIANT (runs/<slot>/METHOD/VARIANT[/seed<k>]/train_pseudo.json, "
                             "a COCO results list) or a path to a COCO results list / instances JSON")
    parser.add_argument("--row", required=True, type=method_variant, metavar="METHOD/VARIANT",
                        help="the table row written: runs/<slot>/METHOD/VARIANT/seed<k>/ (e.g. segmentor/mrcnn-gt, "
                             "bestie/points-mrcnn)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (and the output folder seed<k>)")
    parser.add_argument("--labels-seed", type=int, default=None,
                        help="seed folder of METHOD/VARIANT pseudo labels (default: --seed)")
    parser.add_argument("--backend", choices=list(BACKENDS), default=None, help="override segmentor.backend")
    parser.add_argument("--arch", choices=list(ARCHS), default=None, help="override segmentor.arch")
    parser.add_argument("--backbone", default=None, help="override segmentor.backbone (a timm model name)")
    params_argument(parser)


def _handle(args: argparse.Namespace) -> int:
    row_method, row_variant = args.row
    with run_stage(STAGE, params_path=Path(args.params), method=row_method, variant=row_variant,
                   dataset=args.dataset, extra_tags={"labels": args.labels}) as ctx:
        overrides = {k: v for k, v in (("backend", args.backend), ("arch", args.arch), ("backbone", args.backbone))
                     if v is not None}
        p = SegmentorParams.model_validate({**ctx.params.segmentor.model_dump(), **overrides})
        backend = BACKENDS.get(p.backend)
        backend.check(p)  # before any work: e.g. detectron2 missing
        seed_everything(args.seed)
        from methods.runtime import cap_cpu_threads

        cpu_threads = cap_cpu_threads()
        from methods.segmentor.labels import CategoryMap, parse_training_labels

        slot = getattr(ctx.params.data, args.dataset)
        dataset = CanonicalDataset(canonical_dir(args.dataset))
        train, val = dataset.split(slot.train_split), dataset.split(slot.val_split)
        categories = CategoryMap(dataset.thing_ids)
        label_file = resolve_labels(args.dataset, args.labels, args.seed if args.labels_seed is None
                                    else args.labels_seed)
        source = label_file if label_file is not None else train.root / "instances.json"
        data = train.instances if label_file is None else read_json(label_file)
        labels = parse_training_labels(data, source=str(source),
                                       image_sizes={im.id: (im.height, im.width) for im in train.images},
                                       categories=categories, min_area=p.min_mask_area, soft_weights=p.soft_weights)
        counts = labels.counts()
        log.info("labels %s: %s", source, ", ".join(f"{k}={v}" for k, v in counts.items()))
        ctx.run.log_metrics({f"labels.{k}": v for k, v in counts.items()})

        out_dir = run_dir(args.dataset, row_method, row_variant) / f"seed{args.seed}"
        checkpoint_dir = out_dir.with_name(f"{out_dir.name}.partial")
        with atomic_path(out_dir, directory=True) as out:
            job = SegmentJob(args.dataset, dataset, train, val, labels, categories, p, args.seed, out, checkpoint_dir,
                             job_fingerprint(p, args.seed, source, dataset), ctx.run)
            backend.run(job)
            write_run_record(out / P.RUN_INFO, {
                "method": row_method, "variant": row_variant, "dataset": args.dataset, "seed": args.seed,
                "train_split": slot.train_split, "val_split": slot.val_split, "profile": ctx.profile,
                "cpu_threads": cpu_threads, **environment_record(),
                "labels": {"argument": args.labels, "file": str(source), **counts},
                "segmentor": p.model_dump(mode="json"), **job.info,
            })
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        ctx.run.log_metrics(job.info.get("timing", {}))
        log.info("%s: segmentor %s/%s written to %s", args.dataset, row_method, row_variant, out_dir)
    return 0


PRODUCER = register(Producer(
    name="segmentor", command="segment", title="Segmentor", sections=("segmentor",),
    code=("bench/segmentation.py", "methods/segmentor", "methods/backbones.py"),
    variants={"mrcnn-gt": "the segmentor trained on the ground truth: the fully supervised upper bound",
              "mrcnn-gt-detectron2": "the same row trained through detectron2 (segmentor.backend = detectron2)"},
    groups=tuple(StageGroup(f"segment-gt-{slot}", slot, (), row="mrcnn-gt",
                            args="--labels ground-truth --row segmentor/mrcnn-gt --seed ${item.seed}",
                            deps=(f"runs/{slot}/pretrain",))
                 for slot in ("voc", "coco")),
    # torchvision vs detectron2 Mask R-CNN on the same labels. detectron2 is not on the package registries, so no
    # stage runs it (the smoke profile, which runs every stage group, could not); a table can cite the row.
    external={"mrcnn-gt-detectron2": "detectron2 installed (docs/segmentor.md) and a ResNet backbone (`bench "
                                     "params use embedded --set segmentor.backbone=resnet18 "
                                     "segmentor.backbone_init=scratch`), "
                                     "then `bench segment --dataset voc --labels ground-truth --row "
                                     "segmentor/mrcnn-gt-detectron2 --backend detectron2 --seed 0`"}),
    __name__)
COMMANDS.add("segment", Command(
    "fine-tune an instance segmentor (Mask R-CNN, SOLOv2) on train pseudo labels or the ground truth; predict val",
    _configure, _handle,
    description="Fine-tune an instance segmentor (segmentor.backend / arch / backbone) on train pseudo labels or the "
                "ground truth and predict the val split. Writes runs/<slot>/METHOD/VARIANT/seed<k>/ "
                "(val_instances.json "
                "for `bench evaluate`, model.pt, run.json); training checkpoints in seed<k>.partial/ let a re-run of "
                "an interrupted stage resume. Params: the segmentor section (docs/segmentor.md)."))
