"""Segmentor fine-tuning: training throughput, wall time and val metrics per seed (mean ± std).

Usage::

    python -m bench.benchmarks.bench_segmentor --root data/canonical/voc [--slot voc]
        [--labels ground-truth | FILE.json]
        [--seeds 0 1 2] [--threads 1] [--set iterations=400 batch_size=4 mask_rcnn.box_batch_size_per_image=64]
        [--json out.json]

Runs the ``segment`` stage's torchvision backend (the same code ``bench segment`` runs, without
MLflow and without checkpoints) once per seed on the canonical dataset at ``--root``, then scores
``val_instances.json`` with the harness' VOC (mAP at 0.25/0.5/0.7/0.75) and COCO (segm AP) evaluators.
``--set`` takes ``segmentor`` params (dotted keys for the nested sections), on top of the embedded
defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from bench.benchmarks import cpu_model
from bench.config.schema import SegmentorParams
from bench.evaluation import evaluate_files
from bench.segmentation import SegmentJob, _torchvision_run
from datasets.canonical import CanonicalDataset
from methods.segmentor.labels import CategoryMap, parse_training_labels

METRICS = ("voc.mAP25", "voc.mAP50", "voc.mAP70", "voc.mAP75", "coco.segm.AP")


def _params(assignments: list[str]) -> SegmentorParams:
    raw: dict[str, Any] = SegmentorParams().model_dump()
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = yaml.safe_load(value)
    return SegmentorParams.model_validate(raw)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="canonical dataset folder (data/canonical/voc)")
    ap.add_argument("--slot", default="voc", help="slot whose pretrain stage weights segmentor.backbone_init: pretrain "
                                                  "reads (runs/<slot>/pretrain)")
    ap.add_argument("--train-split", default="train_aug")
    ap.add_argument("--val-split", default="val")
    ap.add_argument("--labels", default="ground-truth", help="'ground-truth' or a pseudo-label JSON")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="segmentor params overrides")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    p = _params(args.set)
    dataset = CanonicalDataset(args.root)
    train, val = dataset.split(args.train_split), dataset.split(args.val_split)
    categories = CategoryMap(dataset.thing_ids)
    data = train.instances if args.labels == "ground-truth" else json.loads(Path(args.labels).read_text())
    labels = parse_training_labels(data, source=args.labels, image_sizes={i.id: (i.height, i.width) for i in train},
                                   categories=categories, min_area=p.min_mask_area, soft_weights=p.soft_weights)
    print(f"# {dataset.name}: {len(train)} train / {len(val)} val images, labels {args.labels}; {cpu_model()}, "
          f"nproc {os.cpu_count()}, torch {torch.__version__} with {torch.get_num_threads()} threads, "
          f"{platform.python_version()}")
    print(f"# segmentor: {json.dumps(p.model_dump(mode='json'))}")
    rows = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            job = SegmentJob(args.slot, dataset, train, val, labels, categories, p, seed, out, out / "ckpt", "", None)
            t0 = time.perf_counter()
            cpu0 = time.process_time()
            _torchvision_run(job)
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            metrics: dict[str, float] = {}
            for kind, options in (("voc", {"iou_thresholds": [0.25, 0.5, 0.7, 0.75]}),
                                  ("coco", {"iou_types": ["segm"]})):
                result = evaluate_files(kind, gt_root=Path(args.root), split=args.val_split,
                                        predictions=out / "val_instances.json", **options)
                metrics.update(result.metrics)
        t = {**job.info["training"], **job.info["timing"]}
        row = {"seed": seed, "wall_s": wall, "cpu_s": cpu, "train_s": t["train_seconds"],
               "images_per_second": t["images_per_second"], "predictions": job.info["predictions"],
               **{k: metrics.get(k, float("nan")) for k in METRICS}, "last_losses": t["last_losses"]}
        rows.append(row)
        print(f"seed {seed}: train+predict {wall:6.1f} s wall ({cpu:6.1f} s CPU), train {t['train_seconds']:6.1f} s, "
              f"{t['images_per_second']:.2f} img/s, {job.info['predictions']} detections | "
              + "  ".join(f"{k} {row[k]:5.1f}" for k in METRICS), flush=True)
    print("\n| metric | " + " | ".join(f"seed {r['seed']}" for r in rows) + " | mean ± std |")
    print("|---|" + "---|" * (len(rows) + 1))
    for key in ("images_per_second", "train_s", "wall_s", *METRICS):
        vals = np.array([r[key] for r in rows], dtype=float)
        print(f"| {key} | " + " | ".join(f"{v:.2f}" for v in vals) + f" | {vals.mean():.2f} ± {vals.std(ddof=0):.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
