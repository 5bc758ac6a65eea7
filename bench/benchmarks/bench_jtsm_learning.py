"""Does JTSM learn? Its WSOD and panoptic scores over training against the two training-free baselines on
the same proposals (issue 28, "It must learn"; docs/jtsm.md).

Usage (in a repository where ``dvc repro`` — or ``bench data prepare``, ``bench pretrain`` and
``bench jtsm --variant proposals`` — has written the slot's canonical data, pretrained backbone and
proposals; the ``jtsm`` section of ``params.yaml`` gives the config)::

    python -m bench.benchmarks.bench_jtsm_learning [--slot voc] [--variant panoptic] [--points 4]

Trains the variant's configuration once (the pipeline's code and seed) and, at ``--points`` evenly spaced
steps (and step 0), scores its detections and panoptic maps: VOC box AP@0.5 on val, CorLoc on the
training images, PQ on val (the pipeline's evaluators). The baselines — per labelled class the best-ranked
proposal, or the largest — are scored the same way. Prints one table; wall times per phase below it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from tabulate import tabulate

from bench import predictions as P
from bench.benchmarks import cpu_model
from bench.config.loader import load_params
from bench.evaluation import evaluate_files
from bench.jtsm_outputs import (
    class_layout,
    label_vectors,
    load_proposals,
    make_jtsm_config,
    proposals_folder,
    write_predictions,
)
from bench.paths import backbone_checkpoint, canonical_dir
from datasets.canonical import CanonicalDataset

#: The variants' config overrides and class layouts (as bench/commands/jtsm.py registers them).
OPTIONS = {"panoptic": ({}, False),
           "wsod": ({"loss_instance": False, "loss_semantic": False, "reestimate": False}, True),
           "refine-none": ({"loss_instance": False, "loss_semantic": False, "reestimate": False}, False)}


def score(folder: Path, slot: str, train: str, val: str, panoptic: bool) -> dict[str, float]:
    root = canonical_dir(slot)
    out = {"AP50": evaluate_files("wsod", gt_root=root, split=val,
                                  predictions=folder / P.DETECTIONS).metrics["wsod.AP50"],
           "CorLoc": evaluate_files("wsod", gt_root=root, split=train,
                                    predictions=folder / P.TRAIN_DETECTIONS).metrics["wsod.CorLoc"],
           "mAP50 (inst.)": evaluate_files("voc", gt_root=root, split=val, predictions=folder / P.INSTANCES,
                                           iou_thresholds=[0.5]).metrics["voc.mAP50"]}
    if panoptic:
        pq = evaluate_files("pq", gt_root=root, split=val, predictions=folder / P.PANOPTIC_JSON).metrics
        out.update({"PQ": pq["pq.PQ"], "PQ_th": pq["pq.PQ_th"], "PQ_st": pq["pq.PQ_st"]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slot", default="voc")
    parser.add_argument("--variant", default="panoptic", choices=list(OPTIONS))
    parser.add_argument("--points", type=int, default=4, help="evaluations over training (plus step 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    from methods.jtsm.train import Sample, baseline_prediction, predict, train_jtsm
    from methods.runtime import cap_cpu_threads

    threads = cap_cpu_threads()
    p = load_params(Path(args.params)).jtsm
    options, things_only = OPTIONS[args.variant]
    config = make_jtsm_config(p, options)
    dataset = CanonicalDataset(canonical_dir(args.slot))
    data = getattr(load_params(Path(args.params)).data, args.slot)
    train, val = dataset.split(data.train_split), dataset.split(data.val_split)
    things, stuff = class_layout(dataset, things_only)
    classes = things + stuff
    folder = proposals_folder(args.slot)
    props = {s.name: load_proposals(folder, s, config.max_proposals) for s in (train, val)}
    rows: list[list[object]] = []
    times: dict[str, float] = {}
    tmp = Path(tempfile.mkdtemp(prefix="jtsm-learning-"))

    def evaluate(name: str, predict_fn, panoptic: bool) -> None:
        t0 = time.perf_counter()
        out = tmp / name.replace(" ", "_")
        out.mkdir()
        write_predictions(out, val, train, predict_fn, props[val.name], props[train.name], classes, panoptic, name)
        metrics = score(out, args.slot, train.name, val.name, panoptic)
        rows.append([name, *(f"{metrics.get(k, float('nan')):.1f}" for k in HEAD)])
        times[f"predict + score: {name}"] = time.perf_counter() - t0
        print(rows[-1], flush=True)

    labels = {s.name: label_vectors(s, things + class_layout(dataset, False)[1]) for s in (train, val)}
    for rule in ("top", "largest"):
        evaluate(f"baseline: {rule} proposal", lambda split, i, pr, full, rule=rule: baseline_prediction(
            pr, labels[split.name][i], num_things=len(things), rule=rule, config=config), True)

    train_labels = label_vectors(train, classes)
    samples = [Sample(im.id, train.load_image(im.id), props[train.name][im.id], train_labels[im.id])
               for im in train.images]
    steps = sorted({0, *(round(k * config.iterations / args.points) for k in range(1, args.points + 1))})
    losses: dict[int, float] = {}

    def checkpoint(step: int, model: torch.nn.Module) -> None:
        evaluate(f"JTSM {args.variant} step {step}", lambda split, i, pr, full: predict(
            model, split.load_image(i), pr, masks=full, panoptic=full), bool(stuff))

    t0 = time.perf_counter()
    train_jtsm(samples, config=config, backbone=p.backbone, num_things=len(things), num_stuff=len(stuff),
               seed=args.seed, backbone_weights=backbone_checkpoint(args.slot, p.backbone_init, p.backbone),
               on_step=lambda step, v: losses.__setitem__(step, v["loss"]), checkpoints=steps,
               on_checkpoint=checkpoint, desc=f"jtsm {args.variant}")
    eval_seconds = sum(v for k, v in times.items() if k.startswith("predict + score: JTSM"))
    times["train (without the evaluations)"] = time.perf_counter() - t0 - eval_seconds
    print(f"\n{args.slot}, {len(train)} train / {len(val)} val images, {config.iterations} steps × {config.batch_size} "
          f"images; {cpu_model()}, {threads} torch threads\n")
    print(tabulate(rows, headers=["run", *HEAD], tablefmt="github"))
    window = max(1, config.iterations // 10)
    curve = [[s, f"{sum(losses[k] for k in range(max(1, s - window + 1), s + 1)) / min(window, s):.3f}"]
             for s in steps if s > 0]
    print("\nmean training loss over the last", window, "steps:\n")
    print(tabulate(curve, headers=["step", "loss"], tablefmt="github"))
    print()
    print(tabulate([[k, f"{v:.1f}"] for k, v in times.items()], headers=["phase", "seconds"], tablefmt="github"))


HEAD = ["AP50", "CorLoc", "mAP50 (inst.)", "PQ", "PQ_th", "PQ_st"]

if __name__ == "__main__":
    main()
