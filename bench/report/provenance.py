"""What the runs behind a report recorded about how they were made, read from the metrics files' ``provenance``
(the evaluate stage copies each run's ``run.json`` into it as ``run``) and, for the training time, the run
folder's ``timing.json``. Nothing here is filled in: a field a run did not record is reported as not recorded.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.io import read_json
from bench.report.metrics import ExperimentResult

#: Fields an environment record should hold (as lm-evaluation-harness keeps them): label → where a metrics
#: file's provenance holds it (a dotted path; the first one found is used).
FIELDS: dict[str, tuple[str, ...]] = {
    "commit": ("git_commit",),
    "dirty tree": ("git_dirty", "run.git_dirty"),
    "python": ("python",),
    "torch": ("versions.torch", "run.versions.torch", "torch"),
    "timm": ("versions.timm", "run.versions.timm", "timm"),
    "numpy": ("versions.numpy", "run.versions.numpy", "numpy"),
    "device": ("device", "run.device", "run.config.device"),
    "AMP": ("run.config.amp",),
    "CPU threads": ("run.cpu_threads",),
    "host": ("host",),
}


def _dig(record: dict[str, Any], dotted: str) -> Any:
    node: Any = record
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def environment(results: Iterable[ExperimentResult]) -> dict[str, list[str]]:
    """Label of :data:`FIELDS` → the distinct values the seeds of ``results`` recorded (sorted; [] when no run
    recorded it). A commit is shortened to 10 characters."""
    found: dict[str, set[str]] = {label: set() for label in FIELDS}
    for result in results:
        for record in (seed.get("provenance", {}) for seed in result.per_seed):
            for label, paths in FIELDS.items():
                value = next((v for v in (_dig(record, p) for p in paths) if v is not None), None)
                if value is not None:
                    found[label].add(str(value)[:10] if label == "commit" else str(value).lower()
                                     if isinstance(value, bool) else str(value))
    return {label: sorted(values) for label, values in found.items()}


def environment_lines(env: dict[str, list[str]]) -> list[str]:
    """Markdown bullet lines: the recorded fields with their values, then one line naming the fields no run
    recorded."""
    recorded = [f"{label} {', '.join(f'`{v}`' for v in values)}" for label, values in env.items() if values]
    missing = [label for label, values in env.items() if not values]
    lines = ["Recorded by the runs: " + ("; ".join(recorded) if recorded else "nothing") + "."]
    if missing:
        lines.append("Not recorded by the runs (run.json / the metrics' provenance): " + ", ".join(missing) + ".")
    return lines


def train_seconds(result: ExperimentResult, runs_root: Path) -> list[float]:
    """Per seed, the run's training time in seconds: the provenance's ``timing`` if the metrics file carries one,
    else ``runs/<slot>/<method>/<variant>/seed<k>/timing.json`` (``train_seconds``, summed over rounds; the
    stage's ``stage_seconds`` for a run that does not train). Seeds with neither are left out."""
    out = []
    for seed, record in zip(result.seeds, result.per_seed, strict=True):
        timing = record.get("provenance", {}).get("timing")
        if timing is None:
            path = runs_root / result.slot / result.method / result.variant / f"seed{seed}" / "timing.json"
            timing = read_json(path) if path.is_file() else None
        seconds = _seconds(timing) if isinstance(timing, dict) else None
        if seconds is not None:
            out.append(seconds)
    return out


def _seconds(timing: dict[str, Any]) -> float | None:
    rounds = [v["train_seconds"] for v in timing.values() if isinstance(v, dict) and "train_seconds" in v]
    if "train_seconds" in timing:
        rounds.append(timing["train_seconds"])
    if rounds:
        return float(sum(rounds))
    return float(timing["stage_seconds"]) if "stage_seconds" in timing else None
