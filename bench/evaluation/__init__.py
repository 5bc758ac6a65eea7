"""Evaluation protocols of WSIS-Bench (docs/evaluation.md).

One evaluator contract for every metric family (``process`` per image, ``merge``,
``summarize``, ``counts``), a registry ``EVALUATORS`` and the file-level entry point
:func:`evaluate_files`. Metrics are in percent except counts. This package never imports
``methods`` or the pipeline.

Registered evaluators: ``voc`` (chainercv VOC instance mAP), ``coco`` (COCOeval, segm + bbox, by a
selectable backend: hotcoco, faster-coco-eval or pycocotools), ``pq`` (panopticapi PQ/SQ/RQ; native or
hotcoco backend), ``semantic`` (mIoU), ``pseudo`` (pseudo-label
quality), ``wsod`` (VOC box AP@0.5 and CorLoc).
"""

from bench.evaluation.base import (EVALUATORS, EvaluationError, EvaluationResult, Evaluator, register_evaluator)
from bench.evaluation.gt import CanonicalGT
from bench.evaluation.records import load_instance_predictions, validate_instance_records, write_coco_results
from bench.evaluation.rle import encode as encode_mask
# importing the families registers them
from bench.evaluation.voc import VOCInstanceEvaluator
from bench.evaluation.coco import COCOEvaluator
from bench.evaluation.panoptic import PanopticEvaluator
from bench.evaluation import pq_hotcoco  # noqa: F401  registers the hotcoco PQ backend
from bench.evaluation.semantic import SemanticEvaluator
from bench.evaluation.pseudo import PseudoLabelEvaluator
from bench.evaluation.wsod import WSODEvaluator
from bench.evaluation.api import evaluate_files

__all__ = [
    "EVALUATORS", "EvaluationError", "EvaluationResult", "Evaluator", "register_evaluator", "evaluate_files",
    "CanonicalGT", "load_instance_predictions", "validate_instance_records", "write_coco_results", "encode_mask",
    "VOCInstanceEvaluator", "COCOEvaluator", "PanopticEvaluator", "SemanticEvaluator", "PseudoLabelEvaluator",
    "WSODEvaluator",
]
