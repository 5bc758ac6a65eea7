"""Data-parallel training under ``torchrun`` (DDP) on PyTorch's own distributed package (DESIGN.md, "Scale").

A training stage stays one process by default. With ``runtime.nproc_per_node`` (or ``runtime.nnodes``) above 1
the stage's command re-launches itself under ``python -m torch.distributed.run`` (:func:`relaunch_under_torchrun`),
so DVC's stage command stays ``bench pretrain --dataset voc``; each rank then joins the process group from the
environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): gloo on
CPU, NCCL on CUDA (one GPU per rank, ``cuda:<LOCAL_RANK>``).

The schedule does not depend on the number of processes: every rank draws the *global* batch of a step from the
same seeded stream and trains on its slice of it (:func:`per_rank_batch`, :func:`rank_slice`); DDP averages the
gradients and :func:`convert_sync_batchnorm` computes batch-norm statistics over the global batch, so one process
with batch 8 and two with batch 4 each take the same steps — equal up to the order of floating-point sums.

Rank 0 alone writes outputs, checkpoints and the MLflow run (:func:`written_by_main`, ``bench/stages/base.py``);
barriers around the atomic rename make the output appear only once every rank finished its part. A training loop
adopts this in a few lines (docs/scaling.md, "Adopting DDP in a training loop")::

    world = current()                                   # World(size=1) outside torchrun: nothing changes
    model = wrap_model(convert_sync_batchnorm(model, world), world)
    for step in ...:
        idx = global_batch_indices(...)                 # the same on every rank
        loss = criterion(model(x[rank_slice(idx, world)]), ...)
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler

from methods.runtime import resolve_device

__all__ = ["World", "barrier", "convert_sync_batchnorm", "current", "distributed", "epoch_sampler", "gather_rows",
           "init_distributed", "is_main", "launched_by_torchrun", "mean_across_ranks", "per_rank_batch",
           "rank_slice", "relaunch_under_torchrun", "shard", "shutdown", "torchrun_command", "unwrap",
           "wrap_model", "written_by_main"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: What torchrun sets for every rank (``MASTER_*`` too); a process with these is a rank, and never re-launches.
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of one training job; ``size`` 1 outside torchrun."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None  # "gloo" | "nccl"; None = no process group
    device: torch.device | None = None  # the rank's device; None outside torchrun (the caller's config decides)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def tags(self) -> dict[str, Any]:
        """What a run records of its layout (MLflow tags, run.json)."""
        return {"world_size": self.size, "backend": self.backend or "none"}


_WORLD: World | None = None


def launched_by_torchrun(env: dict[str, str] | os._Environ[str] | None = None) -> bool:
    env = os.environ if env is None else env
    return all(key in env for key in TORCHRUN_ENV)


def current() -> World:
    """The world :func:`init_distributed` joined, else one process."""
    if _WORLD is not None and dist.is_available() and dist.is_initialized():
        return _WORLD
    return World()


def is_main() -> bool:
    """Rank 0 (or no distributed job): the process that writes. Before the process group exists, the rank
    torchrun gave this process decides."""
    if _WORLD is not None:
        return _WORLD.is_main
    return int(os.environ.get("RANK", "0")) == 0


def init_distributed(device: str | None = None, *, timeout_s: float = 1800.0) -> World:
    """Join the process group torchrun describes in the environment (a no-op, ``World(size=1)``, outside it).

    The device: ``device`` if given, else ``cuda:<LOCAL_RANK>`` when CUDA is available, else the CPU; the backend
    NCCL on CUDA, gloo on CPU. Ranks other than 0 log warnings only (the main rank speaks for the job)."""
    global _WORLD
    if not launched_by_torchrun():
        return World()
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if device is None and torch.cuda.is_available():
        device = f"cuda:{local_rank}"
    target = resolve_device(device or "cpu")
    if target.type == "cuda":
        torch.cuda.set_device(target)
    backend = "nccl" if target.type == "cuda" else "gloo"
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {"device_id": target} if backend == "nccl" else {}
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=size,
                                timeout=timedelta(seconds=timeout_s), **kwargs)
    _WORLD = World(rank, size, local_rank, backend, target)
    # DDP's note on parameters whose strides differ from its buckets' (timm's 1x1 convs): a copy, not an error
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
    log.info("rank %d of %d joined (%s on %s)", rank, size, backend, target)
    return _WORLD


def shutdown() -> None:
    """Leave the process group (when one was joined)."""
    global _WORLD
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _WORLD = None


@contextlib.contextmanager
def distributed(device: str | None = None) -> Iterator[World]:
    """:func:`init_distributed` for the block, :func:`shutdown` after it (also when it raises)."""
    world = init_distributed(device)
    try:
        yield world
    finally:
        shutdown()


def barrier() -> None:
    """Wait for every rank (nothing to wait for in one process)."""
    world = current()
    if world.size > 1:
        if world.backend == "nccl":
            dist.barrier(device_ids=[world.local_rank])
        else:
            dist.barrier()


@contextlib.contextmanager
def written_by_main(open_atomic: Callable[[], AbstractContextManager[T]]) -> Iterator[T | None]:
    """Rank 0 writes through ``open_atomic()`` (e.g. ``lambda: bench.io.atomic_path(out, directory=True)``) and
    yields its temporary path; the other ranks get None. A barrier before the rename makes the output appear only
    when every rank finished the block (a rank that failed never reaches it, and the job fails without output);
    a barrier after it lets no rank go on before the output is in place."""
    if current().is_main:
        with open_atomic() as tmp:
            yield tmp
            barrier()
        barrier()
    else:
        yield None
        barrier()
        barrier()


# ----------------------------------------------------------------------------------------------- batches
def per_rank_batch(global_batch: int, world_size: int) -> int:
    """The images each rank takes of a global batch; the global batch must split evenly (an uneven split would
    weigh the ranks' samples unequally in DDP's gradient mean)."""
    if global_batch < 1 or world_size < 1:
        raise ValueError(f"batch size {global_batch} and world size {world_size} must be >= 1")
    if global_batch % world_size:
        raise ValueError(f"batch size {global_batch} does not split over {world_size} processes; set a multiple of "
                         f"{world_size} (runtime.nproc_per_node × runtime.nnodes)")
    return global_batch // world_size


def rank_slice(global_items: Sequence[T] | np.ndarray, world: World) -> Any:
    """This rank's contiguous share of a global batch (all ranks draw the same global batch)."""
    per = per_rank_batch(len(global_items), world.size)
    return global_items[world.rank * per:(world.rank + 1) * per]


