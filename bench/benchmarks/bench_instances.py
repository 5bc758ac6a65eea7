"""Wall time of BESTIE's instance extraction (:func:`methods.bestie.segment_instances`) per image.

Usage::

    python -m bench.benchmarks.bench_instances [--sizes 128 416 640] [--objects 12] [--images 20]

Per image size, synthetic network outputs: ``--objects`` discs of 3 thing classes (radius ~ size/14,
placed in touching same-class pairs, so half the components hold two instances), a semantic
argmax of the discs, offsets pointing to each disc's centre plus noise, a class-wise centre map of
Gaussians (peak 0.6) plus noise. Times the inference rule (threshold 0.1, NMS ≈ 41·size/416,
clustering on, centre-less components kept) and the refinement rule (threshold 0.3, ≤ 5 centres),
median over ``--images`` images; prints ms per image and the instances found.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from bench.benchmarks import cpu_model
from methods.bestie import ClusterConfig, segment_instances

THINGS = np.array([1, 2, 3])


def synthetic_outputs(size: int, objects: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Probabilities (S, H, W), class-wise centre map (C, H, W) and offsets (2, H, W) of one image."""
    radius = max(3.0, size / 14)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    semantic = np.zeros((size, size), np.int64)
    center = np.zeros((len(THINGS), size, size), np.float32)
    offset = np.zeros((2, size, size), np.float32)
    for _ in range(max(1, objects // 2)):
        cls = int(rng.integers(len(THINGS)))
        cy, cx = rng.uniform(radius, size - 3 * radius), rng.uniform(radius, size - radius)
        for dy in (0.0, 1.9 * radius):  # a touching same-class pair
            y0 = cy + dy
            disc = (yy - y0) ** 2 + (xx - cx) ** 2 <= radius**2
            semantic[disc] = THINGS[cls]
            offset[0][disc], offset[1][disc] = (y0 - yy)[disc], (cx - xx)[disc]
            g = 0.6 * np.exp(-((yy - y0) ** 2 + (xx - cx) ** 2) / (2 * (radius / 3) ** 2))
            np.maximum(center[cls], g, out=center[cls])
    offset += rng.normal(0, 0.5, offset.shape).astype(np.float32)
    center += rng.uniform(0, 0.05, center.shape).astype(np.float32)
    prob = np.full((len(THINGS) + 1, size, size), 0.05, np.float32)
    np.put_along_axis(prob, semantic[None], 0.85, axis=0)
    return {"semantic": semantic, "prob": prob, "center": center, "offset": offset}


def time_rule(outputs: list[dict[str, np.ndarray]], nms: int, refinement: bool) -> tuple[float, float]:
    """(median ms per image, mean instances per image)."""
    times, counts = [], []
    for o in outputs:
        start = time.perf_counter()
        found = segment_instances(o["semantic"], o["prob"], o["center"], o["offset"], THINGS,
                                  threshold=0.3 if refinement else 0.1, nms_kernel=nms, min_area=5,
                                  cluster=ClusterConfig(), max_per_component=5 if refinement else None,
                                  keep_centerless=not refinement,
                                  score_rule="refinement" if refinement else "center-class")
        times.append(time.perf_counter() - start)
        counts.append(len(found))
    return 1000 * statistics.median(times), float(np.mean(counts))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 416, 640])
    parser.add_argument("--objects", type=int, default=12, help="instances per image (in touching pairs)")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"# {cpu_model()}; {args.objects} objects per image, median of {args.images} images")
    print("| size | NMS | inference ms/image | instances | refinement ms/image | instances |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        rng = np.random.default_rng(args.seed)
        outputs = [synthetic_outputs(size, args.objects, rng) for _ in range(args.images)]
        nms = max(3, int(round(41 * size / 416)) | 1)
        inf_ms, inf_n = time_rule(outputs, nms, refinement=False)
        ref_ms, ref_n = time_rule(outputs, nms, refinement=True)
        print(f"| {size} | {nms} | {inf_ms:.1f} | {inf_n:.1f} | {ref_ms:.1f} | {ref_n:.1f} |")


if __name__ == "__main__":
    main()
