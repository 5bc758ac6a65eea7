"""A cheap look at JTSM's mining alone: CorLoc of the MIL scores S^MIL and of the refinement heads' mean on
the first ``--eval`` training images over training, with every loss term (docs/jtsm.md, "Does it learn?").

Usage (in a repository holding the slot's canonical data, ``runs/<slot>/pretrain`` and the proposals run)::

    python -m bench.benchmarks.bench_jtsm_mil [--slot voc] [--eval 40] [--points 0 40 80 120] \\
        [--set lr=0.003 iterations=120 reestimate=false ...] [--init pretrain|scratch]

Much cheaper than ``bench_jtsm_learning`` (no val predictions, masks, panoptic maps or test flips): one view
per image, the top proposal of each labelled thing class is correct when its box overlaps a ground-truth box
of that class by IoU > 0.5 (CorLoc). ``--set`` overrides ``jtsm`` fields (JSON values) of the params file
(``--params``; default: the ``embedded`` profile rendered from the schema). Prints one line per point:
CorLoc of S^MIL and of the refinement mean, and the loss terms averaged over the 20 steps before it;
first, the CorLoc of the two training-free baselines on the same images.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench.benchmarks import cpu_model
from bench.config.loader import load_params, render_profile, validate_params
from bench.jtsm_outputs import class_layout, label_vectors, load_proposals, make_jtsm_config, proposals_folder
from bench.paths import backbone_checkpoint, canonical_dir
from datasets.canonical import CanonicalDataset


def _iou(box: np.ndarray, xywh: list[float]) -> float:
    x0, y0, w, h = xywh
    ix = max(0.0, min(box[2], x0 + w) - max(box[0], x0))
    iy = max(0.0, min(box[3], y0 + h) - max(box[1], y0))
    inter = ix * iy
    return inter / max((box[2] - box[0]) * (box[3] - box[1]) + w * h - inter, 1e-6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slot", default="voc")
    parser.add_argument("--eval", type=int, default=40, help="training images scored (the first N)")
    parser.add_argument("--points", type=int, nargs="+", default=[0, 40, 80, 120])
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=JSON", help="jtsm field overrides")
    parser.add_argument("--init", default=None, help="backbone_init override (scratch, pretrain or a folder)")
    parser.add_argument("--params", default=None, help="params file (default: the embedded profile)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from methods.backbones import normalize_images
    from methods.jtsm.segments import SegmentBatch
    from methods.jtsm.train import Sample, train_jtsm
    from methods.runtime import cap_cpu_threads

    threads = cap_cpu_threads()
    params = load_params(Path(args.params)) if args.params else validate_params(render_profile("embedded"),
                                                                                source="embedded profile")
    p = params.jtsm
    config = make_jtsm_config(p, {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.set)})
    dataset = CanonicalDataset(canonical_dir(args.slot))
    train = dataset.split(getattr(params.data, args.slot).train_split)
    things, stuff = class_layout(dataset, False)
    classes = things + stuff
    props = load_proposals(proposals_folder(args.slot), train, config.max_proposals)
    labels = label_vectors(train, classes)
    samples = [Sample(im.id, train.load_image(im.id), props[im.id], labels[im.id]) for im in train.images]
    scored = train.images[:args.eval]
    gt = {im.id: [(a["category_id"], a["bbox"]) for a in train.annotations(im.id)] for im in scored}

    @torch.no_grad()
    def corloc(model: torch.nn.Module) -> dict[str, float]:
        hits = {"MIL": 0, "refine": 0}
        total = 0
        for im in scored:
            segments = SegmentBatch.from_arrays([props[im.id]])
            x = normalize_images(torch.from_numpy(np.array(train.load_image(im.id))).permute(2, 0, 1)[None])
            out = model(x, segments)
            scores = {"MIL": out.mil_scores.numpy(), "refine": model.proposal_scores(out).numpy()}
            for c in np.flatnonzero(labels[im.id][:len(things)]):
                total += 1
                for name, s in scores.items():
                    box = props[im.id][2][int(s[:, c].argmax())]
                    hits[name] += any(_iou(box, g) > 0.5 for cat, g in gt[im.id] if cat == classes[c])
        return {k: round(100.0 * v / max(total, 1), 1) for k, v in hits.items()}

    def baselines() -> dict[str, float]:
        """CorLoc of the training-free baselines on the same images: proposal 0 (best ranked), the largest."""
        hits = {"top proposal": 0, "largest proposal": 0}
        total = 0
        for im in scored:
            sp, members, boxes, _ = props[im.id]
            areas = np.bincount(sp.ravel(), minlength=int(sp.max()) + 1)
            picks = {"top proposal": 0, "largest proposal": int(np.argmax([areas[m].sum() for m in members]))}
            for c in np.flatnonzero(labels[im.id][:len(things)]):
                total += 1
                for name, k in picks.items():
                    hits[name] += any(_iou(boxes[k], g) > 0.5 for cat, g in gt[im.id] if cat == classes[c])
        return {k: round(100.0 * v / max(total, 1), 1) for k, v in hits.items()}

    losses: dict[int, dict[str, float]] = {}
    t0 = time.perf_counter()

    def checkpoint(step: int, model: torch.nn.Module) -> None:
        window = [losses[s] for s in range(max(1, step - 19), step + 1) if s in losses]
        mean = {k: round(float(np.mean([w[k] for w in window])), 3) for k in window[0] if k != "lr"} if window else {}
        print(f"step {step}: CorLoc {corloc(model)}, loss (last 20 steps) {mean}, "
              f"{time.perf_counter() - t0:.0f} s", flush=True)

    init = args.init or p.backbone_init
    print(f"{args.slot}: {len(samples)} train images, CorLoc on {len(scored)}; {cpu_model()}, {threads} torch "
          f"threads; backbone_init {init}; overrides {args.set}", flush=True)
    print(f"baselines: CorLoc {baselines()}", flush=True)
    train_jtsm(samples, config=config, backbone=p.backbone, num_things=len(things), num_stuff=len(stuff),
               seed=args.seed, backbone_weights=backbone_checkpoint(args.slot, init, p.backbone), progress=False,
               on_step=lambda step, v: losses.__setitem__(step, v), checkpoints=args.points, on_checkpoint=checkpoint)
    print(f"total {time.perf_counter() - t0:.0f} s (wall), {time.process_time():.0f} s (CPU of this process)")


if __name__ == "__main__":
    main()
