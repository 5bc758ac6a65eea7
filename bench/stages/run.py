"""The run frame every method stage shares, whatever the method: it reads no method's params.

It validates params and opens the stage's MLflow run (:func:`bench.stages.base.run_stage`), caps the CPU
threads, seeds, opens the slot's train / val splits, and writes ``runs/<slot>/<method>/<variant>/seed<k>/``
atomically with ``run.json`` (the run record the method fills) and ``timing.json`` (its ``timing`` entry
plus the stage's wall time). Beside it, ``seed<k>.partial/`` keeps what must survive an interruption
(training checkpoints, checkpoint labels) and is removed once the run folder is in place. Before any work the
splits' ground truth is validated and every image decoded, so a corrupt file stops the run at once, named.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import predictions as P
from bench.config.loader import flatten
from bench.io import atomic_path, write_run_record
from bench.paths import canonical_dir, run_dir
from bench.stages.base import StageContext, StageInfo, run_stage, seed_everything
from bench.tracking import environment_record
from datasets.canonical import CanonicalDataset, CanonicalSplit

log = logging.getLogger(__name__)
#: A run's kept weights (``torch.load(weights_only=True)``: ``{"model": state_dict, "config": dict}``).
WEIGHTS = "model.pt"


@dataclass
class RunFolder:
    """What a method run reads besides its own params, and where it writes."""

    slot: str
    seed: int
    dataset: CanonicalDataset
    train: CanonicalSplit
    val: CanonicalSplit
    out: Path  # the run folder being written (temporary until the stage succeeds)
    partial: Path  # kept across interrupted runs; removed when the run completes
    info: dict[str, Any]  # run.json

    def checkpoint(self, name: str, config: dict[str, Any], arrays: Iterable[np.ndarray]) -> tuple[Path, str]:
        """Where a resumable training state ``name`` lives and its fingerprint: the training config and the
        bytes of its input ``arrays`` (a checkpoint of another config or data is ignored)."""
        digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
        for array in arrays:
            digest.update(np.ascontiguousarray(array).tobytes())
        return self.partial / f"{name}.pt", f"{name}:{digest.hexdigest()}"


@contextlib.contextmanager
def method_run(stage: StageInfo, *, slot: str, method: str, variant: str, seed: int, params_path: Path,
               **info: Any) -> Iterator[tuple[StageContext, RunFolder]]:
    """Open one run of ``method``/``variant`` on ``slot`` with ``seed``; yields ``(ctx, run)``. ``info``
    starts the run record; the method adds what it read (points mode, WSSS run, config, counts)."""
    with run_stage(stage, params_path=params_path, method=method, variant=variant, dataset=slot) as ctx:
        from methods.runtime import cap_cpu_threads

        cpu_threads = cap_cpu_threads()
        seed_everything(seed)
        data = getattr(ctx.params.data, slot)
        dataset = CanonicalDataset(canonical_dir(slot))
        train, val = dataset.split(data.train_split), dataset.split(data.val_split)
        for split in (train, val):  # a corrupt image stops the run now, naming the file, not mid-training
            split.check_images(workers=cpu_threads or 8)
        record: dict[str, Any] = {"method": method, "variant": variant, "dataset": slot, "seed": seed,
                                  "train_split": train.name, "val_split": val.name, "profile": ctx.profile, **info,
                                  "cpu_threads": cpu_threads, **environment_record(), "timing": {}}
        t0 = time.perf_counter()
        final = run_dir(slot, method, variant) / f"seed{seed}"
        partial = final.with_name(f"{final.name}.partial")
        with atomic_path(final, directory=True) as out:
            yield ctx, RunFolder(slot, seed, dataset, train, val, out, partial, record)
            record["timing"]["stage_seconds"] = round(time.perf_counter() - t0, 2)
            write_run_record(out / P.RUN_INFO, record)
            ctx.run.log_metrics(flatten({"timing": record["timing"]}))
        shutil.rmtree(partial, ignore_errors=True)
        log.info("%s: %s %s seed %d written (%.1f s)", slot, method, variant, seed, record["timing"]["stage_seconds"])


def save_weights(path: Path, model: Any, config: dict[str, Any]) -> None:
    """Keep a trained network: its ``state_dict`` and the resolved config that built it."""
    import torch

    torch.save({"model": model.state_dict(), "config": config}, path)


def load_weights(folder: Path) -> dict[str, Any]:
    """The kept weights of a run folder (``model.pt``), loaded with ``weights_only=True``."""
    import torch

    path = folder / WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the run keeps no weights; run its training stage first "
                                f"(`dvc repro`), or check the source variant")
    return torch.load(path, map_location="cpu", weights_only=True)
