"""Generation speed of the synthetic presets (images/s, one process, files written to a temp dir).

Usage::

    python -m bench.benchmarks.bench_synthetic [--images 200] [--sizes 128 256] [--workers 1]

Prints one line per (preset, size): images/s over all files written (JPEG, PNG, XML, MAT, JSON),
by wall-clock time and by this process's CPU time (the latter is robust to other load on a small VM;
with ``--workers > 1`` only the wall-clock figure is meaningful), with the machine (``nproc``, CPU
model, load average) first. ``synth-voc`` counts every generated image
(VOC seg train/val + SBD-only); its SBD share is kept at the default proportions.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from bench.benchmarks import cpu_model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=200, help="images per preset and size (default 200)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="square image sizes")
    ap.add_argument("--presets", nargs="+", default=["synth-voc", "synth-coco"])
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)

    from datasets.synthetic import generate

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: nproc={os.cpu_count()} cpu={cpu_model()!r} python={platform.python_version()} "
          f"workers={args.workers} load1={load:.2f}")
    n = args.images
    for preset in args.presets:
        for size in args.sizes:
            if preset == "synth-voc":  # default proportions 200 : 100 : 300
                params = dict(num_train=n // 3, num_val=n // 6, num_sbd_only=n - n // 3 - n // 6)
            else:
                params = dict(num_train=n - n // 5, num_val=n // 5)
            with tempfile.TemporaryDirectory() as tmp:
                t0, c0 = time.perf_counter(), time.process_time()
                summary = generate(preset, Path(tmp) / "ds", image_size=(size, size), progress=False,
                                   workers=args.workers, **params)
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
            print(f"{preset:10s} {size}x{size}: {summary.images / dt:7.1f} images/s wall, "
                  f"{summary.images / dc:7.1f} images/s CPU "
                  f"({summary.images} images, {summary.instances} instances, {dt:.1f} s)")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
