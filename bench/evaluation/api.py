"""File-level entry point used by the pipeline's ``evaluate`` stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.evaluation.base import EVALUATORS, EvaluationError, EvaluationResult


def evaluate_files(kind: str, *, gt_root: Path, split: str, predictions: Path, **options: Any) -> EvaluationResult:
    """Evaluate a prediction file/folder against one split of a canonical dataset.

    ``kind`` is a registered evaluator name (``voc``, ``coco``, ``pq``, ``semantic``, ``pseudo``,
    ``wsod``); ``options`` go to that evaluator (unknown options are an error naming the allowed
    ones). ``predictions``: a COCO results JSON (voc, coco, wsod), pseudo labels JSON (pseudo,
    with ``points=<points JSON>``), a COCO panoptic JSON with its PNG folder (pq), or a folder of
    semantic PNGs (semantic).
    """
    try:
        cls = EVALUATORS[kind]
    except KeyError:
        raise EvaluationError(f"unknown evaluation kind {kind!r}; registered: {sorted(EVALUATORS)}") from None
    return cls.evaluate_files(gt_root=Path(gt_root), split=split, predictions=Path(predictions), **options)
