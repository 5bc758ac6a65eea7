"""Wall time and peak memory of the evaluation protocols at COCO-val scale, beside the libraries they match.

Usage::

    python -m bench.benchmarks.bench_evaluation [--images 5000] [--height 480] [--width 640]
        [--instances 20] [--segments 15] [--data DIR] [--keep] [--repeat 1] [--tasks ...]

Generates a canonical split on the fly in a temp dir (or reuses ``--data``): per image ~15
panoptic segments (3 stuff bands + ~12 thing ellipses, a little void) with the matching
instances.json, ~``--instances`` predicted instances (jittered GT ellipses + false positives,
RLE) and a jittered panoptic prediction. Then times, each in a fresh subprocess so that its peak
RSS is its own (``resource.getrusage(...).ru_maxrss``, children included for the PQ pool):

- VOC instance mAP at 0.25/0.5/0.7/0.75 (one pass), with and without the RLE consistency check;
- COCO segm AP with each backend (hotcoco = the default, faster-coco-eval, pycocotools);
- PQ with the hotcoco backend (the default) and the native one with 1 and 2 processes;
- the libraries alone on the same files (``ref_*``): COCOeval of hotcoco / faster-coco-eval /
  pycocotools from the JSON files, and ``hotcoco.panoptic.pq_compute``.

Every harness timing is the full ``evaluate_files`` call: JSON loading and validation included.
With ``--repeat N`` each task runs N times (fresh processes): the minimum wall time and the largest
peak RSS are shown. The last table gives each harness task's ratio to the library it matches.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from bench.benchmarks import cpu_model

N_THINGS, N_STUFF = 20, 3
CATEGORIES = ([{"id": i, "name": f"thing{i}", "isthing": 1, "color": [i, 0, 0]} for i in range(1, N_THINGS + 1)]
              + [{"id": N_THINGS + j, "name": f"stuff{j}", "isthing": 0, "color": [0, j, 0]}
                 for j in range(1, N_STUFF + 1)])


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 24) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def _rgb(ids: np.ndarray) -> np.ndarray:
    ids = ids.astype(np.uint32)
    return np.stack([(ids >> 16) & 255, (ids >> 8) & 255, ids & 255], -1).astype(np.uint8)  # BGR for OpenCV


def _gen_image(args: tuple) -> tuple[dict, list, dict, list, dict]:
    index, h, w, n_inst, n_seg, out = args
    rng = np.random.default_rng(index)
    image_id = index + 1
    base = image_id * 100
    ids = np.zeros((h, w), np.int32)
    n_things = max(1, n_seg - N_STUFF)
    # stuff: 3 horizontal bands
    cuts = np.sort(rng.integers(h // 5, 4 * h // 5, N_STUFF - 1))
    bands = np.split(np.arange(h), cuts)
    stuff_cat = {}
    for j, rows in enumerate(bands):
        ids[rows] = base + j + 1
        stuff_cat[base + j + 1] = N_THINGS + 1 + j
    ells, thing_cat = [], {}
    for k in range(n_things):
        rx, ry = rng.uniform(12, 90), rng.uniform(12, 90)
        e = (rng.uniform(0, w), rng.uniform(0, h), rx, ry)
        sid = base + 10 + k
        cv2.fillPoly(ids, [np.round(_ellipse(*e)).astype(np.int32)], int(sid))
        ells.append((sid, e))
        thing_cat[sid] = int(rng.integers(1, N_THINGS + 1))
    for _ in range(3):  # a little void
        y, x = rng.integers(0, h - 20), rng.integers(0, w - 20)
        ids[y:y + 20, x:x + 20] = 0
    counts = np.bincount((ids - base).clip(min=0).ravel(), minlength=100)
    cats = {**stuff_cat, **thing_cat}
    segs, anns = [], []
    for sid, cat in cats.items():
        area = int(counts[sid - base])
        if area == 0:
            continue
        m = ids == sid
        rle = mask_utils.encode(np.asfortranarray(m.view(np.uint8)))
        bbox = [float(v) for v in mask_utils.toBbox(rle)]
        segs.append({"id": int(sid), "category_id": cat, "area": area, "bbox": bbox, "iscrowd": 0})
        if cat <= N_THINGS:
            anns.append({"id": int(sid), "image_id": image_id, "category_id": cat,
                         "segmentation": {"size": [h, w], "counts": rle["counts"].decode()}, "area": area,
                         "bbox": bbox, "iscrowd": 0, "difficult": 0})
    cv2.imwrite(f"{out}/gt/val/panoptic/{image_id:06d}.png", _rgb(ids), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    # instance predictions: jittered GT ellipses + false positives
    results = []
    polys = []
    for sid, (cx, cy, rx, ry) in ells:
        j = rng.normal(0, 0.08, 4)
        polys.append((thing_cat[sid] if rng.random() > 0.1 else int(rng.integers(1, N_THINGS + 1)),
                      (cx + j[0] * rx, cy + j[1] * ry, rx * (1 + j[2]), ry * (1 + j[3]))))
    while len(polys) < n_inst:
        polys.append((int(rng.integers(1, N_THINGS + 1)),
                      (rng.uniform(0, w), rng.uniform(0, h), rng.uniform(8, 60), rng.uniform(8, 60))))
    for cat, e in polys:
        poly = _ellipse(*e)
        poly[:, 0] = poly[:, 0].clip(0, w - 1)
        poly[:, 1] = poly[:, 1].clip(0, h - 1)
        rle = mask_utils.frPyObjects([poly.ravel().tolist()], h, w)[0]
        results.append({"image_id": image_id, "category_id": cat, "score": float(rng.random()),
                        "segmentation": {"size": [h, w], "counts": rle["counts"].decode()}})
    # panoptic prediction: jittered bands and ellipses
    pred = np.zeros((h, w), np.int32)
    pcuts = np.sort((cuts + rng.integers(-8, 9, cuts.size)).clip(1, h - 1))
    for j, rows in enumerate(np.split(np.arange(h), pcuts)):
        pred[rows] = base + j + 1
    for sid, (cx, cy, rx, ry) in ells:
        if rng.random() < 0.1:
            continue  # missed
        j = rng.normal(0, 0.08, 4)
        cv2.fillPoly(pred, [np.round(_ellipse(cx + j[0] * rx, cy + j[1] * ry, rx * (1 + j[2]),
                                              ry * (1 + j[3]))).astype(np.int32)], int(sid))
    pcounts = np.bincount((pred - base).clip(min=0).ravel(), minlength=100)
    psegs = [{"id": int(sid), "category_id": (cat if rng.random() > 0.05 else int(rng.integers(1, N_THINGS + 1)))
              if cat <= N_THINGS else cat} for sid, cat in cats.items() if pcounts[sid - base] > 0]
    cv2.imwrite(f"{out}/pred/panoptic/{image_id:06d}.png", _rgb(pred), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    image = {"id": image_id, "file_name": f"{image_id:06d}.jpg", "height": h, "width": w}
    return (image, anns, {"image_id": image_id, "file_name": f"{image_id:06d}.png", "segments_info": segs},
            results, {"image_id": image_id, "file_name": f"{image_id:06d}.png", "segments_info": psegs})


def generate(out: Path, n: int, h: int, w: int, n_inst: int, n_seg: int) -> dict:
    for d in ("gt/val/panoptic", "pred/panoptic"):
        (out / d).mkdir(parents=True, exist_ok=True)
    jobs = [(i, h, w, n_inst, n_seg, str(out)) for i in range(n)]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        parts = pool.map(_gen_image, jobs, chunksize=16)
    images = [p[0] for p in parts]
    anns = [a for p in parts for a in p[1]]
    results = [r for p in parts for r in p[3]]
    with open(out / "gt/meta.json", "w") as f:
        json.dump({"format_version": 1, "name": "bench", "source": "synthetic", "splits": {"val": n},
                   "categories": CATEGORIES, "semantic_classes": [c["id"] for c in CATEGORIES[N_THINGS:]]
                   + [c["id"] for c in CATEGORIES[:N_THINGS]], "void_label": 255}, f)
    with open(out / "gt/val/instances.json", "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": CATEGORIES[:N_THINGS]}, f)
    with open(out / "gt/val/panoptic.json", "w") as f:
        json.dump({"images": images, "annotations": [p[2] for p in parts], "categories": CATEGORIES}, f)
    with open(out / "pred/results.json", "w") as f:
        json.dump(results, f)
    with open(out / "pred/panoptic.json", "w") as f:
        json.dump({"annotations": [p[4] for p in parts], "categories": CATEGORIES}, f)
    return {"gt_instances": len(anns), "predictions": len(results),
            "gt_segments": sum(len(p[2]["segments_info"]) for p in parts),
            "pred_segments": sum(len(p[4]["segments_info"]) for p in parts)}


TASKS = {
    "voc": ("voc", "pred/results.json", {}),
    "voc_no_rle_check": ("voc", "pred/results.json", {"check_rle": False}),
    "coco_segm": ("coco", "pred/results.json", {"iou_types": ["segm"]}),
    "coco_segm_faster": ("coco", "pred/results.json", {"iou_types": ["segm"], "backend": "faster-coco-eval"}),
    "coco_segm_pycocotools": ("coco", "pred/results.json", {"iou_types": ["segm"], "backend": "pycocotools"}),
    "pq": ("pq", "pred/panoptic.json", {}),
    "pq_native_1proc": ("pq", "pred/panoptic.json", {"backend": "native", "workers": 1}),
    "pq_native_2proc": ("pq", "pred/panoptic.json", {"backend": "native", "workers": 2}),
}


def _ref_cocoeval(module: str) -> Callable[[Path], dict[str, float]]:
    def run(data: Path) -> dict[str, float]:
        import contextlib
        import io

        if module == "hotcoco":
            from hotcoco import COCO, COCOeval
        elif module == "faster_coco_eval":
            from faster_coco_eval import COCO
            from faster_coco_eval import COCOeval_faster as COCOeval
        else:
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(data / "gt/val/instances.json"))
            ev = COCOeval(gt, gt.loadRes(str(data / "pred/results.json")), "segm")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        return {"coco.segm.AP": float(ev.stats[0]) * 100, "coco.segm.AP50": float(ev.stats[1]) * 100}

    return run


def _ref_hotcoco_pq(data: Path) -> dict[str, float]:
    from hotcoco.panoptic import pq_compute

    res = pq_compute(str(data / "gt/val/panoptic.json"), str(data / "pred/panoptic.json"),
                     gt_folder=str(data / "gt/val/panoptic"), pred_folder=str(data / "pred/panoptic"))
    return {"pq.PQ": res["All"]["pq"] * 100, "pq.SQ": res["All"]["sq"] * 100}


#: the libraries alone, on the same files
REFERENCES: dict[str, Callable[[Path], dict[str, float]]] = {
    "ref_hotcoco_segm": _ref_cocoeval("hotcoco"),
    "ref_faster_segm": _ref_cocoeval("faster_coco_eval"),
    "ref_pycocotools_segm": _ref_cocoeval("pycocotools"),
    "ref_hotcoco_pq": _ref_hotcoco_pq,
}
#: harness task → the library run it is compared with
RATIOS = {
    "coco_segm": "ref_hotcoco_segm",
    "coco_segm_faster": "ref_faster_segm",
    "coco_segm_pycocotools": "ref_pycocotools_segm",
    "pq": "ref_hotcoco_pq",
    "pq_native_1proc": "ref_hotcoco_pq",
    "pq_native_2proc": "ref_hotcoco_pq",
}
ALL_TASKS = [*TASKS, *REFERENCES]


def run_one(task: str, data: Path) -> None:
    from bench.evaluation import evaluate_files

    t0 = time.perf_counter()
    if task in REFERENCES:
        metrics = REFERENCES[task](data)
    else:
        kind, pred, options = TASKS[task]
        metrics = evaluate_files(kind, gt_root=data / "gt", split="val", predictions=data / pred, **options).metrics
    wall = time.perf_counter() - t0
    rss_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rss_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"task": task, "wall_s": wall, "peak_rss_mib": rss_self, "peak_rss_children_mib": rss_children,
                      "metrics": metrics}))


def _run_task(task: str, data: Path, repeat: int) -> dict | str:
    """The task in ``repeat`` fresh processes: min wall, max peak RSS; the error text if one failed."""
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-m", "bench.benchmarks.bench_evaluation", "--run-one", task,
                              "--data", str(data)], capture_output=True, text=True)
        if out.returncode != 0:
            return out.stderr[-2000:]
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    best = min(runs, key=lambda r: r["wall_s"])
    return dict(best, walls=[r["wall_s"] for r in runs], peak_rss_mib=max(r["peak_rss_mib"] for r in runs),
                peak_rss_children_mib=max(r["peak_rss_children_mib"] for r in runs))


def _machine() -> str:
    cpu = cpu_model()
    try:
        mem = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.splitlines()[1].split()[1]
    except Exception:
        mem = "?"
    return f"{platform.node()} — nproc {os.cpu_count()}, {cpu}, memory {mem}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--instances", type=int, default=20, help="predicted instances per image")
    ap.add_argument("--segments", type=int, default=15, help="panoptic segments per image (3 stuff + things)")
    ap.add_argument("--tasks", nargs="+", default=ALL_TASKS, choices=ALL_TASKS)
    ap.add_argument("--repeat", type=int, default=1, help="runs per task (min wall, max peak RSS)")
    ap.add_argument("--data", type=Path, help="reuse (or create) the data in this folder")
    ap.add_argument("--keep", action="store_true", help="keep the generated temp folder")
    ap.add_argument("--run-one", choices=ALL_TASKS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.run_one:
        run_one(args.run_one, args.data)
        return 0
    print(f"machine: {_machine()}")
    tmp = None
    data = args.data
    if data is None:
        tmp = Path(tempfile.mkdtemp(prefix="bench_eval_"))
        data = tmp
    try:
        if not (data / "pred/panoptic.json").is_file():
            t0 = time.perf_counter()
            info = generate(data, args.images, args.height, args.width, args.instances, args.segments)
            print(f"data: {args.images} images {args.width}x{args.height}, {info['gt_instances']} GT instances, "
                  f"{info['predictions']} predicted instances, {info['gt_segments']} GT / {info['pred_segments']} "
                  f"predicted panoptic segments; generated in {time.perf_counter() - t0:.1f} s (2 processes)")
        else:
            print(f"data: reusing {data}")
        print(f"{'task':<22} {'wall s':>8} {'peak RSS MiB':>13} {'+children':>10}  metrics")
        results: dict[str, dict] = {}
        for task in args.tasks:
            r = _run_task(task, data, args.repeat)
            if isinstance(r, str):
                print(f"{task:<22} FAILED\n{r}")
                continue
            results[task] = r
            shown = ", ".join(f"{k}={v:.2f}" for k, v in list(r["metrics"].items())[:4])
            print(f"{task:<22} {r['wall_s']:8.2f} {r['peak_rss_mib']:13.0f} {r['peak_rss_children_mib']:10.0f}  "
                  f"{shown}" + (f"  (runs: {', '.join(f'{w:.2f}' for w in r['walls'])})" if args.repeat > 1 else ""))
        pairs = [(t, ref) for t, ref in RATIOS.items() if t in results and ref in results]
        if pairs:
            print(f"\n{'harness task':<22} {'library run':<22} {'ratio':>6}  metric differences")
            for t, ref in pairs:
                common = results[t]["metrics"].keys() & results[ref]["metrics"].keys()
                diff = max((abs(results[t]["metrics"][k] - results[ref]["metrics"][k]) for k in common), default=0.0)
                print(f"{t:<22} {ref:<22} {results[t]['wall_s'] / results[ref]['wall_s']:6.2f}  {diff:.1e}")
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp is not None:
            print(f"data kept in {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
