"""Point2Mask Eq. 5 ablation (Table 4 semantic losses) on a canonical dataset: val mIoU.

Usage::

    python -m bench.benchmarks.bench_point_wsss --root /tmp/emb/data/canonical/voc \
        --points /tmp/emb/data/points/voc/train_aug_uniform.json [--train-split train_aug] \
        [--val-split val] [--configs partial lab rgb all] [--seeds 0 1] [--iterations 200] \
        [--batch-size 8] [--threads 2] [--json out.json]

Trains :func:`methods.wsss.point_train.train_point_wsss` once per (configuration, seed) and
prints val mIoU (confusion matrix against the canonical semantic maps, void = 255 ignored) and
the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from bench.evaluation.gt import CanonicalGT
from bench.evaluation.semantic import SemanticEvaluator
from datasets.canonical import CanonicalDataset
from methods.wsss.point_train import PointWsssConfig, point_label_maps, predict_semantic, train_point_wsss

CONFIGS = {
    "partial": dict(use_lab=False, use_rgb=False),
    "lab": dict(use_lab=True, use_rgb=False),
    "rgb": dict(use_lab=False, use_rgb=True),
    "all": dict(use_lab=True, use_rgb=True),
}


def _overrides(assignments: list[str]) -> dict[str, float | int | bool]:
    """``["alpha_lab=1", "hflip=false"]`` -> typed PointWsssConfig overrides (YAML scalars)."""
    import yaml

    out = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or key not in PointWsssConfig.__dataclass_fields__:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE with a PointWsssConfig field")
        out[key] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--root", required=True)
    ap.add_argument("--points", required=True)
    ap.add_argument("--train-split", default="train_aug")
    ap.add_argument("--val-split", default="val")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--loss-stride", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                    help="PointWsssConfig overrides, e.g. alpha_lab=1 pairwise_warmup=0.3")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    ds = CanonicalDataset(args.root)
    train, val = ds.split(args.train_split), ds.split(args.val_split)
    with open(args.points, encoding="utf-8") as f:
        maps = point_label_maps(json.load(f), train, ds)
    ids = [im.id for im in train]
    images = [train.load_image(i) for i in ids]
    pmaps = [maps[i] for i in ids]
    val_images = [val.load_image(im.id) for im in val]
    val_gt = CanonicalGT.load(Path(args.root), args.val_split)
    c = len(ds.semantic_classes)
    print(f"# {ds.name}: {len(images)} train / {len(val_images)} val images, C={c}, "
          f"{sum(int((m != 255).sum()) for m in pmaps)} points; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, nproc {os.cpu_count()}")
    rows = []
    for name in args.configs:
        for seed in args.seeds:
            kw = dict(CONFIGS[name], iterations=args.iterations, batch_size=args.batch_size, seed=seed,
                      loss_stride=args.loss_stride)
            if args.lr is not None:
                kw["lr"] = args.lr
            kw.update(_overrides(args.set))
            cfg = PointWsssConfig(**kw)
            last: dict[str, float] = {}
            t0 = time.perf_counter()
            model = train_point_wsss(images=images, point_maps=pmaps, num_classes=c, config=cfg, progress=False,
                                     on_step=lambda s, v: last.update(v))
            t_train = time.perf_counter() - t0
            preds = predict_semantic(model, val_images, batch_size=16)
            evaluator = SemanticEvaluator(val_gt)
            for im, pred in zip(val, preds):
                evaluator.process(im.id, pred)
            m = evaluator.summarize()["semantic.mIoU"] / 100
            iou = np.array([v / 100 for v in next(iter(evaluator.per_class().values())).values()])
            row = dict(config=name, seed=seed, miou=m, iou=[None if np.isnan(v) else float(v) for v in iou],
                       train_s=t_train, final_losses=last)
            rows.append(row)
            print(f"{name:8s} seed {seed}: mIoU {100 * m:5.1f}  train {t_train:6.1f} s  "
                  f"per-class {' '.join(f'{100 * v:4.1f}' for v in iou)}  last {last}", flush=True)
    print("\n| config | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean |")
    print("|---|" + "---|" * (len(args.seeds) + 1))
    for name in args.configs:
        vals = [r["miou"] for r in rows if r["config"] == name]
        print(f"| {name} | " + " | ".join(f"{100 * v:.1f}" for v in vals) + f" | {100 * np.mean(vals):.1f} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(dict(args=vars(args), rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