def shard(n: int, world: World) -> range:
    """This rank's contiguous share of ``n`` items for inference (sizes differ by at most one; may be empty);
    :func:`gather_rows` puts the ranks' results back in order."""
    base, extra = divmod(n, world.size)
    start = world.rank * base + min(world.rank, extra)
    return range(start, start + base + (world.rank < extra))


def gather_rows(local: np.ndarray) -> np.ndarray:
    """Every rank's ``local`` rows concatenated in rank order, on every rank (identity in one process)."""
    world = current()
    if world.size == 1:
        return local
    parts: list[Any] = [None] * world.size
    dist.all_gather_object(parts, local)
    return np.concatenate(parts)


def mean_across_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over the ranks (e.g. the global loss of a step); itself in one process."""
    world = current()
    if world.size == 1:
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / world.size


def epoch_sampler(dataset: Any, *, seed: int, shuffle: bool = True, drop_last: bool = True,
                  world: World | None = None) -> DistributedSampler:
    """A ``DistributedSampler`` for epoch-based loops (``DataLoader(dataset, sampler=s, batch_size=per_rank)``).
    Call ``s.set_epoch(epoch)`` before each epoch: the shuffle is seeded by ``seed + epoch``, the same on every
    rank, and each rank reads every ``world.size``-th index of it (in one process: the whole permutation)."""
    world = world or current()
    return DistributedSampler(dataset, num_replicas=world.size, rank=world.rank, shuffle=shuffle, seed=seed,
                              drop_last=drop_last)


# ----------------------------------------------------------------------------------------------- models
class _AllGather(torch.autograd.Function):
    """Every rank's tensor stacked in rank order (W, ...), differentiable: the gradient of a rank's tensor is the
    sum over ranks of the gradients of its row (one all-reduce)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.stack(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[dist.get_rank()]


class _GlooSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are those of the global batch, over every rank, on CPU (gloo), where
    ``torch.nn.SyncBatchNorm`` refuses CPU tensors. As SyncBatchNorm does, each rank computes its count, mean and
    sum of squared deviations, one differentiable all-gather exchanges them, and every rank combines them exactly
    (Chan et al.'s parallel variance: no E[x²] − E[x]² cancellation); the backward all-reduces their gradients.
    Same parameters and buffers as the layer it replaces (the ``state_dict`` keys do not change); timm's
    ``BatchNormAct2d`` keeps its ``drop`` and ``act`` children, applied after the norm as there."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            out = self._synced(input)
        else:
            out = super().forward(input)
        if hasattr(self, "drop"):
            out = self.drop(out)
        if hasattr(self, "act"):
            out = self.act(out)
        return out

    def _synced(self, x: torch.Tensor) -> torch.Tensor:
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        c = x.shape[1]
        local_mean = x.mean(dims)
        local_m2 = ((x - local_mean.view(shape)) ** 2).sum(dims)
        count = torch.full((1,), x.numel() // c, dtype=x.dtype, device=x.device)
        stats = _AllGather.apply(torch.cat([local_mean, local_m2, count]))  # (world, 2c + 1)
        counts = stats[:, -1:].detach()
        n = counts.sum()
        mean = (stats[:, :c] * counts).sum(0) / n
        var = (stats[:, c:2 * c].sum(0) + (counts * (stats[:, :c] - mean) ** 2).sum(0)) / n
        out = (x - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(var.detach() * (n / (n - 1).clamp(min=1)), alpha=factor)
        return out


def _convert_gloo(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, _GlooSyncBatchNorm):
        out = _GlooSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                 module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert_gloo(child))
    return out


def convert_sync_batchnorm(model: nn.Module, world: World | None = None) -> nn.Module:
    """Batch-norm layers that normalise by the global batch's statistics (the single-process schedule): timm's
    converter (``torch.nn.SyncBatchNorm``, BatchNormAct kept) on CUDA, :class:`_GlooSyncBatchNorm` on CPU. The
    model itself in one process."""
    world = world or current()
    if world.size == 1:
        return model
    if world.device is not None and world.device.type == "cuda":
        from timm.layers import convert_sync_batchnorm as timm_convert

        return timm_convert(model)
    return _convert_gloo(model)


def wrap_model(model: nn.Module, world: World | None = None, **ddp_kwargs: Any) -> nn.Module:
    """``DistributedDataParallel`` around ``model`` (already on the rank's device) in a distributed job, the
    model itself in one process. ``ddp_kwargs`` go to DDP (e.g. ``find_unused_parameters=True`` for a network
    whose losses skip a head on some steps)."""
    world = world or current()
    if world.size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if world.device is not None and world.device.type == "cuda":
        ddp_kwargs.setdefault("device_ids", [world.device.index])
    # gradients as views of DDP's buckets: no copy, and no layout mismatch with grads of non-contiguous params
    ddp_kwargs.setdefault("gradient_as_bucket_view", True)
    return DistributedDataParallel(model, **ddp_kwargs)


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DDP wrapper (what to save, and what inference runs without collectives)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# ----------------------------------------------------------------------------------------------- launching
def torchrun_command(module_args: Sequence[str], *, nproc_per_node: int, nnodes: int = 1,
                     env: dict[str, str] | os._Environ[str] | None = None) -> list[str]:
    """``python -m torch.distributed.run ... --module <module_args>``. One node: ``--standalone`` (a local
    rendezvous on a free port). Several: the rendezvous comes from the environment — ``MASTER_ADDR``
    (+ ``MASTER_PORT``, default 29500, and ``NODE_RANK``) for a static one, as SLURM scripts set them, or torchrun's
    own ``PET_RDZV_ENDPOINT`` / ``PET_RDZV_ID`` / ``PET_RDZV_BACKEND`` (c10d, elastic), which torchrun reads itself."""
    env = os.environ if env is None else env
    if nproc_per_node < 1 or nnodes < 1:
        raise ValueError(f"runtime.nproc_per_node ({nproc_per_node}) and runtime.nnodes ({nnodes}) must be >= 1")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc_per_node}"]
    if nnodes == 1:
        cmd.append("--standalone")
    elif env.get("MASTER_ADDR"):
        if "NODE_RANK" not in env:
            raise ValueError(f"runtime.nnodes = {nnodes} with MASTER_ADDR set: set NODE_RANK (0 .. {nnodes - 1}) "
                             "on every node")
        cmd += [f"--nnodes={nnodes}", f"--node-rank={env['NODE_RANK']}", f"--master-addr={env['MASTER_ADDR']}",
                f"--master-port={env.get('MASTER_PORT', '29500')}"]
    elif env.get("PET_RDZV_ENDPOINT"):
        cmd += [f"--nnodes={nnodes}"]
    else:
        raise ValueError(f"runtime.nnodes = {nnodes} needs a rendezvous from the environment: MASTER_ADDR, "
                         "MASTER_PORT and NODE_RANK (static), or PET_RDZV_ENDPOINT, PET_RDZV_ID and "
                         "PET_RDZV_BACKEND=c10d (elastic); see docs/scaling.md")
    return [*cmd, "--module", *module_args]


def relaunch_under_torchrun(module_args: Sequence[str], *, nproc_per_node: int, nnodes: int = 1) -> None:
    """With more than one process asked for and this process not a rank already: replace this process by torchrun
    running ``python -m <module_args>`` on every rank (``os.execv``: the same process id, so DVC's signals reach
    torchrun, which passes them on to the ranks; a rank that dies makes torchrun stop the others and fail).
    Returns (doing nothing) for one process, or inside a torchrun job."""
    if nproc_per_node * nnodes == 1 or launched_by_torchrun():
        return
    cmd = torchrun_command(module_args, nproc_per_node=nproc_per_node, nnodes=nnodes)
    log.info("re-launching under torchrun: %s", " ".join(cmd[1:]))
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    logging.shutdown()
    os.execv(cmd[0], cmd)
