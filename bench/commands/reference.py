"""``bench reference`` — the reference rows (stage ``reference``): ``ground-truth`` and ``oracle-grouping``.

See :mod:`methods.reference`. Both write a full run directory (val instances, panoptic and
semantic predictions, train pseudo labels) so every evaluator is exercised.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench import predictions as P
from bench.commands import COMMANDS, Command, params_argument, slot_argument
from bench.io import atomic_path, read_json, write_json
from bench.methods import Producer, StageGroup, register
from bench.paths import canonical_dir, points_file, run_dir
from bench.registry import Registry
from bench.stages.base import declare_stage, run_stage
from datasets.canonical import CanonicalDataset, CanonicalSplit
from methods.reference import group_by_nearest_point

log = logging.getLogger(__name__)
STAGE = declare_stage("reference", "data")
#: Point mode the oracle grouping uses (BESTIE / P2Seg centre points).
ORACLE_POINT_MODE = "center"


def _ground_truth(split: CanonicalSplit, points: dict[int, list[dict]], out: Path, *, is_val: bool) -> list[dict]:
    """GT instances as predictions (score 1); for val also the GT panoptic and semantic maps."""
    records: list[dict] = []
    for image in split.images:
        for ann in split.annotations(image.id):
            if ann.get("iscrowd", 0):
                continue
            record = {"image_id": image.id, "category_id": ann["category_id"], "segmentation": ann["segmentation"],
                      "bbox": ann["bbox"], "score": 1.0}
            if not is_val:
                record["point_annotation_id"] = ann["id"]
            records.append(record)
    if is_val:
        shutil.copytree(split.root / "panoptic", out / P.PANOPTIC_DIR)
        shutil.copytree(split.root / "semantic", out / P.SEMANTIC_DIR)
        write_json(out / P.PANOPTIC_JSON, split.panoptic, indent=None)
    return records


def _oracle_grouping(split: CanonicalSplit, points: dict[int, list[dict]], out: Path, *, is_val: bool) -> list[dict]:
    """GT semantic map split by nearest thing point; stuff classes as one segment each."""
    dataset = split.dataset
    records: list[dict] = []
    writer = P.PanopticWriter(out / P.PANOPTIC_DIR) if is_val else None
    if is_val:
        (out / P.SEMANTIC_DIR).mkdir()
    for image in tqdm(split.images, desc=f"oracle-grouping {split.name}", unit="img", leave=False):
        semantic = split.semantic(image.id)
        things = [p for p in points.get(image.id, []) if p["isthing"]]
        xy = np.array([[p["x"], p["y"]] for p in things], dtype=np.int64).reshape(-1, 2)
        classes = np.array([dataset.semantic_index(p["category_id"]) for p in things], dtype=np.int64)
        grouped = group_by_nearest_point(semantic, xy, classes)
        masks = [grouped == i + 1 for i in range(len(things))]
        keep = [i for i, m in enumerate(masks) if m.any()]
        records += P.instance_records(
            image.id, [masks[i] for i in keep], [things[i]["category_id"] for i in keep], [1.0] * len(keep),
            point_annotation_ids=None if is_val else [things[i]["annotation_id"] for i in keep],
        )
        if writer is not None:
            segments = [(masks[i], things[i]["category_id"]) for i in keep]
            for index in np.unique(semantic):
                cat = dataset.semantic_classes[index] if index != dataset.void_label else None
                if cat is not None and not dataset.category_by_id[cat].isthing:
                    segments.append((semantic == index, cat))
            writer.add(image, segments)
            P.write_semantic_png(out / P.SEMANTIC_DIR / f"{image.stem}.png", semantic)
    if writer is not None:
        write_json(out / P.PANOPTIC_JSON, {"images": split.panoptic["images"], "annotations": writer.annotations(),
                                           "categories": dataset.meta["categories"]}, indent=None)
    return records


VARIANTS: Registry[Callable[..., list[dict]]] = Registry("reference variant")
VARIANTS.add("ground-truth", _ground_truth)
VARIANTS.add("oracle-grouping", _oracle_grouping)


def _load_points(slot: str, split: str) -> dict[int, list[dict]]:
    by_image: dict[int, list[dict]] = defaultdict(list)
    for p in read_json(points_file(slot, split, ORACLE_POINT_MODE))["points"]:
        by_image[p["image_id"]].append(p)
    return by_image


def _configure(parser: argparse.ArgumentParser) -> None:
    slot_argument(parser)
    parser.add_argument("--variant", required=True, choices=list(VARIANTS), help="which reference row")
    params_argument(parser)


def _handle(args: argparse.Namespace) -> int:
    build = VARIANTS.get(args.variant)
    with run_stage(STAGE, params_path=Path(args.params), method="reference", variant=args.variant,
                   dataset=args.dataset) as ctx:
        dataset = CanonicalDataset(canonical_dir(args.dataset))
        slot = getattr(ctx.params.data, args.dataset)
        train, val = slot.train_split, slot.val_split
        with atomic_path(run_dir(args.dataset, "reference", args.variant), directory=True) as out:
            val_records = build(dataset.split(val), _load_points(args.dataset, val), out, is_val=True)
            write_json(out / P.INSTANCES, val_records, indent=None)
            pseudo = build(dataset.split(train), _load_points(args.dataset, train), out, is_val=False)
            write_json(out / P.PSEUDO, pseudo, indent=None)
            write_json(out / P.RUN_INFO, {"method": "reference", "variant": args.variant, "dataset": args.dataset,
                                          "train_split": train, "val_split": val,
                                          "points_mode": ORACLE_POINT_MODE, "profile": ctx.profile})
        ctx.run.log_metrics({"val_instances": len(val_records), "train_pseudo_instances": len(pseudo)})
        log.info("%s/%s: %d val instances, %d train pseudo instances", args.dataset, args.variant,
                 len(val_records), len(pseudo))
    return 0


PRODUCER = register(Producer(
    name="reference", title="Reference rows", sections=(), code=("methods/reference.py",),
    variants={"ground-truth": "the ground truth scored as a prediction (self-check: every metric reads 100)",
              "oracle-grouping": "the ground-truth semantic map split by nearest centre point (point grouping's "
                                 "ceiling)"},
    groups=tuple(StageGroup(f"reference-{slot}", slot, ("ground-truth", "oracle-grouping"), per_seed=False,
                            args="--variant ${item.variant}", deps=(f"data/points/{slot}",),
                            outs=(f"runs/{slot}/reference/${{item.variant}}",)) for slot in ("voc", "coco"))),
    __name__)
COMMANDS.add("reference", Command("reference rows: ground-truth (self-check) and oracle-grouping (ceiling)",
                                  _configure, _handle))
