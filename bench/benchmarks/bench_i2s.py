"""P2Seg I2S: time and memory of Eq. 5 (``i2s_loss``) and S = A^∘β·C (``refined_semantic``), dense vs chunked.

Usage::

    python -m bench.benchmarks.bench_i2s [--crops 128 256 416] [--batches 1 8] [--chunks 256 1024]
        [--max-pairs 65536] [--dim 256] [--classes 21] [--repeats 2] [--max-dense-gb 4] [--device cpu]
        [--threads N]

Inputs: embeddings (B, D, crop/4, crop/4) (stride 4, D = 256 as the release), a synthetic instance map
(4 rectangles on background, a 2-cell ignore border), softmaxed class scores (B, S, ·). Every row is
one forward + backward (``loss.backward()``, ``refined.square().sum().backward()``), best of
``--repeats`` after one warm-up call per process and path. Modes: ``dense`` (one hw×hw block per image),
``chunk=r`` (r-row blocks under checkpointing), ``pairs=k`` (k sampled pairs per image, loss only).

Memory columns:

- ``peak_MiB``: measured. CUDA: ``torch.cuda.max_memory_allocated`` above the inputs. CPU: the peak
  resident set (``VmHWM`` after resetting it through ``/proc/self/clear_refs``) above the resident set
  before the call, with glibc's mmap threshold fixed at 64 KiB (``mallopt``) so freed tensors leave the
  resident set; it counts every byte the process touched (allocator slack, page granularity) — "n/a"
  where the kernel does not allow the reset.
- ``model_MiB``: the analytic model of :func:`model_bytes` (bytes per pair of one hw×hw or r×hw block,
  from the tensors autograd keeps; checked against the CPU measurement), used for the paper profile.

Dense rows whose model exceeds ``--max-dense-gb`` are skipped and listed. Last, the paper profile
(416 crop, stride 4, batch 8, D = 256, S = 21) from the model, fp32 and bf16, against one 80 GB GPU.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import time

import torch

from bench.benchmarks import cpu_model
from methods.p2seg.i2s import i2s_loss, refined_semantic

GB = 1e9
MIB = 2**20


def model_bytes(op: str, n: int, batch: int, *, chunk: int | None, dim: int, classes: int, fbytes: int) -> float:
    """Peak bytes of one forward + backward, n = pixels per image, r = rows per block (n when dense).

    loss, dense: autograd keeps σ(Â) per image, B·n²·f; the last image adds logits and gradients, n²·2f
    (the pair sums go through σ(Â) @ one-hot(labels): no n²-sized mask exists).
    loss, chunked: nothing n²-sized is kept; one block r·n·3f (recomputation + backward), plus the
    embeddings' gathered copy and gradient, 2·B·n·D·f.
    refine, dense: per image logits, logsigmoid buffer and A^∘β are kept, B·n²·3f; transient n²·2f.
    refine, chunked: one block r·n·5f plus 2·B·n·(D + S)·f.
    Checked against CPU peak-RSS at a 64² grid, B = 1, 2, 4, fp32 (within 10 %); bf16 halves every term.
    """
    f = fbytes
    if op == "loss":
        if chunk is None:
            return batch * n * n * f + n * n * 2 * f
        return min(chunk, n) * n * 3 * f + 2 * batch * n * dim * f
    if chunk is None:
        return batch * n * n * 3 * f + n * n * 2 * f
    return min(chunk, n) * n * 5 * f + 2 * batch * n * (dim + classes) * f


def instance_map(batch: int, g: int, seed: int = 0) -> torch.Tensor:
    """(B, g, g) ids: 4 random rectangles (ids 1–4, later ones on top), background 0, ignore 255 border."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.zeros(batch, g, g, dtype=torch.long)
    for b in range(batch):
        for k in range(1, 5):
            y0, x0 = torch.randint(0, g // 2, (2,), generator=gen).tolist()
            hh, ww = torch.randint(g // 8, g // 2, (2,), generator=gen).tolist()
            ids[b, y0:y0 + hh, x0:x0 + ww] = k
    ids[:, :2], ids[:, -2:], ids[:, :, :2], ids[:, :, -2:] = 255, 255, 255, 255
    return ids


class Memory:
    """Peak memory of a call above the memory before it (see the module doc)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu_ok = False
        if device.type == "cpu":
            try:
                libc = ctypes.CDLL("libc.so.6")
                libc.mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD: big blocks mmapped, returned on free
                libc.mallopt(-1, 1 << 16)  # M_TRIM_THRESHOLD
                self._reset()
                self.cpu_ok = True
            except OSError:
                pass

    @staticmethod
    def _status(key: str) -> int:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
        raise OSError(key)

    @staticmethod
    def _reset() -> None:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        elif self.cpu_ok:
            self._reset()
            self.base = self._status("VmRSS")

    def peak(self) -> float | None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - self.base
        return self._status("VmHWM") - self.base if self.cpu_ok else None


def run_once(op: str, emb: torch.Tensor, ids: torch.Tensor, scores: torch.Tensor, mode: dict) -> None:
    e = emb.detach().requires_grad_()
    if op == "loss":
        i2s_loss(e, ids, **mode).backward()
    else:
        c = scores.detach().requires_grad_()
        refined_semantic(c, embeddings=e, chunk_size=mode.get("chunk_size")).square().sum().backward()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crops", type=int, nargs="+", default=[128, 256, 416])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--chunks", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--max-pairs", type=int, default=65536, help="sampled pairs per image (0 = no sampled rows)")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--classes", type=int, default=21)
    ap.add_argument("--stride", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--max-dense-gb", type=float, default=4.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    mem = Memory(device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    how = {"cuda": "torch.cuda.max_memory_allocated", "cpu": "VmHWM-VmRSS" if mem.cpu_ok else "n/a"}[device.type]
    print(f"# nproc={os.cpu_count()} cpu='{cpu_model()}' torch={torch.__version__} threads={torch.get_num_threads()} "
          f"device={device} D={args.dim} S={args.classes} stride={args.stride} repeats={args.repeats} (best of) "
          f"peak={how}")
    gen = torch.Generator().manual_seed(0)
    for op in ("loss", "refine"):  # warm-up: first calls of each path carry one-time costs (seconds, ~200 MB)
        for mode in ({}, {"chunk_size": 64}, {"max_pairs": 64, "generator": gen}):
            if op == "loss" or "max_pairs" not in mode:
                run_once(op, torch.randn(1, args.dim, 16, 16, device=device), instance_map(1, 16).to(device),
                         torch.rand(1, args.classes, 16, 16, device=device), mode)

    skipped = []
    print("\n| op | crop | grid | B | mode | fwd+bwd s | peak_MiB | model_MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for crop in args.crops:
        g = crop // args.stride
        n = g * g
        for batch in args.batches:
            emb = (0.1 * torch.randn(batch, args.dim, g, g, generator=gen)).to(device)
            ids = instance_map(batch, g).to(device)
            scores = torch.softmax(torch.randn(batch, args.classes, g, g, generator=gen), 1).to(device)
            for op in ("loss", "refine"):
                modes = [("dense", None)] + [(f"chunk={r}", r) for r in args.chunks if r < n]
                if op == "loss" and args.max_pairs:
                    modes.append((f"pairs={args.max_pairs}", "pairs"))
                for name, chunk in modes:
                    if chunk == "pairs":
                        mode = {"max_pairs": args.max_pairs, "generator": gen}
                        model = None
                    else:
                        mode = {} if chunk is None else {"chunk_size": chunk}
                        model = model_bytes(op, n, batch, chunk=chunk, dim=args.dim, classes=args.classes, fbytes=4)
                        if chunk is None and model > args.max_dense_gb * GB:
                            skipped.append(f"{op} crop {crop} B={batch} dense (model {model / GB:.1f} GB)")
                            continue
                    best, peak = float("inf"), None
                    for _ in range(args.repeats):
                        mem.start()
                        sync()
                        t0 = time.perf_counter()
                        run_once(op, emb, ids, scores, mode)
                        sync()
                        best = min(best, time.perf_counter() - t0)
                        peak = mem.peak()
                    peak_s = "n/a" if peak is None else f"{peak / MIB:.0f}"
                    model_s = "-" if model is None else f"{model / MIB:.0f}"
                    print(f"| {op} | {crop} | {g}² | {batch} | {name} | {best:.3f} | {peak_s} | {model_s} |",
                          flush=True)
    if skipped:
        print(f"\nskipped (dense model > --max-dense-gb {args.max_dense_gb}): " + "; ".join(skipped))

    g, batch = 416 // args.stride, 8
    n = g * g
    print(f"\n## paper profile (model): crop 416, stride {args.stride} → {g}² = {n} px, B = {batch}, D = {args.dim}, "
          f"S = {args.classes}; one hw×hw matrix = {n * n * 4 / GB:.2f} GB fp32 per image\n")
    print("| op | mode | fp32 GB | bf16 GB | fits 80 GB (fp32) |")
    print("|---|---|---|---|---|")
    for op in ("loss", "refine"):
        for chunk in (None, 1024, 256):
            fp32 = model_bytes(op, n, batch, chunk=chunk, dim=args.dim, classes=args.classes, fbytes=4)
            bf16 = model_bytes(op, n, batch, chunk=chunk, dim=args.dim, classes=args.classes, fbytes=2)
            name = "dense" if chunk is None else f"chunk={chunk}"
            print(f"| {op} | {name} | {fp32 / GB:.2f} | {bf16 / GB:.2f} | {'yes' if fp32 < 80 * GB else 'no'} |")
    both = sum(model_bytes(op, n, batch, chunk=None, dim=args.dim, classes=args.classes, fbytes=4)
               for op in ("loss", "refine"))
    print(f"\nloss + refine dense, fp32, both graphs alive until backward: {both / GB:.1f} GB (upper bound; "
          "the backbone's activations come on top)")


if __name__ == "__main__":
    main()
