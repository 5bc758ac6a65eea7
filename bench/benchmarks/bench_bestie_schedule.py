"""What BESTIE's heads learn with the length of the schedule, and where val mAP50 is won or lost.

Usage (after ``dvc repro bestie-points``, which builds every input it reads)::

    python -m bench.benchmarks.bench_bestie_schedule [--iterations 200 3000] [--params params.yaml]

For each ``--iterations`` (the warm-up scaled with it, ``warmup_iterations`` × iterations /
``bestie.iterations``) it trains the ``points`` row exactly as ``bench bestie --variant points --seed 0``
does (the same params, seed-0 WSSS maps, training seed, 2 CPU threads: at the default schedule the
weights — and the val numbers — are the stage's) and prints one markdown row:

- training wall time and images per second;
- the offset head on the first ``--probe-images`` training images, against the targets of the
  semantic knowledge transfer (one-point components; Eq. 1's offsets to the centroid): mean predicted
  and target |dy| + |dx|, mean L1 error, mean cosine between predicted and target vectors;
- the centre head at the GT train points of those images: median value and the share above the
  inference threshold (``bestie.infer_threshold``, 0.1);
- val: mAP25 / mAP50 / mAP70 of the release's inference (score = centre score × mean class probability,
  ``get_ins_map``), mAP50 of the same masks ranked by the mean class probability alone (``bestie.score:
  class``, the pipeline's ``points-class-score`` row at the default schedule), mAP50 of the
  same masks ranked by their best IoU with a same-class GT instance (the ceiling any score could reach),
  and how many GT instances the masks hit at IoU ≥ 0.5;
- how many val masks hold no / one / several val points of their class, and mAP50 of the release's
  ranking over the masks that hold exactly one (the ``transfer-only`` baseline's test-time rule,
  ``bench point-filter``: the pipeline's ``points-one-point`` row at the default schedule).

The last three separate what the network segments from how the release's score ranks it: the
``transfer-only`` baseline it is compared with has no ranking problem (its instances hold one point
each). Slow: ≈ 0.1 s per training step on a 2-core CPU plus ≈ 30 s of probing and val inference
per schedule (measured: docs/bestie.md, Findings).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import predictions as P
from bench.benchmarks import cpu_model
from bench.bestie_family import HELD, held, make_config, points_held
from bench.config.loader import load_params
from bench.evaluation.api import evaluate_files
from bench.inputs import load_cues, load_semantic_maps, resolve_wsss_run, thing_classes
from bench.paths import canonical_dir, points_file
from datasets.canonical import CanonicalDataset, CanonicalSplit
from methods.bestie.transfer import offset_field
from methods.runtime import cap_cpu_threads

SLOT = "voc"
WSSS_RUN = "points-partial/seed0"


def _train_samples(split: CanonicalSplit, dataset: CanonicalDataset, config: Any, point_mode: str) -> list[Any]:
    """The stage's training samples: images, seed-0 WSSS maps and the transfer's pseudo targets."""
    from methods.bestie.train import transfer_samples

    maps = load_semantic_maps(resolve_wsss_run(SLOT, WSSS_RUN) / P.TRAIN_SEMANTIC_DIR, split)
    cues = load_cues(points_file(SLOT, split.name, point_mode), split, dataset)
    return transfer_samples([split.load_image(im.id) for im in split.images], [maps[im.id] for im in split.images],
                            [cues[im.id].yx for im in split.images], [cues[im.id].classes for im in split.images],
                            config)[0]


def head_fit(model: Any, samples: list[Any], things: list[int], threshold: float) -> dict[str, float]:
    """Offset head against the transfer's targets and centre head at the GT points (no flip); the
    share of points whose centre value exceeds the inference ``threshold``."""
    from methods.bestie.train import predict_outputs

    pred_mag, target_mag, l1, cosine, centre = [], [], [], [], []
    outputs = predict_outputs(model, [s.image for s in samples])
    for sample, out in zip(samples, outputs):
        t = sample.targets
        labelled = t.instance_map > 0
        if labelled.any():
            target = offset_field(t.instance_map, t.centers)[:, labelled]
            pred = out["offset"][:, labelled]
            pred_mag.append(np.abs(pred).sum(0).mean())
            target_mag.append(np.abs(target).sum(0).mean())
            l1.append(np.abs(pred - target).sum(0).mean())
            norm = np.linalg.norm(pred, axis=0) * np.linalg.norm(target, axis=0)
            cosine.append(((pred * target).sum(0) / np.maximum(norm, 1e-6)).mean())
        for (y, x), cls in zip(np.round(t.cues).astype(int), t.cue_classes):
            centre.append(out["center"][things.index(int(cls)), y, x])
    values = np.asarray(centre)
    return {"pred": float(np.mean(pred_mag)), "target": float(np.mean(target_mag)), "l1": float(np.mean(l1)),
            "cosine": float(np.mean(cosine)), "centre_median": float(np.median(values)),
            "centre_share": float((values > threshold).mean())}


def _voc_map(records: list[dict[str, Any]], split: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "predictions.json"
        path.write_text(json.dumps(records))
        return evaluate_files("voc", gt_root=canonical_dir(SLOT), split=split, predictions=path).metrics


def val_ranking(model: Any, val: CanonicalSplit, things: list[int], config: Any, point_mode: str) -> dict[str, float]:
    """The release's val inference, scored three ways and filtered by the val points (see the module
    docstring)."""
    from methods.bestie.train import infer_instances, predict_outputs

    classes = val.dataset.semantic_classes
    cues = load_cues(points_file(SLOT, val.name, point_mode), val, val.dataset)
    # (image id, mask, category, release score, mean class probability, best same-class IoU, val points held)
    found = []
    images = [val.load_image(im.id) for im in val.images]
    for im, out in zip(val.images, predict_outputs(model, images, flip_tta=config.flip_tta,
                                                   flip_tta_offsets=config.flip_tta_offsets)):
        gt = [(mask, ann["category_id"]) for ann, mask in val.instance_masks(im.id)]
        for inst in infer_instances(out, things, config):
            category = classes[inst.cls]
            ious = [(inst.mask & g).sum() / (inst.mask | g).sum() for g, c in gt if c == category]
            found.append((im.id, inst.mask, category, inst.score, float(out["prob"][inst.cls][inst.mask].mean()),
                          max(ious, default=0.0), points_held(inst.mask, cues[im.id], inst.cls)))

    def ranked_by(masks: list[tuple], column: int) -> dict[str, float]:
        return _voc_map([r for f in masks for r in P.instance_records(f[0], [f[1]], [f[2]], [f[column]])], val.name)

    release = ranked_by(found, 3)
    return {"mAP25": release["voc.mAP25"], "mAP50": release["voc.mAP50"], "mAP70": release["voc.mAP70"],
            "class_mAP50": ranked_by(found, 4)["voc.mAP50"], "oracle_mAP50": ranked_by(found, 5)["voc.mAP50"],
            "hits50": float(sum(f[5] >= 0.5 for f in found)), "predictions": float(len(found)),
            "held": [sum(held(f[6]) == name for f in found) for name in HELD],
            "one_point_mAP50": ranked_by([f for f in found if f[6] == 1], 3)["voc.mAP50"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, nargs="+", default=[200, 3000], help="schedules to train")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--probe-images", type=int, default=80, help="training images the heads are probed on")
    args = parser.parse_args(argv)
    from methods.bestie.train import train_bestie

    threads = cap_cpu_threads()
    params = load_params(args.params)
    p = params.bestie
    dataset = CanonicalDataset(canonical_dir(SLOT))
    train, val = dataset.split(params.data.voc.train_split), dataset.split(params.data.voc.val_split)
    things = thing_classes(dataset)
    print(f"# {cpu_model()}, {threads} torch threads; bestie/points, seed 0, WSSS {WSSS_RUN}, params {args.params}")
    print("| steps | train s | img/s | offset pred / target abs | offset L1 | offset cosine | centre at GT points "
          "median / > 0.1 | val mAP25 / 50 / 70 (release score) | mAP50 ranked by class prob | mAP50 oracle "
          "ranking | GT hit at IoU 0.5 / predictions | val masks holding no / one / several val points | mAP50, "
          "masks holding one val point |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for iterations in args.iterations:
        warmup = max(1, round(p.warmup_iterations * iterations / p.iterations))
        # the release's inference whatever the params say: the columns rank its masks three ways themselves
        options = {"iterations": iterations, "warmup_iterations": warmup, "score": "center-class", "val_clean": False}
        config = make_config(p, "points", 0, options, slot=SLOT)
        samples = _train_samples(train, dataset, config, p.point_mode)
        start = time.perf_counter()
        model = train_bestie(samples=samples, num_semantic=len(dataset.semantic_classes), thing_classes=things,
                             config=config, progress=True)
        seconds = time.perf_counter() - start
        fit = head_fit(model, samples[:args.probe_images], things, config.infer_threshold)
        ranks = val_ranking(model, val, things, config, p.point_mode)
        print(f"| {iterations} | {seconds:.0f} | {iterations * config.batch_size / seconds:.0f} | "
              f"{fit['pred']:.1f} / {fit['target']:.1f} | {fit['l1']:.1f} | {fit['cosine']:.2f} | "
              f"{fit['centre_median']:.3f} / {100 * fit['centre_share']:.0f} % | "
              f"{ranks['mAP25']:.1f} / {ranks['mAP50']:.1f} / {ranks['mAP70']:.1f} | {ranks['class_mAP50']:.1f} | "
              f"{ranks['oracle_mAP50']:.1f} | {ranks['hits50']:.0f} / {ranks['predictions']:.0f} | "
              f"{' / '.join(map(str, ranks['held']))} | {ranks['one_point_mAP50']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
