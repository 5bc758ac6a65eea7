"""``bench points`` — sample point labels from the canonical ground truth (stage ``points``)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from pathlib import Path

from pycocotools import mask as mask_utils
from tqdm import tqdm

from bench.commands import COMMANDS, Command, params_argument, slot_argument
from bench.io import atomic_path, read_json, write_json
from bench.paths import canonical_dir, points_dir
from bench.stages.base import declare_stage, run_stage
from datasets.panoptic_png import read_panoptic_png
from datasets.points import Target, points_for_targets

log = logging.getLogger(__name__)
STAGE = declare_stage("points", "points")


def iter_targets(root: Path, split: str) -> Iterator[Target]:
    """Every non-crowd thing instance (instances.json) and stuff segment (panoptic.json) of a split."""
    instances = read_json(root / split / "instances.json")
    panoptic = read_json(root / split / "panoptic.json")
    isthing = {c["id"]: bool(c["isthing"]) for c in panoptic["categories"]}
    by_image: dict[int, list[dict]] = {}
    for ann in instances["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    pan_by_image = {a["image_id"]: a for a in panoptic["annotations"]}
    for image in tqdm(instances["images"], desc=f"points {split}", unit="img", leave=False):
        for ann in sorted(by_image.get(image["id"], []), key=lambda a: a["id"]):
            if ann.get("iscrowd", 0):
                continue
            mask = mask_utils.decode(ann["segmentation"]).astype(bool)
            yield Target(image["id"], ann["id"], ann["category_id"], True, mask)
        pan = pan_by_image.get(image["id"])
        stuff = [s for s in (pan or {}).get("segments_info", []) if not isthing[s["category_id"]] and not s.get("iscrowd", 0)]
        if not stuff:
            continue
        ids = read_panoptic_png(root / split / pan["file_name"])
        for seg in sorted(stuff, key=lambda s: s["id"]):
            yield Target(image["id"], seg["id"], seg["category_id"], False, ids == seg["id"])


def write_points(root: Path, split: str, out: Path, *, mode: str, seed: int, count: int) -> int:
    meta = read_json(root / "meta.json")
    points = points_for_targets(iter_targets(root, split), mode=mode, seed=seed, count=count)
    records = [
        {"id": i, "image_id": p.image_id, "annotation_id": p.annotation_id, "point_index": p.point_index,
         "category_id": p.category_id, "isthing": int(p.isthing), "x": p.x, "y": p.y}
        for i, p in enumerate(points, start=1)
    ]
    info = {"dataset": meta["name"], "split": split, "mode": mode, "seed": seed,
            "points_per_target": count if mode == "p10" else 1}
    write_json(out, {"info": info, "categories": meta["categories"], "points": records}, indent=None)
    return len(records)


def _configure(parser: argparse.ArgumentParser) -> None:
    slot_argument(parser)
    params_argument(parser)


def _handle(args: argparse.Namespace) -> int:
    with run_stage(STAGE, params_path=Path(args.params), dataset=args.dataset) as ctx:
        p = ctx.params.points
        root = canonical_dir(args.dataset)
        meta = read_json(root / "meta.json")
        with atomic_path(points_dir(args.dataset), directory=True) as tmp:
            for split in meta["splits"]:
                for mode in p.modes:
                    n = write_points(root, split, tmp / f"{split}_{mode}.json", mode=mode, seed=p.seed, count=p.p10_count)
                    ctx.run.log_metrics({f"points.{split}.{mode}": n})
                    log.info("%s %s %s: %d points", args.dataset, split, mode, n)
    return 0


COMMANDS.add("points", Command("sample point labels (uniform / center / p10) from the ground truth", _configure, _handle))
