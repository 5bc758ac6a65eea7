"""Linear-time MST tree filter vs the O(N^2) brute force over tree paths.

Usage::

    python -m bench.benchmarks.bench_tree_filter [--sizes 16 32 64 128 256 512] [--channels 21]
        [--brute-max 64] [--repeats 3] [--sigma 0.02] [--device cpu]

For each square size S (N = S^2 pixels) on a synthetic smooth image (coloured Gaussian blobs +
mild noise, so the MST has realistic long paths), prints the best of ``--repeats`` wall times:

- ``mst``: :func:`methods.wsss.build_grid_mst` (scipy MST + BFS levels, CPU);
- ``filter``: :func:`methods.wsss.tree_filter` forward on (1, C, S, S) float32 features;
- ``fwd+bwd``: forward and backward of ``filter(x).square().sum()``;
- ``brute``: :func:`methods.wsss.tree_filter_dense` (all-pairs tree paths via scipy, dense
  float64 S f / S 1), only up to ``--brute-max`` (its memory is 3 N^2 doubles);
- ``us/px``: filter forward time per pixel — flat across sizes = linear scaling;
- ``levels``: BFS levels of the tree = Python iterations of each pass.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from bench.benchmarks import cpu_model
from methods.wsss import build_grid_mst, tree_filter, tree_filter_dense


def synthetic_image(size: int, seed: int = 0) -> torch.Tensor:
    """(1, 3, S, S) float32 in [0, 1]: 6 coloured Gaussian blobs on a gradient, noise 2/255."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    img = np.stack([0.3 + 0.2 * x, 0.3 + 0.2 * y, 0.4 * np.ones_like(x)])
    for _ in range(6):
        cx, cy, r = rng.random(), rng.random(), 0.05 + 0.15 * rng.random()
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r**2))
        img += (rng.random(3)[:, None, None] - 0.5) * blob
    img += rng.normal(0, 2 / 255, img.shape)
    return torch.from_numpy(np.clip(img, 0, 1)[None]).float()


def _best(fn, repeats: int, sync) -> float:
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512])
    ap.add_argument("--channels", type=int, default=21)
    ap.add_argument("--brute-max", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sigma", type=float, default=0.02)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    print(f"# nproc={os.cpu_count()} cpu='{cpu_model()}' torch={torch.__version__} "
          f"threads={torch.get_num_threads()} device={device} channels={args.channels} sigma={args.sigma} "
          f"repeats={args.repeats} (best of)")
    print(f"{'size':>8} {'N':>8} {'levels':>6} {'mst_s':>8} {'filter_s':>9} {'fwd+bwd_s':>9} "
          f"{'us/px':>7} {'brute_s':>9} {'max|diff|':>10}")
    for s in args.sizes:
        img = synthetic_image(s)
        feats = torch.softmax(torch.randn(1, args.channels, s, s, generator=torch.Generator().manual_seed(s)), 1)
        feats = feats.to(device)
        t_mst = _best(lambda: build_grid_mst(img, device=device), args.repeats, sync)
        tree = build_grid_mst(img, device=device)
        out = tree_filter(feats, tree, sigma=args.sigma)  # warm-up
        t_fwd = _best(lambda: tree_filter(feats, tree, sigma=args.sigma), args.repeats, sync)

        def fwd_bwd() -> None:
            x = feats.detach().requires_grad_()
            tree_filter(x, tree, sigma=args.sigma).square().sum().backward()

        t_fb = _best(fwd_bwd, args.repeats, sync)
        brute, diff = "-", "-"
        if s <= args.brute_max:
            t_brute = _best(lambda: tree_filter_dense(feats, tree, sigma=args.sigma), 1, sync)
            ref = tree_filter_dense(feats, tree, sigma=args.sigma)
            brute = f"{t_brute:.3f}"
            diff = f"{(ref.double() - out.double()).abs().max().item():.1e}"
        print(f"{f'{s}x{s}':>8} {s * s:>8} {tree.num_levels:>6} {t_mst:>8.3f} {t_fwd:>9.4f} {t_fb:>9.4f} "
              f"{1e6 * t_fwd / (s * s):>7.2f} {brute:>9} {diff:>10}", flush=True)


if __name__ == "__main__":
    main()
