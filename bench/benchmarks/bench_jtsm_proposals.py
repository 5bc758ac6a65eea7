"""Segment proposals (the MCG stand-in, ``datasets.proposals``): seconds per image, proposals kept, and
recall (best overlap with each ground-truth mask at IoU 0.5 / 0.7) at two image sizes.

Usage::

    python -m bench.benchmarks.bench_jtsm_proposals [--sizes 128 512] [--images 3] [--max-proposals 4000]

Input: synthetic scenes — a textured two-tone background (stuff) and 2-4 thing shapes (rectangles and
ellipses of random colours), uniform noise ±12; the ground truth is every thing mask plus the two
background regions. Each image is generated and proposed once; timings are wall seconds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from tabulate import tabulate

from bench.benchmarks import cpu_model
from datasets.proposals import ProposalConfig, generate_proposals, recall


def scene(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An RGB uint8 scene of ``size``² and its (G, size, size) ground-truth masks."""
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size, 3), np.int64)
    sky = np.zeros((size, size), bool)
    sky[: size // 2 + int(rng.integers(-size // 8, size // 8))] = True
    img[sky], img[~sky] = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    masks = [sky, ~sky]
    yy, xx = np.mgrid[:size, :size]
    for _ in range(int(rng.integers(2, 5))):
        cx, cy = rng.integers(size // 6, 5 * size // 6, 2)
        rx, ry = rng.integers(size // 12, size // 4, 2)
        shape = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1 if rng.random() < 0.5 else \
            (abs(xx - cx) <= rx) & (abs(yy - cy) <= ry)
        img[shape] = rng.integers(0, 256, 3)
        masks = [m & ~shape for m in masks] + [shape]
    img = np.clip(img + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
    return img, np.stack([m for m in masks if m.sum() > 0])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--max-proposals", type=int, default=4000)
    args = parser.parse_args(argv)
    config = ProposalConfig(max_proposals=args.max_proposals)
    print(f"machine: {cpu_model()}; strategies {config.colour_spaces} × k {config.scales}, one process")
    rows = []
    for size in args.sizes:
        seconds, counts, r5, r7 = [], [], [], []
        for seed in range(args.images):
            img, gt = scene(size, seed)
            start = time.perf_counter()
            props = generate_proposals(img, config)
            seconds.append(time.perf_counter() - start)
            rates, _ = recall(props, gt)
            counts.append(len(props))
            r5.append(rates[0.5])
            r7.append(rates[0.7])
        rows.append([f"{size}²", args.images, f"{np.mean(seconds):.2f}", f"{np.mean(counts):.0f}",
                     f"{np.mean(counts) / np.mean(seconds):,.0f}", f"{100 * np.mean(r5):.1f}",
                     f"{100 * np.mean(r7):.1f}"])
    print(tabulate(rows, headers=["image", "images", "s/image", "proposals", "proposals/s", "recall@0.5 %",
                                  "recall@0.7 %"], tablefmt="github"))


if __name__ == "__main__":
    main()
