"""Training-step cost of the paper profiles' networks on synthetic tensors: seconds per iteration and peak memory.

Usage::

    python -m bench.benchmarks.bench_gpu_steps [--device cuda] [--steps 20] [--warmup 5] [--models bestie mrcnn]
        [--batch 8] [--crop 416] [--mrcnn-batch 2] [--mrcnn-size 800] [--no-amp] [--deterministic] [--json out.json]

Two networks, as the VOC / COCO profiles configure them, trained from random weights (nothing is downloaded):

- ``bestie``: the BESTIE / P2Seg network (:class:`methods.bestie.model.BestieNet`): timm ``hrnet_w48`` on levels
  1-4, the fuse decoder at 720 channels, 256-channel semantic / centre / offset heads; a 416 crop, batch 8;
  a cross-entropy + MSE + L1 loss on random targets (the cost of the methods' own losses is not measured).
- ``mrcnn``: torchvision's Mask R-CNN R-50-FPN, images of 800 × 1066 px (shorter side 800, as the segmentor's
  paper setting), batch 2 (detectron2's 16 images over 8 GPUs), 4 random boxes + masks per image.

On CUDA with AMP (bf16 where the GPU supports it, else fp16 with a gradient scaler; methods.runtime), channels-last
for the convolutional BESTIE network, and cuDNN autotuning unless ``--deterministic``; the backend settings are
printed with the timings. On CPU (the default here) it runs with small defaults: ``--steps 2 --warmup 1``; pass
``--batch`` / ``--crop`` / ``--mrcnn-size`` to shrink the inputs further. The figures for docs/scaling.md.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from methods.runtime import configure_backends, mixed_precision, resolve_device, use_channels_last


def _bestie(device: torch.device, batch: int, crop: int, channels_last: bool) -> tuple[torch.nn.Module, Callable]:
    from methods.bestie.model import BestieNet

    model = BestieNet(21, 1, backbone="hrnet_w48", out_indices=(1, 2, 3, 4), decoder="fuse", decoder_channels=720,
                      head_channels=256).to(device)
    if channels_last:
        use_channels_last(model, device)
    fmt = torch.channels_last if channels_last and device.type == "cuda" else torch.contiguous_format
    x = torch.randn(batch, 3, crop, crop, device=device).contiguous(memory_format=fmt)
    semantic = torch.randint(0, 21, (batch, crop, crop), device=device)
    center = torch.rand(batch, 1, crop, crop, device=device)
    offset = torch.randn(batch, 2, crop, crop, device=device)

    def loss_fn() -> torch.Tensor:
        out = model(x)
        return (F.cross_entropy(out["semantic"].float(), semantic) + F.mse_loss(out["center"].float(), center)
                + F.l1_loss(out["offset"].float(), offset))
    return model, loss_fn


def _mrcnn(device: torch.device, batch: int, size: int) -> tuple[torch.nn.Module, Callable]:
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    long = round(size * 4 / 3)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=21, min_size=size,
                                  max_size=max(1333, long)).to(device)
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, size, long, generator=g).to(device) for _ in range(batch)]
    targets = []
    for _ in range(batch):
        xy = torch.rand(4, 2, generator=g) * torch.tensor([long * 0.6, size * 0.6])
        wh = 32 + torch.rand(4, 2, generator=g) * torch.tensor([long * 0.3, size * 0.3])
        boxes = torch.cat([xy, xy + wh], 1)
        masks = torch.zeros(4, size, long, dtype=torch.uint8)
        for k, (x0, y0, x1, y1) in enumerate(boxes.round().int().tolist()):
            masks[k, y0:y1, x0:x1] = 1
        targets.append({"boxes": boxes.to(device), "labels": torch.randint(1, 21, (4,), generator=g).to(device),
                        "masks": masks.to(device)})

    def loss_fn() -> torch.Tensor:
        return sum(model(images, targets).values())
    return model, loss_fn


def measure(name: str, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    if name == "bestie":
        model, loss_fn = _bestie(device, args.batch, args.crop, channels_last=True)
        shape = f"batch {args.batch}, {args.crop}x{args.crop} crop"
    else:
        model, loss_fn = _mrcnn(device, args.mrcnn_batch, args.mrcnn_size)
        shape = f"batch {args.mrcnn_batch}, {args.mrcnn_size}x{round(args.mrcnn_size * 4 / 3)} px"
    model.train()
    amp = mixed_precision(device, not args.no_amp)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        with amp.autocast(device):
            loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        amp.scaler.scale(loss).backward()
        amp.scaler.step(opt)
        amp.scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else _peak_rss_gib()
    return {"model": name, "shape": shape, "device": str(device), "amp": str(amp.dtype) if amp.enabled else "off",
            "steps": args.steps, "s_per_iter": sum(times) / len(times), "min_s_per_iter": min(times),
            "peak_memory_gib": round(peak, 3), "memory": "cuda max allocated" if device.type == "cuda" else
            "process peak RSS", "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1)}


def _peak_rss_gib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    parser.add_argument("--models", nargs="+", choices=("bestie", "mrcnn"), default=["bestie", "mrcnn"])
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 on CUDA, 2 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 5 on CUDA, 1 on CPU)")
    parser.add_argument("--batch", type=int, default=8, help="BESTIE/P2Seg images per step (paper profiles: 8)")
    parser.add_argument("--crop", type=int, default=416, help="BESTIE/P2Seg crop (paper: 416)")
    parser.add_argument("--mrcnn-batch", type=int, default=2, help="Mask R-CNN images per step (per GPU)")
    parser.add_argument("--mrcnn-size", type=int, default=800, help="Mask R-CNN shorter side (paper: 800)")
    parser.add_argument("--no-amp", action="store_true", help="float32 on CUDA too")
    parser.add_argument("--deterministic", action="store_true", help="deterministic kernels, no cuDNN autotuning")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    args.steps = args.steps if args.steps is not None else (20 if gpu else 2)
    args.warmup = args.warmup if args.warmup is not None else (5 if gpu else 1)
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = configure_backends(deterministic=args.deterministic)
    if not gpu:
        settings["cpu_threads"] = torch.get_num_threads()
    print(json.dumps(settings))
    results = []
    for name in args.models:
        result = measure(name, device, args)
        results.append(result)
        print(f"{name:7s} {result['shape']:32s} {result['device']:7s} amp {result['amp']:14s} "
              f"{result['s_per_iter']:8.3f} s/iter (min {result['min_s_per_iter']:.3f})  "
              f"peak {result['peak_memory_gib']:.2f} GiB ({result['memory']})", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"settings": settings, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
