"""Reading the metrics files the evaluate stage writes, and aggregating seeds.

Layout: ``metrics/<slot>/<method>/<variant>/seed<k>.json`` with
``{"metrics": {key: value}, "counts": {...}, "provenance": {...}}`` and, for runs that exported
pseudo labels during training, ``"curves": {key: [[step, value], ...]}``.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.io import read_json
from bench.paths import METRICS


@dataclass(frozen=True)
class Aggregate:
    """A metric over seeds: mean, sample standard deviation (None for one seed: no spread to measure) and the
    number of seeds."""

    mean: float
    std: float | None
    n: int


def aggregate(values: list[Any]) -> Aggregate | None:
    """Mean and sample std of the numbers among ``values`` (None and NaN left out); None if there are none."""
    numbers = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not numbers:
        return None
    std = statistics.stdev(numbers) if len(numbers) > 1 else None
    return Aggregate(statistics.fmean(numbers), std, len(numbers))


@dataclass
class ExperimentResult:
    slot: str
    method: str
    variant: str
    seeds: list[int] = field(default_factory=list)
    per_seed: list[dict[str, Any]] = field(default_factory=list)

    def aggregate(self, key: str) -> Aggregate | None:
        return aggregate([m["metrics"].get(key) for m in self.per_seed])

    def curve(self, key: str) -> list[tuple[int, Aggregate]]:
        """A metric recorded over training (``"curves"``): per step, its aggregate over the seeds that have it."""
        by_step: dict[int, list[Any]] = {}
        for m in self.per_seed:
            for step, value in m.get("curves", {}).get(key, []):
                by_step.setdefault(int(step), []).append(value)
        points = [(step, aggregate(values)) for step, values in sorted(by_step.items())]
        return [(step, agg) for step, agg in points if agg is not None]

    @property
    def provenance(self) -> dict[str, Any]:
        return self.per_seed[0].get("provenance", {}) if self.per_seed else {}


def experiment_dir(slot: str, method: str, variant: str, root: Path = METRICS) -> Path:
    return root / slot / method / variant


def load_experiment(slot: str, method: str, variant: str, root: Path = METRICS) -> ExperimentResult | None:
    """All seed files of one experiment, or None if it has not been run."""
    folder = experiment_dir(slot, method, variant, root)
    files = sorted(folder.glob("seed*.json"), key=lambda p: int(p.stem.removeprefix("seed")))
    if not files:
        return None
    result = ExperimentResult(slot, method, variant)
    for path in files:
        result.seeds.append(int(path.stem.removeprefix("seed")))
        result.per_seed.append(read_json(path))
    return result
