"""What every pipeline stage shares: validated params (only the sections it declares), seeding,
logging and one MLflow run.

A stage registers with the sections of ``params.yaml`` it reads; ``dvc.yaml`` declares the
same sections for it (a test checks the two agree), so ``dvc exp run -S key=value`` re-runs
exactly the stages that read ``key``. Reading an undeclared section raises.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.config.loader import flatten, load_params
from bench.config.schema import Params
from bench.registry import Registry
from bench.tracking import Run, stage_run

log = logging.getLogger("bench")


@dataclass(frozen=True)
class StageInfo:
    """A stage kind of the pipeline and the params sections (or dotted keys) it reads: ``fixed`` ones, and
    those ``more`` names once every module has registered (the report reads every method's section)."""

    name: str
    fixed: tuple[str, ...]
    more: Callable[[], tuple[str, ...]] | None = None

    @property
    def sections(self) -> tuple[str, ...]:
        return self.fixed + (self.more() if self.more else ())


STAGES: Registry[StageInfo] = Registry("stage")


def declare_stage(name: str, *sections: str, more: Callable[[], tuple[str, ...]] | None = None) -> StageInfo:
    info = StageInfo(name, ("profile", *sections), more)
    STAGES.add(name, info)
    return info


class ParamsView:
    """Read access to the declared sections of the validated params only."""

    def __init__(self, params: Params, sections: tuple[str, ...]) -> None:
        self._params = params
        self._roots = {s.split(".")[0] for s in sections}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._roots:
            raise AttributeError(
                f"this stage does not declare params section {name!r} (declared: {', '.join(sorted(self._roots))}); "
                "declare it in the stage and in dvc.yaml"
            )
        return getattr(self._params, name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels on CPU."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch

        from methods.runtime import set_deterministic
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    torch.manual_seed(seed)
    set_deterministic(True, warn_only=True)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


@dataclass
class StageContext:
    params: ParamsView
    profile: str
    run: Run
    overlays: int  # pictures to log to MLflow (tracking.overlays; logging only, so no DVC dependency)


@contextlib.contextmanager
def run_stage(
    info: StageInfo,
    *,
    params_path: Path = Path("params.yaml"),
    method: str = "",
    variant: str = "",
    dataset: str = "",
    feeds: tuple[str, ...] = (),
    extra_tags: Mapping[str, Any] | None = None,
) -> Iterator[StageContext]:
    """Validate params, then open the stage's MLflow run; yields what the stage body needs."""
    params = load_params(params_path)  # raises before any work on invalid params
    dumped = params.model_dump(mode="json")
    declared = {s: _select(dumped, s) for s in info.sections}
    run_name = "/".join(p for p in (info.name, dataset, method, variant) if p)
    tags = {
        "stage": info.name,
        "method": method,
        "variant": variant,
        "dataset": dataset,
        "profile": params.profile,
        "feeds": ",".join(feeds),
        **(extra_tags or {}),
    }
    log.info("stage %s (profile %s)", run_name, params.profile)
    with stage_run(
        # under torchrun (DDP, methods/distributed.py) rank 0 alone records the stage's run
        enabled=params.tracking.enabled and os.environ.get("RANK", "0") == "0",
        experiment=f"{params.tracking.experiment_prefix}/{params.profile}",
        run_name=run_name,
        params=flatten(declared),
        tags=tags,
    ) as run:
        yield StageContext(ParamsView(params, info.sections), params.profile, run,
                           params.tracking.overlays if params.tracking.enabled else 0)


def _select(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node[part]
    return node
