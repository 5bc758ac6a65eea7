"""``bench point-filter`` — a run's val instances kept by the one-point rule on the val points (stage
``point-filter``).

BESTIE's training-free baseline (``bestie/transfer-only``) takes the WSSS components that hold exactly
one point of their class as instances, and on val it reads the val points to do so. A trained
network's val inference reads no points, so "network vs baseline" mixes what the network learned
with the baseline's test-time information: the val points tell it which components are several
touching instances (two or more points, dropped) and which hold no object (no point, dropped). This
stage applies the same rule to another run's val predictions — a predicted mask is kept when exactly
one val point of its class lies in it, its record unchanged — and writes the result as a row of its
own, so that the network and the baseline can be compared with the same test-time information::

    bench point-filter --dataset voc --source bestie/points --row bestie/points-one-point --seed 0

Reads ``runs/<slot>/SOURCE/seed<k>/`` (``run.json``: the val split and the point mode;
``val_instances.json``) and that split's points file (``data/points/<slot>/<split>_<mode>.json``);
writes ``runs/<slot>/ROW/seed<k>/`` atomically: ``val_instances.json`` (the kept records, in file
order) and ``run.json`` (the source, the points file and how many masks held no / one / several
points). Scored by ``bench evaluate`` like any run.

The baseline's components never overlap, so each of its points keeps at most one instance; the
masks of a source whose instances overlap (a segmentor's, for one) are judged one by one, so a point
can keep several overlapping masks. BESTIE's and P2Seg's val instances do not overlap.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from bench import predictions as P
from bench.bestie_family import one_point_instances
from bench.commands import COMMANDS, Command, method_variant, params_argument, slot_argument
from bench.evaluation.gt import CanonicalGT
from bench.evaluation.records import validate_instance_records
from bench.inputs import load_cues
from bench.io import atomic_path, read_json, write_json, write_run_record
from bench.methods import Producer, register
from bench.paths import canonical_dir, points_file, run_dir
from bench.stages.base import declare_stage, run_stage
from datasets.canonical import CanonicalDataset

log = logging.getLogger(__name__)
STAGE = declare_stage("point-filter")

def _configure(parser: argparse.ArgumentParser) -> None:
    slot_argument(parser)
    parser.add_argument("--source", required=True, type=method_variant, metavar="METHOD/VARIANT",
                        help="the run whose val instances are filtered: runs/<slot>/METHOD/VARIANT/seed<k>/")
    parser.add_argument("--row", required=True, type=method_variant, metavar="METHOD/VARIANT",
                        help="the table row written: runs/<slot>/METHOD/VARIANT/seed<k>/ "
                             "(e.g. bestie/points-one-point)")
    parser.add_argument("--seed", type=int, default=0, help="seed folder of the source run and of the row")
    params_argument(parser)


def _handle(args: argparse.Namespace) -> int:
    (source_method, source_variant), (row_method, row_variant) = args.source, args.row
    if args.source == args.row:
        raise ValueError(f"--row {'/'.join(args.row)} would overwrite its --source; name another row")
    with run_stage(STAGE, params_path=Path(args.params), method=row_method, variant=row_variant,
                   dataset=args.dataset, extra_tags={"source": "/".join(args.source)}) as ctx:
        source = run_dir(args.dataset, source_method, source_variant) / f"seed{args.seed}"
        run_info = read_json(source / P.RUN_INFO)
        missing = [key for key in ("val_split", "points_mode") if key not in run_info]
        if missing:
            raise ValueError(f"{source / P.RUN_INFO}: no {' or '.join(map(repr, missing))}: the source must be a run "
                             "that records its val split and the point mode of its points (a BESTIE or P2Seg run)")
        val_split = run_info["val_split"]
        gt_root = canonical_dir(args.dataset)
        dataset = CanonicalDataset(gt_root)
        points_path = points_file(args.dataset, val_split, run_info["points_mode"])
        points = load_cues(points_path, dataset.split(val_split), dataset)
        records = read_json(source / P.INSTANCES)
        predictions = validate_instance_records(records, CanonicalGT.load(gt_root, val_split),
                                                source=str(source / P.INSTANCES), need_mask=True)
        kept, held = one_point_instances(predictions, points, dataset.semantic_index)
        records = records["annotations"] if isinstance(records, dict) else records
        log.info("%s/%s seed %d: %d of %d val instances hold exactly one val point (none: %d, several: %d)",
                 source_method, source_variant, args.seed, len(kept), len(records), held["none"], held["several"])
        out_dir = run_dir(args.dataset, row_method, row_variant) / f"seed{args.seed}"
        with atomic_path(out_dir, directory=True) as out:
            write_json(out / P.INSTANCES, [records[i] for i in kept], indent=None)
            write_run_record(out / P.RUN_INFO, {
                "method": row_method, "variant": row_variant, "dataset": args.dataset, "seed": args.seed,
                "val_split": val_split, "points_mode": run_info["points_mode"],
                "source": {"run": "/".join(args.source), "folder": str(source)},
                "points_file": str(points_path), "rule": "a mask is kept when exactly one val point of its class lies "
                                                         "in it (the one-point rule of bestie/transfer-only)",
                "val_instances_held_points": dict(held), "val_instances_kept": len(kept),
            })
        ctx.run.log_metrics({"val_instances_kept": len(kept),
                             **{f"val_instances_holding_{name}": n for name, n in held.items()}})
    return 0


PRODUCER = register(Producer(
    name="point-filter", title="One-point filter", sections=(), code=("bench/evaluation",), variants={},
    reads_data=False), __name__)
COMMANDS.add("point-filter", Command(
    "keep a run's val instances that hold exactly one val point of their class (the training-free baseline's rule)",
    _configure, _handle,
    description="Apply the one-point rule of BESTIE's training-free baseline (bestie/transfer-only: a WSSS component "
                "is an instance when exactly one point of its class lies in it) to another run's val predictions, "
                "reading the val points of the source run's point mode. Writes runs/<slot>/METHOD/VARIANT/seed<k>/ "
                "(val_instances.json for `bench evaluate`, run.json), so that a trained network and the baseline "
                "can be compared with the same test-time information (docs/bestie.md)."))
