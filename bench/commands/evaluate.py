"""``bench evaluate`` — score a run directory against the ground truth (stage ``evaluate``).

Every metric family whose prediction file the run wrote is evaluated (the table below is
data, not a chain of ifs); the result is one metrics JSON with provenance, a DVC metric. A run that
exported train pseudo labels at training checkpoints (listed in its ``run.json`` as
``pseudo_curve``) also gets their pseudo-label metrics over training (``"curves"``, BESTIE Fig. 6).
"""

from __future__ import annotations

import argparse
import logging
import platform
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import predictions as P
from bench.commands import COMMANDS, Command, params_argument, slot_argument
from bench.config.loader import flatten
from bench.evaluation import evaluate_files
from bench.io import read_json, write_json
from bench.paths import SPECS, canonical_dir, metrics_file, points_file, run_dir
from bench.report.specs import CURVE_KEYS, load_specs, rows_fed_by
from bench.stages.base import declare_stage, run_stage
from bench.tracking import git_state
from bench.visualize import overlay_instances, save_rgb
from datasets.canonical import CanonicalDataset

log = logging.getLogger(__name__)
STAGE = declare_stage("evaluate", "eval")


@dataclass(frozen=True)
class Family:
    """A metric family: evaluator kind, the run's prediction file it reads, the split, its options."""

    kind: str
    prediction: str
    split_key: str  # "train_split" or "val_split" in run.json
    options: Callable[[Any, str, dict[str, Any]], dict[str, Any]]
    key_prefix: str = ""  # inserted after the family prefix, e.g. "train." → semantic.train.mIoU

    @property
    def name(self) -> str:
        return f"{self.kind}.{self.key_prefix.rstrip('.')}" if self.key_prefix else self.kind

    def rename(self, key: str) -> str:
        """The metric key as stored: ``semantic.mIoU`` → ``semantic.train.mIoU`` for the train maps."""
        family, _, rest = key.partition(".")
        return f"{family}.{self.key_prefix}{rest}" if self.key_prefix else key


PSEUDO_FAMILY = Family("pseudo", P.PSEUDO, "train_split",
                       lambda p, slot, run: {"points": points_file(slot, run["train_split"], run["points_mode"])})


def _voc_options(params: Any, slot: str, run: dict[str, Any]) -> dict[str, Any]:
    return {"iou_thresholds": list(params.eval.voc_iou_thresholds)}


FAMILIES = (
    Family("voc", P.INSTANCES, "val_split", _voc_options),
    # the train pseudo labels under the VOC protocol (voc.train.mAP*): P2Seg's release validates this
    # way — its validate() scores the point-guided instance maps of the training images (docs/p2seg.md)
    Family("voc", P.PSEUDO, "train_split", _voc_options, key_prefix="train."),
    Family("coco", P.INSTANCES, "val_split", lambda p, slot, run: {"iou_types": list(p.eval.coco_iou_types)}),
    Family("pq", P.PANOPTIC_JSON, "val_split", lambda p, slot, run: {"workers": p.eval.workers}),
    Family("semantic", P.SEMANTIC_DIR, "val_split", lambda p, slot, run: {}),
    Family("semantic", P.TRAIN_SEMANTIC_DIR, "train_split", lambda p, slot, run: {}, key_prefix="train."),
    PSEUDO_FAMILY,
)


def pseudo_curves(folder: Path, gt_root: Path, run_info: dict[str, Any], params: Any,
                  slot: str) -> dict[str, list[list[float]]]:
    """The pseudo family on the train pseudo labels a run exported during training — ``run.json``'s
    ``"pseudo_curve": {"step <N>": "<file relative to the run>"}`` — as metric key
    (:data:`~bench.report.specs.CURVE_KEYS`) → ``[[N, value], ...]`` by step; empty when there are none."""
    exported = run_info.get("pseudo_curve") or {}
    steps: list[tuple[int, Path]] = []
    for label, name in exported.items():
        number = label.removeprefix("step ")
        if not number.isdigit():
            raise ValueError(f"{folder / P.RUN_INFO}: pseudo_curve key {label!r} is not 'step <N>'")
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: listed in {folder / P.RUN_INFO} (pseudo_curve) but missing")
        steps.append((int(number), path))
    curves: dict[str, list[list[float]]] = {}
    for step, path in sorted(steps):
        result = evaluate_files("pseudo", gt_root=gt_root, split=run_info[PSEUDO_FAMILY.split_key], predictions=path,
                                **PSEUDO_FAMILY.options(params, slot, run_info))
        for key in CURVE_KEYS:
            curves.setdefault(key, []).append([step, result.metrics[key]])
    return curves


