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
from collections.abc import Container
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:  # gt.py and records.py import this module: their names are imported where they are used
    from bench.evaluation.gt import CanonicalGT
    from bench.evaluation.records import InstancePredictions


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
    #: the canonical ground truth, set by every family's ``__init__``
    gt: "CanonicalGT"

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
        """What ``summarize()`` stored in ``self._per_class`` (it runs first if it has not yet); ``{}`` if none."""
        if not hasattr(self, "_per_class"):
            self.summarize()
        return getattr(self, "_per_class", {})

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

    @classmethod
    def _evaluate_instance_files(cls, gt_root: Path, split: str, predictions: Path, *, need: dict[str, bool],
                                 check_rle: bool = True, **options: Any) -> EvaluationResult:
        """``evaluate_files`` of a family fed instance records: load the ground truth and the records
        (``need``: the ``need_*`` flags of :func:`~bench.evaluation.records.load_instance_predictions`),
        build the evaluator with ``options`` and run :meth:`_process_predictions`."""
        from bench.evaluation.gt import CanonicalGT
        from bench.evaluation.records import load_instance_predictions

        gt = CanonicalGT.load(gt_root, split)
        preds = load_instance_predictions(predictions, gt, **need, check_rle=check_rle)
        return cls(gt, **options)._process_predictions(preds)  # type: ignore[call-arg]

    def _process_predictions(self, preds: "InstancePredictions") -> EvaluationResult:
        """For a family fed instance records: process every ground-truth image in dataset order with its
        validated records in ``preds`` (none when it has none) and return the result."""
        for im in self.gt.images:
            image_id = int(im["id"])
            self.process(image_id, preds.by_image.get(image_id, []), validated=True)
        return self.result()

    # -- helpers ----------------------------------------------------------------------
    def _note(self, text: str) -> None:
        if text not in self._notes:
            self._notes.append(text)

    def _check_image_id(self, image_id: Any, done: Container[int], *, prefix: str | None = None) -> int:
        """``int(image_id)`` once it is known to be an image of the ground truth and not in ``done``
        (the images processed so far); the errors start with ``prefix`` (default: the family's name)."""
        image_id = int(image_id)
        prefix = self.name if prefix is None else prefix
        if image_id not in self.gt.image_by_id:
            raise EvaluationError(f"{prefix}: image_id {image_id} is not an image of {self.gt.instances_path}")
        if image_id in done:
            raise EvaluationError(f"{prefix}: image {image_id} processed twice")
        return image_id

    def _image_records(self, image_id: Any, records: list[dict], done: Container[int], *, validated: bool,
                       what: str = "predictions", **need: bool) -> tuple[int, list[dict]]:
        """The start of an instance family's ``process``: the checked image id (:meth:`_check_image_id`) and
        its records, validated against the ground truth unless ``validated`` (``need``: the ``need_*``
        flags of :func:`~bench.evaluation.records.validate_instance_records`; errors name
        ``"<what> of image <id>"``)."""
        from bench.evaluation.records import validate_instance_records

        image_id = self._check_image_id(image_id, done)
        if not validated:
            records = validate_instance_records(
                [dict(r, image_id=image_id) for r in records], self.gt, source=f"{what} of image {image_id}",
                **need).by_image.get(image_id, [])
        return image_id, records


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
