"""Reading the metrics files the evaluate stage writes, and aggregating seeds.

Layout: ``metrics/<slot>/<method>/<variant>/seed<k>.json`` with
``{"metrics": {key: value}, "counts": {...}, "provenance": {...}}``.
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
    """A metric over seeds: mean, sample std (0 for one seed) and the number of seeds."""

    mean: float
    std: float
    n: int


@dataclass
class ExperimentResult:
    slot: str
    method: str
    variant: str
    seeds: list[int] = field(default_factory=list)
    per_seed: list[dict[str, Any]] = field(default_factory=list)

    def aggregate(self, key: str) -> Aggregate | None:
        values = [m["metrics"].get(key) for m in self.per_seed]
        values = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
        if not values:
            return None
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return Aggregate(statistics.fmean(values), std, len(values))

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
