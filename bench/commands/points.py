"""``bench points`` — sample point labels from the canonical ground truth (stage ``points``)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from bench.commands import COMMANDS, Command, params_argument, slot_argument
from bench.io import atomic_path, write_json
from bench.paths import canonical_dir, points_dir
from bench.stages.base import declare_stage, run_stage
from datasets.canonical import CanonicalDataset, CanonicalSplit
from datasets.points import Target, points_for_targets

log = logging.getLogger(__name__)
STAGE = declare_stage("points", "points")


def iter_targets(split: CanonicalSplit) -> Iterator[Target]:
    """Every non-crowd thing instance (instances.json) and stuff segment (panoptic.json) of a split."""
    isthing = {c.id: c.isthing for c in split.dataset.categories}
    for image in tqdm(split.images, desc=f"points {split.name}", unit="img", leave=False):
        for ann, mask in sorted(split.instance_masks(image.id), key=lambda am: am[0]["id"]):
            if not ann.get("iscrowd", 0):
                yield Target(image.id, ann["id"], ann["category_id"], True, mask)
        ids, segments = split.panoptic_map(image.id)
        for seg in sorted(segments, key=lambda s: s["id"]):
            if not isthing[seg["category_id"]] and not seg.get("iscrowd", 0):
                yield Target(image.id, seg["id"], seg["category_id"], False, ids == seg["id"])


def write_points(split: CanonicalSplit, out: Path, *, mode: str, seed: int, count: int) -> int:
    """Write the points file of one split and mode (docs/formats.md); returns the number of points."""
    points = points_for_targets(iter_targets(split), mode=mode, seed=seed, count=count)
    records = [
        {"id": i, "image_id": p.image_id, "annotation_id": p.annotation_id, "point_index": p.point_index,
         "category_id": p.category_id, "isthing": int(p.isthing), "x": p.x, "y": p.y}
        for i, p in enumerate(points, start=1)
    ]
    info = {"dataset": split.dataset.name, "split": split.name, "mode": mode, "seed": seed,
            "points_per_target": count if mode == "p10" else 1}
    write_json(out, {"info": info, "categories": split.dataset.meta["categories"], "points": records}, indent=None)
    return len(records)


def _configure(parser: argparse.ArgumentParser) -> None:
    slot_argument(parser)
    params_argument(parser)


def _handle(args: argparse.Namespace) -> int:
    with run_stage(STAGE, params_path=Path(args.params), dataset=args.dataset) as ctx:
        p = ctx.params.points
        dataset = CanonicalDataset(canonical_dir(args.dataset))
        with atomic_path(points_dir(args.dataset), directory=True) as tmp:
            for split in map(dataset.split, dataset.split_names):
                for mode in p.modes:
                    n = write_points(split, tmp / f"{split.name}_{mode}.json", mode=mode, seed=p.seed,
                                     count=p.p10_count)
                    ctx.run.log_metrics({f"points.{split.name}.{mode}": n})
                    log.info("%s %s %s: %d points", args.dataset, split.name, mode, n)
    return 0


COMMANDS.add("points", Command("sample point labels (uniform / center / p10) from the ground truth",
                               _configure, _handle))
