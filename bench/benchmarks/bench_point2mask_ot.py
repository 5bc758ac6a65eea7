"""Point2Mask pseudo-mask generation: this library vs a literal re-implementation of the release.

Usage::

    python -m bench.benchmarks.bench_point2mask_ot [--size 512] [--points 2 5 10 20] [--repeats 3]
        [--release-repeats 1] [--seed 0] [--device cpu] [--threads N]

On a synthetic VOC-like scene (:func:`synthetic_scene`: 21 classes, 20 things + background, one
background point and ``points - 1`` thing instances drawn from 6 thing classes so that same-class
objects touch), for each point count prints the wall time per image (best of the repeats) of

- ``release_s``: ``tests/fixtures/point2mask_release.py`` (the release's CPU path, literal);
- ``ours_s``: :func:`methods.point2mask.pseudo_masks` with ``Point2MaskConfig.release()``;
- ``converged_s``: the same with ``ot_mode="converged"`` (and its Sinkhorn iteration count);
- ``paper_s``: the paper defaults (full-resolution grid, sqrt(2) diagonals, min-cost counts);

with the speed-up and the share of pixels on which the release mode and the literal release agree.
``--device cuda`` runs ours on the GPU (the release reference stays on CPU). No timed assertions.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from bench.benchmarks import cpu_model
from methods.point2mask import Point2MaskConfig, pseudo_masks

THING_POOL = 6


@dataclass(frozen=True)
class Scene:
    """One synthetic image's inputs: probabilities at image size, boundary / embedding on the 1/16 grid."""

    probs: torch.Tensor  # (C, H, W) softmax
    boundary_logits: torch.Tensor  # (H // 16, W // 16)
    embedding: torch.Tensor  # (D, H // 16, W // 16), unit norm
    points_xy: np.ndarray  # (N, 2)
    point_classes: np.ndarray  # (N,)
    is_thing: np.ndarray  # (C,)
    instances: np.ndarray  # (H, W) ground-truth instance index, -1 = background


