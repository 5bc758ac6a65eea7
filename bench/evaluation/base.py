"""The evaluator contract shared by every metric family, the registry, and the result type.

Every family (VOC instance mAP, COCO AP, PQ, mIoU, pseudo-label quality, WSOD) is one
class with the same life cycle, in the spirit of detectron2's ``DatasetEvaluator``:

- ``__init__(gt, **options)`` — ground truth (already loaded, canonical form) + options;
- ``process(image_id, ...)`` — one image at a time; accumulates per-image state;
- ``merge(other)`` — folds in the state of another instance built on the same ground
  truth with the same options (another process, another shard);
- ``summarize() -> dict[str, float]`` — metric key → value, in percent (counts stay counts);
- ``per_class() -> dict[str, dict[str, float]]`` — per-class metric key → {class name: value};
- ``counts() -> dict[str, int]`` — images, predictions, and every record the protocol
  skipped or excluded, by reason;
- ``notes() -> list[str]`` — human-readable reasons (e.g. why a metric is NaN).

``evaluate_files`` (a classmethod on each family) is the file-level entry point: it loads
canonical ground truth and a prediction file/folder and runs the evaluator.
"""

from __future__ import annotations

import abc
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np


class EvaluationError(ValueError):
    """Bad input to an evaluator: names the file and the record that is wrong."""


@dataclass(frozen=True)
class EvaluationResult:
    """What an evaluation produces: metrics (percent), counts, per-class metrics, notes."""

    metrics: dict[str, float]
    counts: dict[str, int]
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form: NaN becomes ``None`` (strict JSON has no NaN)."""

        def clean(v: float) -> float | None:
            return None if isinstance(v, float) and not math.isfinite(v) else v

        return {
            "metrics": {k: clean(v) for k, v in self.metrics.items()},
            "counts": dict(self.counts),
            "per_class": {k: {c: clean(v) for c, v in d.items()} for k, d in self.per_class.items()},
            "notes": list(self.notes),
        }


class Evaluator(abc.ABC):
    """Base class of every metric family (see the module docstring for the life cycle)."""

    #: registry name, set by :func:`register_evaluator`
    name: ClassVar[str] = ""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._notes: list[str] = []

    # -- contract -------------------------------------------------------------------
    @abc.abstractmethod
    def process(self, image_id: int, *args: Any, **kwargs: Any) -> None:
        """Accumulate the predictions of one image."""

    @abc.abstractmethod
    def _merge_state(self, other: "Evaluator") -> None:
        """Fold ``other``'s per-image state into ``self`` (same class, same signature)."""

    @abc.abstractmethod
    def summarize(self) -> dict[str, float]:
        """Metric key → value (percent for AP/PQ/IoU-type metrics; counts as numbers)."""

    @abc.abstractmethod
    def _signature(self) -> tuple:
        """What must be equal for two instances to be mergeable (GT identity + options)."""

    #: attributes that do not travel between processes (the ground truth): an evaluator that was
    #: pickled carries only its accumulated state and is meant to be merged into one built on the GT
    _transient: ClassVar[tuple[str, ...]] = ("gt",)

    def signature(self) -> tuple:
        cached = self.__dict__.get("_signature_cache")
        return cached if cached is not None else self._signature()

    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k not in self._transient}
        state["_signature_cache"] = self.signature()
        return state

    def per_class(self) -> dict[str, dict[str, float]]:
        return {}

    def counts(self) -> dict[str, int]:
        return dict(sorted(self._counts.items()))

    def notes(self) -> list[str]:
        return list(self._notes)

    def merge(self, other: "Evaluator") -> "Evaluator":
        """Combine the accumulators of ``other`` (another process/shard) into ``self``."""
        if type(other) is not type(self):
            raise EvaluationError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        if other.signature() != self.signature():
            raise EvaluationError(
                f"cannot merge {self.name} evaluators built on different ground truth or options: "
                f"{self.signature()!r} != {other.signature()!r}"
            )
        self._merge_state(other)
        self._counts.update(other._counts)
        self._notes.extend(n for n in other._notes if n not in self._notes)
        return self

    def result(self) -> EvaluationResult:
        metrics = self.summarize()
        return EvaluationResult(metrics=metrics, counts=self.counts(), per_class=self.per_class(), notes=self.notes())

    # -- file level -------------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def evaluate_files(cls, *, gt_root: Path, split: str, predictions: Path, **options: Any) -> EvaluationResult:
        """Load canonical ground truth + the predictions and evaluate them."""

    # -- helpers ----------------------------------------------------------------------
    def _note(self, text: str) -> None:
        if text not in self._notes:
            self._notes.append(text)


#: name → evaluator class
EVALUATORS: dict[str, type[Evaluator]] = {}


def register_evaluator(name: str):
    """Class decorator: ``@register_evaluator("voc")``. Duplicate names raise ``KeyError``."""

    def deco(cls: type[Evaluator]) -> type[Evaluator]:
        if not (isinstance(cls, type) and issubclass(cls, Evaluator)):
            raise TypeError(f"{cls!r} is not an Evaluator subclass")
        if name in EVALUATORS:
            raise KeyError(f"an evaluator named {name!r} is already registered ({EVALUATORS[name].__qualname__})")
        cls.name = name
        EVALUATORS[name] = cls
        return cls

    return deco


def check_options(kind: str, options: dict[str, Any], allowed: set[str]) -> None:
    """Unknown keyword options stop with a message naming them and the allowed ones."""
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise EvaluationError(f"{kind}: unknown option(s) {unknown}; allowed: {sorted(allowed)}")


def nan_mean(values: list[float]) -> float:
    """Mean over finite values; NaN when there is none (no RuntimeWarning)."""
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0 or np.all(np.isnan(arr)):
        return float("nan")
    return float(np.nanmean(arr))
