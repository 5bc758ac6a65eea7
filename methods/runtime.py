"""What every training loop of the methods shares: the device, deterministic kernels on CPU and
mixed precision on CUDA (DESIGN.md, "Runtime rules")."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import torch

__all__ = ["resolve_device", "cap_cpu_threads", "set_deterministic", "deterministic", "MixedPrecision",
           "mixed_precision", "backend_settings", "configure_backends", "use_channels_last"]


def resolve_device(device: str | None) -> torch.device:
    """The configured device; None = CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cap_cpu_threads(limit: int = 2) -> int | None:
    """Without CUDA, cap torch's intra-op threads at ``limit`` (the embedded budget: 2 cores) and return
    the count in effect; None on a CUDA machine (left alone). CPU results are deterministic for a
    seed *and* a thread count — reductions split by thread — so the stages record this count."""
    if torch.cuda.is_available():
        return None
    torch.set_num_threads(min(torch.get_num_threads(), limit))
    return torch.get_num_threads()


def set_deterministic(enabled: bool, *, warn_only: bool = False) -> None:
    """``torch.use_deterministic_algorithms(enabled, warn_only=...)`` without importing ``torch._inductor``,
    which that function does to set inductor's own flag (6-11 s per process on the 2-core machine,
    paid by every stage). The flag only concerns ``torch.compile``, which nothing here uses; it is
    still set when inductor is already loaded."""
    inductor = sys.modules.get("torch._inductor.config")
    if inductor is not None:
        inductor.deterministic = enabled
    torch._C._set_deterministic_algorithms(enabled, warn_only=warn_only)


@contextlib.contextmanager
def deterministic(enabled: bool, *, warn_only: bool = False) -> Iterator[None]:
    """Deterministic kernels (:func:`set_deterministic`) for the block, the previous setting restored afterwards."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    set_deterministic(enabled, warn_only=warn_only)
    try:
        yield
    finally:
        set_deterministic(previous, warn_only=previous_warn_only)


@dataclass
class MixedPrecision:
    """Autocast settings and the gradient scaler of one training run."""

    enabled: bool
    dtype: torch.dtype
    scaler: torch.amp.GradScaler

    def autocast(self, device: torch.device) -> torch.autocast:
        return torch.autocast(device.type, dtype=self.dtype, enabled=self.enabled)


def mixed_precision(device: torch.device, requested: bool) -> MixedPrecision:
    """AMP on CUDA when requested (bf16 where supported, else fp16 with a GradScaler); never on CPU."""
    enabled = bool(requested and device.type == "cuda")
    dtype = torch.bfloat16 if enabled and torch.cuda.is_bf16_supported() else torch.float16
    return MixedPrecision(enabled, dtype, torch.amp.GradScaler("cuda", enabled=enabled and dtype == torch.float16))


def backend_settings() -> dict[str, object]:
    """What decides the kernels of a run, for its record (run.json / MLflow tags): deterministic algorithms, and on
    CUDA the cuDNN flags and version, TF32 and bf16 support."""
    settings: dict[str, object] = {"torch": torch.__version__,
                                   "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()}
    if torch.cuda.is_available():
        cudnn = torch.backends.cudnn
        settings.update({"device": torch.cuda.get_device_name(), "cuda": torch.version.cuda,
                         "cudnn.version": cudnn.version(), "cudnn.enabled": cudnn.enabled,
                         "cudnn.benchmark": cudnn.benchmark, "cudnn.deterministic": cudnn.deterministic,
                         "tf32.matmul": torch.backends.cuda.matmul.allow_tf32, "tf32.cudnn": cudnn.allow_tf32,
                         "bf16_supported": torch.cuda.is_bf16_supported()})
    return settings


def configure_backends(*, deterministic: bool) -> dict[str, object]:
    """The switch between reproducible and fast kernels; returns :func:`backend_settings`.

    Deterministic: deterministic algorithms (warn-only, for ops without a deterministic kernel), cuDNN
    deterministic without autotuning, no TF32, and cuBLAS's fixed workspace (``CUBLAS_WORKSPACE_CONFIG``, read when
    CUDA starts: set it before the first CUDA call). Fast (CUDA training): cuDNN autotuning (``benchmark``, for
    fixed-size crops) and TF32 matmuls/convolutions on Ampere and later."""
    import os

    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    set_deterministic(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic and torch.cuda.is_available()
    torch.backends.cuda.matmul.allow_tf32 = not deterministic
    torch.backends.cudnn.allow_tf32 = not deterministic
    return backend_settings()


def use_channels_last(model: torch.nn.Module, device: torch.device) -> bool:
    """Convert a convolutional network to channels-last memory format where it pays: on CUDA (Tensor Core
    convolutions under AMP take NHWC; NCHW costs transposes); not on CPU, where oneDNN picks its own layout.
    Returns whether it did; the caller then also feeds ``x.contiguous(memory_format=torch.channels_last)``."""
    if device.type != "cuda":
        return False
    model.to(memory_format=torch.channels_last)
    return True
