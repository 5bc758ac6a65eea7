"""``bench evaluate`` — score run directories against the ground truth (stage ``evaluate-<slot>``).

Every metric family whose prediction file a run wrote is evaluated (the table below is
data, not a chain of ifs); the result is one metrics JSON with provenance, a DVC metric. A run that
exported train pseudo labels at training checkpoints (listed in its ``run.json`` as
``pseudo_curve``) also gets their pseudo-label metrics over training (``"curves"``, BESTIE Fig. 6).

``--all`` scores every run of a slot in one process (the pipeline's stage): a run whose fingerprint —
its files, the ground truth and points it is scored against, the ``eval`` params and the evaluation code —
matches the one its metrics file recorded is skipped, and the metrics of runs that no longer exist are
removed, so the stage's cost follows what changed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import platform
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from bench import predictions as P
from bench.commands import COMMANDS, Command, params_argument, slot_argument
from bench.config.loader import flatten
from bench.evaluation import evaluate_files
from bench.io import read_json, write_json
from bench.paths import METRICS, RUNS, SPECS, canonical_dir, metrics_file, points_file, run_dir
from bench.report.specs import CURVE_KEYS, load_specs, rows_fed_by
from bench.stages.base import declare_stage, run_stage
from bench.tracking import code_dirty, git_state
from bench.visualize import overlay_instances, save_rgb
from datasets.canonical import CanonicalDataset

log = logging.getLogger(__name__)
#: ``report`` names the runs the profile's stages write (report.variants, report.seeds): only those are scored.
STAGE = declare_stage("evaluate", "eval", "report")


@dataclass(frozen=True)
class Family:
    """A metric family: evaluator kind, the run's prediction file it reads, the split, its options."""

    kind: str
    prediction: str
    split_key: str  # "train_split" or "val_split" in run.json
    options: Callable[[Any, str, dict[str, Any]], dict[str, Any]]
    key_prefix: str = ""  # inserted after the family prefix, e.g. "train." → semantic.train.mIoU
    #: the evaluator's metric keys this family keeps (None: all); e.g. only CorLoc of the train detections
    keys: tuple[str, ...] | None = None
    label: str | None = None  # the family's name in counts / notes, where kind + key_prefix would repeat one

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        return f"{self.kind}.{self.key_prefix.rstrip('.')}" if self.key_prefix else self.kind

    def kept(self, key: str) -> bool:
        return self.keys is None or key in self.keys

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
    Family("coco", P.INSTANCES, "val_split",
           lambda p, slot, run: {"iou_types": list(p.eval.coco_iou_types), "backend": p.eval.coco_backend}),
    Family("pq", P.PANOPTIC_JSON, "val_split",
           lambda p, slot, run: {"workers": p.eval.workers, "backend": p.eval.coco_backend}),
    Family("semantic", P.SEMANTIC_DIR, "val_split", lambda p, slot, run: {}),
    Family("semantic", P.TRAIN_SEMANTIC_DIR, "train_split", lambda p, slot, run: {}, key_prefix="train."),
    PSEUDO_FAMILY,
    # WSOD (JTSM Table 8): box AP@0.5 (all-point and VOC07 11-point) of the val detections, and CorLoc of the
    # detections on the training images — the WSOD convention (CorLoc measures how well the training images'
    # objects are localised; py-faster-rcnn / the JTSM release compute it on trainval)
    Family("wsod", P.DETECTIONS, "val_split", lambda p, slot, run: {}, keys=("wsod.AP50", "wsod.AP50_07")),
    Family("wsod", P.TRAIN_DETECTIONS, "train_split", lambda p, slot, run: {}, keys=("wsod.CorLoc",),
           label="wsod.train"),
)


@cache
def _code_dirty() -> str:
    """Whether the code that scored (and, in one ``dvc repro``, trained) the runs had uncommitted edits; asked
    once per process."""
    return code_dirty()


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
    parser.add_argument("--all", action="store_true",
                        help="score every run of the slot (runs/<slot>/<method>/<variant>[/seed<k>]) whose predictions "
                             "or ground truth changed since its metrics were written; remove metrics of vanished runs")
    parser.add_argument("--method", help="method (or reference / segmentor / wsss) that wrote the run")
    parser.add_argument("--variant", help="variant (table row) of the run")
    parser.add_argument("--seed", type=int, default=None, help="seed of a trained run (runs/.../seed<k>)")
    params_argument(parser)


#: Files that never change what a run is scored on (wall times; see bench/io.write_run_record).
UNSCORED = ("timing.json",)
#: Code whose change re-scores every run.
EVALUATION_CODE = (Path(__file__), Path(__file__).parents[1] / "evaluation")


def _tree_digest(paths: list[Path], skip: tuple[str, ...] = ()) -> str:
    """sha256 over the relative names and bytes of every file under ``paths`` (sorted)."""
    digest = hashlib.sha256()
    for root in paths:
        files = [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file())
        for f in files:
            if f.name in skip or "__pycache__" in f.parts:
                continue
            digest.update(str(f.relative_to(root.parent)).encode())
            digest.update(f.read_bytes())
    return digest.hexdigest()