def _ellipses(size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """Instance map of ``count`` painted ellipses; a new one is rejected if it hides more than 60 % of
    an earlier one."""
    yy, xx = np.mgrid[0:size, 0:size]
    inst = np.full((size, size), -1, dtype=np.int64)
    areas: list[int] = []
    while len(areas) < count:
        cy, cx = rng.uniform(0.1, 0.9, 2) * size
        ry, rx = rng.uniform(0.05, 0.16, 2) * size
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        trial = np.where(mask, len(areas), inst)
        visible = np.bincount(trial[trial >= 0], minlength=len(areas) + 1)
        if all(visible[k] >= 0.4 * a for k, a in enumerate(areas)):
            inst = trial
            areas.append(int(mask.sum()))
    return inst


def synthetic_scene(size: int = 512, num_points: int = 20, num_classes: int = 21, seed: int = 0, dim: int = 8) -> Scene:
    """A VOC-like scene: things are classes ``0..C-2``, background ``C-1``; points uniform in each segment."""
    rng = np.random.default_rng(seed)
    background = num_classes - 1
    inst = _ellipses(size, num_points - 1, rng)
    inst_class = rng.integers(0, THING_POOL, num_points - 1)
    semantic = np.where(inst >= 0, inst_class[np.maximum(inst, 0)], background)
    logits = 5.0 * np.eye(num_classes, dtype=np.float32)[semantic].transpose(2, 0, 1)
    logits += rng.normal(0, 1.0, logits.shape).astype(np.float32)
    logits = ndimage.gaussian_filter(logits, sigma=(0, 3, 3))
    probs = torch.softmax(torch.from_numpy(logits), 0)

    grid = size // 16
    edge = np.zeros((size, size), dtype=np.float32)
    edge[:, 1:] += inst[:, 1:] != inst[:, :-1]
    edge[1:, :] += inst[1:, :] != inst[:-1, :]
    edge = ndimage.gaussian_filter(np.minimum(edge, 1), 2)
    pooled = F.adaptive_avg_pool2d(torch.from_numpy(edge)[None, None], grid)[0, 0]
    boundary_logits = -3 + 40 * pooled + 0.3 * torch.from_numpy(rng.normal(size=(grid, grid)).astype(np.float32))

    codes = rng.normal(size=(num_points, dim)).astype(np.float32)
    emb = torch.from_numpy(codes[inst + 1].transpose(2, 0, 1).copy())
    emb = F.adaptive_avg_pool2d(emb[None], grid)[0] + 0.2 * torch.from_numpy(
        rng.normal(size=(dim, grid, grid)).astype(np.float32))
    emb = F.normalize(emb, dim=0)

    points, classes = [], []
    for k in range(-1, num_points - 1):
        ys, xs = np.nonzero(inst == k)
        j = rng.integers(len(ys))
        points.append((xs[j], ys[j]))
        classes.append(background if k < 0 else inst_class[k])
    is_thing = np.arange(num_classes) != background
    return Scene(probs, boundary_logits, emb, np.array(points), np.array(classes), is_thing, inst)


def run_release(scene: Scene) -> np.ndarray:
    """The literal release path on ``scene`` -> panoptic map (``p + 1``, 0 = void).

    The reference lives with the tests; it is importable when the benchmark runs from the repository
    root (``python -m``), and imported here only so that the scene generator works without it."""
    from tests.fixtures.point2mask_release import release_panoptic, release_pseudo_label

    thing_point = scene.is_thing[scene.point_classes]
    masks, semantics = release_pseudo_label(
        scene.probs, scene.boundary_logits, scene.embedding, scene.points_xy[:, ::-1].copy(),
        scene.point_classes, thing_point, int(scene.is_thing.sum()))
    return release_panoptic(masks, semantics, scene.point_classes, thing_point)


def run_ours(scene: Scene, config: Point2MaskConfig, device: str = "cpu") -> np.ndarray:
    """:func:`pseudo_masks` on ``scene`` (boundary = sigmoid of the release's logits)."""
    return pseudo_masks(
        scene.probs.to(device), torch.sigmoid(scene.boundary_logits), scene.points_xy, scene.point_classes,
        scene.is_thing, config, embedding=scene.embedding)


def _best(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--points", type=int, nargs="+", default=[2, 5, 10, 20])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--release-repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    release = Point2MaskConfig.release()
    converged = replace(release, ot_mode="converged")
    paper = Point2MaskConfig(use_low_boundary=False)
    print(f"# nproc={os.cpu_count()} cpu='{cpu_model()}' torch={torch.__version__} threads={torch.get_num_threads()} "
          f"device={args.device} size={args.size} classes=21 repeats={args.repeats} (best of)")
    print(f"{'points':>6} {'release_s':>9} {'ours_s':>8} {'speedup':>7} {'agree_%':>8} "
          f"{'converged_s':>11} {'conv_vs_rel_%':>13} {'paper_s':>8}")
    for n in args.points:
        scene = synthetic_scene(args.size, n, seed=args.seed + n)
        t_rel, ref = _best(lambda: run_release(scene), args.release_repeats)
        t_ours, ours = _best(lambda: run_ours(scene, release, args.device), args.repeats)
        t_conv, conv = _best(lambda: run_ours(scene, converged, args.device), args.repeats)
        t_paper, _ = _best(lambda: run_ours(scene, paper, args.device), 1)
        agree = 100.0 * float(np.mean(ours == ref))
        moved = 100.0 * float(np.mean(conv == ours))
        print(f"{n:>6} {t_rel:>9.3f} {t_ours:>8.3f} {t_rel / t_ours:>7.1f} {agree:>8.3f} "
              f"{t_conv:>11.3f} {moved:>13.2f} {t_paper:>8.3f}")


if __name__ == "__main__":
    main()
