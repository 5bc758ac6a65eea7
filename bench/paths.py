"""Where every stage reads and writes, relative to the repository root (see docs/pipeline.md)."""

from __future__ import annotations

from pathlib import Path

DATA = Path("data")
RUNS = Path("runs")
METRICS = Path("metrics")
REPORTS = Path("reports")
SPECS = REPORTS / "specs"


def canonical_dir(slot: str) -> Path:
    return DATA / "canonical" / slot


def points_dir(slot: str) -> Path:
    return DATA / "points" / slot


def points_file(slot: str, split: str, mode: str) -> Path:
    return points_dir(slot) / f"{split}_{mode}.json"


def wsss_dir(slot: str) -> Path:
    return DATA / "wsss" / slot


def run_dir(slot: str, method: str, variant: str) -> Path:
    return RUNS / slot / method / variant


def metrics_file(slot: str, method: str, variant: str, seed: int = 0) -> Path:
    return METRICS / slot / method / variant / f"seed{seed}.json"


def pretrain_dir(slot: str) -> Path:
    return RUNS / slot / "pretrain"


def backbone_checkpoint(slot: str, init: str, backbone: str) -> str | None:
    """The checkpoint a ``backbone_init`` value names for ``backbone``: None for ``scratch``,
    ``runs/<slot>/pretrain/<backbone>.pt`` for ``pretrain``, else ``<init>/<backbone>.pt`` (a folder of
    checkpoints). Existence is checked where the weights are loaded."""
    if init == "scratch":
        return None
    folder = pretrain_dir(slot) if init == "pretrain" else Path(init)
    return str(folder / f"{backbone}.pt")