@cache
def _code_digest() -> str:
    return _tree_digest([p for p in EVALUATION_CODE if p.suffix in (".py", "")])


@cache
def _split_digest(slot: str, split: str) -> str:
    """The ground truth of one split (annotations, panoptic and semantic PNGs; not the images)."""
    root = canonical_dir(slot) / split
    return _tree_digest([p for p in sorted(root.iterdir()) if p.name != "images"])


def run_fingerprint(folder: Path, slot: str, run_info: dict[str, Any], eval_params: dict[str, Any]) -> str:
    """What a run's metrics depend on: its files, the splits' ground truth, the points it is scored with,
    the ``eval`` params and the evaluation code."""
    parts = [_tree_digest([folder], UNSCORED), _code_digest(), json.dumps(eval_params, sort_keys=True)]
    for key in ("train_split", "val_split"):
        if key in run_info:
            parts.append(_split_digest(slot, run_info[key]))
    if "points_mode" in run_info and "train_split" in run_info:
        points = points_file(slot, run_info["train_split"], run_info["points_mode"])
        if points.is_file():
            parts.append(_tree_digest([points]))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def slot_runs(slot: str) -> list[tuple[str, str, int | None, Path]]:
    """Every run folder of a slot holding a prediction file: ``(method, variant, seed, folder)``;
    ``runs/<slot>/<method>/<variant>/seed<k>/`` or, for unseeded rows, ``runs/<slot>/<method>/<variant>/``."""
    found = []
    for method_dir in sorted(p for p in (RUNS / slot).glob("*") if p.is_dir()):
        for variant_dir in sorted(p for p in method_dir.glob("*") if p.is_dir()):
            seeds = sorted(p for p in variant_dir.glob("seed*") if p.is_dir() and p.name[4:].isdigit())
            for folder, seed in ([(p, int(p.name[4:])) for p in seeds] or [(variant_dir, None)]):
                if any((folder / f.prediction).exists() for f in FAMILIES):
                    found.append((method_dir.name, variant_dir.name, seed, folder))
    return found


def _check_ground_truth(gt_root: Path, splits: list[str]) -> None:
    """The splits' ground truth through the one validation every reader shares
    (:func:`datasets.canonical.validate_instances`): a bad GT record is named as such, never blamed on a
    prediction file. Cached per file version."""
    for split in splits:
        path = gt_root / split / "instances.json"
        stamp = path.stat().st_mtime_ns if path.is_file() else None
        if _GT_CHECKED.get(str(path.resolve())) != stamp or stamp is None:
            CanonicalDataset(gt_root).split(split).instances
            _GT_CHECKED[str(path.resolve())] = stamp


_GT_CHECKED: dict[str, int | None] = {}


def score_run(ctx: Any, slot: str, method: str, variant: str, seed: int | None, folder: Path,
              fingerprint: str | None = None, pending: dict[Path, dict[str, Any]] | None = None) -> dict[str, float]:
    """Every metric family of one run folder → ``metrics/<slot>/<method>/<variant>/seed<k>.json``; with
    ``pending`` the document is put there (path → document) for the caller to write once everything succeeded."""
    run_info = read_json(folder / P.RUN_INFO)
    gt_root = canonical_dir(slot)
    _check_ground_truth(gt_root, sorted({run_info[k] for k in ("train_split", "val_split") if k in run_info}))
    metrics: dict[str, float] = {}
    counts: dict[str, Any] = {}
    per_class: dict[str, Any] = {}
    notes: list[str] = []
    for family in FAMILIES:
        prediction = folder / family.prediction
        if not prediction.exists():
            continue
        result = evaluate_files(family.kind, gt_root=gt_root, split=run_info[family.split_key],
                                predictions=prediction, **family.options(ctx.params, slot, run_info))
        data = result.to_dict()
        name = family.name
        metrics.update({family.rename(k): v for k, v in data["metrics"].items() if family.kept(k)})
        counts[name] = data["counts"]
        per_class.update({family.rename(k): v for k, v in data["per_class"].items() if family.kept(k)})
        notes += [f"{name}: {n}" for n in data["notes"]]
        log.info("%s/%s: %s: %s", method, variant, name,
                 ", ".join(f"{family.rename(k)}={v:.2f}" for k, v in result.metrics.items() if family.kept(k)))
    if not counts:
        raise ValueError(f"{folder}: no prediction files ({', '.join(f.prediction for f in FAMILIES)})")
    curves = pseudo_curves(folder, gt_root, run_info, ctx.params, slot)
    provenance = {
        "dataset": slot, "method": method, "variant": variant, "seed": seed or 0,
        "profile": ctx.profile, "run": run_info,
        "eval_params": flatten({"eval": ctx.params.eval.model_dump(mode="json")}),
        "git_commit": git_state().get("git.commit", "unknown"), "git_dirty": _code_dirty(),
        "python": platform.python_version(), "host": platform.node(),
        **({"fingerprint": fingerprint} if fingerprint else {}),
        **({"timing": read_json(folder / "timing.json")} if (folder / "timing.json").is_file() else {}),
    }
    out = metrics_file(slot, method, variant, seed or 0)
    document = {"metrics": metrics, "counts": counts, "per_class": per_class, "notes": notes,
                **({"curves": curves} if curves else {}), "provenance": provenance}
    if pending is None:
        write_json(out, document)
    else:
        pending[out] = document
    return metrics


