"""JTSM proposal pooling: forward + backward proposals per second of shape-invariant MoIPool (exact bins and
a 2×2 sample cap), shape-interpolation MoIPool and torchvision RoIAlign, on the same boxes.

Usage::

    python -m bench.benchmarks.bench_jtsm_moipool [--proposals 100 1000 4000] [--sizes 256 512]
        [--channels 64] [--repeats 2] [--threads N] [--device cpu]

Input per row: one image of side ``size`` at stride 8 (features (1, C, size/8, size/8)), ``n`` random
rectangles (side 16 px to the whole image) each with an elliptic mask filling its box, merged into one
superpixel map. A row is ``pool(...).square().sum().backward()``, best of ``--repeats`` after a warm-up.
``us/prop`` is the time per proposal: flat across ``n`` means the cost grows linearly in proposals.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from tabulate import tabulate

from bench.benchmarks import cpu_model
from methods.jtsm.config import JtsmConfig
from methods.jtsm.moipool import pool_proposals
from methods.jtsm.segments import SegmentBatch

VARIANTS = {
    "moipool": JtsmConfig(pooling="moipool"),
    "moipool k=2": JtsmConfig(pooling="moipool", moipool_bin_samples=2),
    "moipool-interp": JtsmConfig(pooling="moipool-interp"),
    "roialign": JtsmConfig(pooling="roialign"),
}


def ellipses(n: int, size: int, seed: int = 0) -> SegmentBatch:
    """``n`` proposals in random boxes (16 px to the whole image) of one ``size``² image whose superpixels
    are its 8×8 tiles; each proposal is the tiles whose centres lie in the ellipse inscribed in its box,
    its box the tight box of those tiles."""
    rng = np.random.default_rng(seed)
    tile = 8
    g = size // tile
    sp = np.arange(g * g).reshape(g, g).repeat(tile, 0).repeat(tile, 1)  # one superpixel per 8×8 tile
    x0 = rng.integers(0, size - 16, n)
    y0 = rng.integers(0, size - 16, n)
    x1 = x0 + 16 + (rng.random(n) * (size - 16 - x0)).astype(int)
    y1 = y0 + 16 + (rng.random(n) * (size - 16 - y0)).astype(int)
    cy, cx = (np.arange(g) + 0.5) * tile, (np.arange(g) + 0.5) * tile
    members, boxes = [], []
    for k in range(n):
        ry, rx = (y1[k] - y0[k]) / 2, (x1[k] - x0[k]) / 2
        inside = (((cy[:, None] - y0[k] - ry) / ry) ** 2 + ((cx[None] - x0[k] - rx) / rx) ** 2) <= 1
        ids = np.flatnonzero(inside)
        if len(ids) == 0:
            ids = np.array([(int((y0[k] + ry) // tile)) * g + int((x0[k] + rx) // tile)])
        members.append(ids)
        rows, cols = np.divmod(ids, g)
        boxes.append([cols.min() * tile, rows.min() * tile, (cols.max() + 1) * tile, (rows.max() + 1) * tile])
    return SegmentBatch.from_arrays([(sp, members, np.array(boxes, np.float32), rng.random(n))])


def run(variant: str, features: torch.Tensor, segments: SegmentBatch, repeats: int) -> float:
    best = float("inf")
    for r in range(repeats + 1):
        feats = features.detach().clone().requires_grad_(True)
        if feats.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        pool_proposals(feats, segments, VARIANTS[variant]).square().sum().backward()
        if feats.is_cuda:
            torch.cuda.synchronize()
        if r:
            best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--proposals", type=int, nargs="+", default=[100, 1000, 4000])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"machine: {cpu_model()}, torch threads {torch.get_num_threads()}, device {device}")
    rows = []
    for size in args.sizes:
        features = torch.rand(1, args.channels, size // 8, size // 8,
                              generator=torch.Generator().manual_seed(0)).to(device)
        for n in args.proposals:
            segments = ellipses(n, size).to(device)
            for variant in VARIANTS:
                seconds = run(variant, features, segments, args.repeats)
                rows.append([f"{size}² (feat {size // 8}²)", n, variant, f"{seconds:.3f}", f"{n / seconds:,.0f}",
                             f"{1e6 * seconds / n:.1f}"])
    print(tabulate(rows, headers=["image", "proposals", "pooling", "fwd+bwd s", "proposals/s", "us/prop"],
                   tablefmt="github"))


if __name__ == "__main__":
    main()