def _log_overlays(ctx: Any, gt_root: Path, split_name: str, predictions: Path) -> None:
    """Log the first ``tracking.overlays`` val images with their predicted instances to MLflow."""
    if ctx.overlays == 0 or not predictions.exists():
        return
    split = CanonicalDataset(gt_root).split(split_name)
    by_image: dict[int, list[dict]] = {}
    for record in read_json(predictions):
        by_image.setdefault(record["image_id"], []).append(record)
    with tempfile.TemporaryDirectory() as tmp:
        for image in split.images[: ctx.overlays]:
            path = Path(tmp) / f"overlay_{image.stem.replace('/', '_')}.png"
            save_rgb(path, overlay_instances(split.load_image(image.id), by_image.get(image.id, [])), scale=2)
            ctx.run.log_artifact(path, subdir="overlays")


def _configure(parser: argparse.ArgumentParser) -> None:
    slot_argument(parser)
    parser.add_argument("--method", required=True, help="method (or reference / segmentor) that wrote the run")
    parser.add_argument("--variant", required=True, help="variant (table row) of the run")
    parser.add_argument("--seed", type=int, default=None, help="seed of a trained run (runs/.../seed<k>)")
    params_argument(parser)


def _handle(args: argparse.Namespace) -> int:
    feeds = rows_fed_by(load_specs(SPECS), slot=args.dataset, method=args.method, variant=args.variant)
    with run_stage(STAGE, params_path=Path(args.params), method=args.method, variant=args.variant,
                   dataset=args.dataset, feeds=tuple(feeds)) as ctx:
        folder = run_dir(args.dataset, args.method, args.variant)
        if args.seed is not None:
            folder = folder / f"seed{args.seed}"
        run_info = read_json(folder / P.RUN_INFO)
        gt_root = canonical_dir(args.dataset)
        metrics: dict[str, float] = {}
        counts: dict[str, Any] = {}
        per_class: dict[str, Any] = {}
        notes: list[str] = []
        for family in FAMILIES:
            prediction = folder / family.prediction
            if not prediction.exists():
                continue
            result = evaluate_files(family.kind, gt_root=gt_root, split=run_info[family.split_key],
                                    predictions=prediction, **family.options(ctx.params, args.dataset, run_info))
            data = result.to_dict()
            name = family.name
            metrics.update({family.rename(k): v for k, v in data["metrics"].items()})
            counts[name] = data["counts"]
            per_class.update({family.rename(k): v for k, v in data["per_class"].items()})
            notes += [f"{name}: {n}" for n in data["notes"]]
            log.info("%s: %s", name, ", ".join(f"{family.rename(k)}={v:.2f}" for k, v in result.metrics.items()))
        if not counts:
            raise ValueError(f"{folder}: no prediction files ({', '.join(f.prediction for f in FAMILIES)})")
        curves = pseudo_curves(folder, gt_root, run_info, ctx.params, args.dataset)
        if curves:
            log.info("pseudo over training: %s", ", ".join(f"step {s}: tp50={v:g}" for s, v in curves["pseudo.tp50"]))
        seed = args.seed or 0
        provenance = {
            "dataset": args.dataset, "method": args.method, "variant": args.variant, "seed": seed,
            "profile": ctx.profile, "run": run_info,
            "eval_params": flatten({"eval": ctx.params.eval.model_dump(mode="json")}),
            "git_commit": git_state().get("git.commit", "unknown"),
            "python": platform.python_version(), "host": platform.node(),
        }
        out = metrics_file(args.dataset, args.method, args.variant, seed)
        write_json(out, {"metrics": metrics, "counts": counts, "per_class": per_class, "notes": notes,
                         **({"curves": curves} if curves else {}), "provenance": provenance})
        ctx.run.log_metrics({k: v for k, v in metrics.items() if v is not None})
        ctx.run.log_artifact(out)
        _log_overlays(ctx, gt_root, run_info["val_split"], folder / P.INSTANCES)
    return 0


COMMANDS.add("evaluate", Command("score a run's predictions (VOC mAP, COCO AP, PQ, mIoU, pseudo-label quality)",
                                 _configure, _handle))