def _score_slot(ctx: Any, slot: str) -> None:
    """``--all``: score the slot's changed runs, skip the unchanged, drop the metrics of runs that vanished or
    that the active profile's stages do not write (a folder left by another profile is not this profile's)."""
    from tqdm import tqdm

    from bench.methods import variant_runs

    eval_params = ctx.params.eval.model_dump(mode="json")
    written = variant_runs(ctx.params.report.variants)
    seeds = {*ctx.params.report.seeds, 0}
    runs = [(m, v, k, f) for m, v, k, f in slot_runs(slot) if v in written.get((slot, m), set()) and (k or 0) in seeds]
    kept: set[Path] = set()
    scored = skipped = 0
    pending: dict[Path, dict[str, Any]] = {}  # written only when every run scored: a failure changes no file
    logged: dict[str, float] = {}
    for method, variant, seed, folder in tqdm(runs, desc=f"evaluate {slot}", unit="run"):
        out = metrics_file(slot, method, variant, seed or 0)
        kept.add(out)
        fingerprint = run_fingerprint(folder, slot, read_json(folder / P.RUN_INFO), eval_params)
        if out.is_file() and read_json(out).get("provenance", {}).get("fingerprint") == fingerprint:
            skipped += 1
            continue
        metrics = score_run(ctx, slot, method, variant, seed, folder, fingerprint, pending=pending)
        logged.update({f"{method}/{variant}/seed{seed or 0}/{k}": v for k, v in metrics.items() if v is not None})
        scored += 1
    for out, document in pending.items():
        write_json(out, document)
    ctx.run.log_metrics(logged)
    removed = [f for f in sorted((METRICS / slot).rglob("seed*.json")) if f not in kept]
    for stale in removed:
        stale.unlink()
    log.info("%s: %d runs scored, %d unchanged, %d metrics files of vanished runs removed", slot, scored, skipped,
             len(removed))
    ctx.run.log_metrics({"runs.scored": scored, "runs.unchanged": skipped, "runs.removed": len(removed)})


def _handle(args: argparse.Namespace) -> int:
    if args.all:
        if args.method or args.variant or args.seed is not None:
            raise ValueError("--all scores every run of the slot: leave out --method, --variant and --seed")
        with run_stage(STAGE, params_path=Path(args.params), dataset=args.dataset) as ctx:
            _score_slot(ctx, args.dataset)
        return 0
    if not (args.method and args.variant):
        raise ValueError("name a run with --method and --variant (and --seed for a trained run), or pass --all")
    feeds = rows_fed_by(load_specs(SPECS), slot=args.dataset, method=args.method, variant=args.variant)
    with run_stage(STAGE, params_path=Path(args.params), method=args.method, variant=args.variant,
                   dataset=args.dataset, feeds=tuple(feeds)) as ctx:
        folder = run_dir(args.dataset, args.method, args.variant)
        if args.seed is not None:
            folder = folder / f"seed{args.seed}"
        pending: dict[Path, dict[str, Any]] = {}
        metrics = score_run(ctx, args.dataset, args.method, args.variant, args.seed, folder, pending=pending)
        # the overlays read the images: a corrupt one fails here, before the metrics file is touched
        _log_overlays(ctx, canonical_dir(args.dataset), read_json(folder / P.RUN_INFO)["val_split"],
                      folder / P.INSTANCES)
        for out, document in pending.items():
            write_json(out, document)
            ctx.run.log_artifact(out)
        ctx.run.log_metrics({k: v for k, v in metrics.items() if v is not None})
    return 0


COMMANDS.add("evaluate", Command(
    "score runs' predictions (VOC mAP, COCO AP, PQ, mIoU, pseudo-label quality, WSOD)", _configure, _handle,
    description="Score run folders against the ground truth. Reads: a run's run.json and whichever prediction "
                f"files it wrote ({', '.join(dict.fromkeys(f.prediction for f in FAMILIES))}), the canonical "
                "ground truth of its splits in data/canonical/<slot>/ (instances.json, panoptic.json + PNGs, "
                "semantic PNGs; validated first), the points file data/points/<slot>/<split>_<mode>.json for "
                "pseudo-label quality, and the eval params. Writes metrics/<slot>/<method>/<variant>/seed<k>.json "
                "(a DVC metric) only once every run scored: a failed evaluation leaves every metrics file as it was."))
