"""The detectron2 backend: Mask R-CNN trained through detectron2's documented API, when installed.

detectron2 is not on the package registries; its documentation installs it from source. This
module never imports it at import time: :func:`require_detectron2` checks for it before any work
and raises :class:`BackendUnavailable` with the fix. The conversion helpers (our training labels
→ a COCO instances JSON for ``register_coco_instances``; detectron2 ``Instances`` fields → COCO
result records) are plain Python / NumPy and are tested without detectron2.

Training (:func:`train_and_predict`) follows detectron2's "Getting Started" recipe: ``get_cfg()``
merged with a model-zoo config (``COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml``),
``register_coco_instances``, ``DefaultTrainer(cfg).resume_or_load(resume=True)``, ``train()``, then
``DefaultPredictor`` on the val images. Soft weights are not supported by detectron2's losses:
instances keep their mask and weight-0 instances are left out (the caller records this).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BackendUnavailable", "INSTALL_HINT", "require_detectron2", "contiguous_ids", "coco_instances_json",
           "predictions_from_fields", "Detectron2Settings", "train_and_predict"]

INSTALL_HINT = (
    "Install it from source as its documentation says (https://detectron2.readthedocs.io/en/latest/tutorials/"
    "install.html): `python -m pip install --no-build-isolation 'git+https://github.com/facebookresearch/"
    "detectron2.git'` with torch already installed and a C++ compiler (nvcc for CUDA). With setuptools >= 81, "
    "`detectron2.model_zoo` fails on `import pkg_resources`: install `setuptools<81` first. "
    "Or set segmentor.backend=torchvision (the default), which needs nothing else."
)


class BackendUnavailable(ValueError):
    """The selected segmentor backend cannot run here (a params value this machine cannot honour); the
    message says how to fix it. A ValueError, so the CLI reports it as a one-line error."""


def require_detectron2(importer: Callable[[str], Any] = importlib.import_module) -> None:
    """Raise :class:`BackendUnavailable` unless ``detectron2`` and its model zoo import."""
    try:
        importer("detectron2")
        importer("detectron2.model_zoo")
    except Exception as exc:  # ImportError, or pkg_resources missing inside model_zoo
        raise BackendUnavailable(
            f"segmentor.backend = detectron2, but detectron2 cannot be imported ({type(exc).__name__}: {exc}). "
            + INSTALL_HINT) from exc


def detectron2_installed() -> bool:
    return importlib.util.find_spec("detectron2") is not None


def contiguous_ids(category_ids: Iterable[int]) -> dict[int, int]:
    """detectron2's ``thing_dataset_id_to_contiguous_id`` for a COCO JSON: sorted ids → 0..K-1."""
    return {cid: k for k, cid in enumerate(sorted({int(c) for c in category_ids}))}


def coco_instances_json(
    images: Sequence[Mapping[str, Any]],
    instances: Mapping[int, Sequence[tuple[int, Mapping[str, Any], float]]],
    categories: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """A COCO instances dict detectron2's ``load_coco_json`` reads.

    Args:
        images: ``{id, file_name, height, width}`` (``file_name`` relative to the image root).
        instances: image id → ``(category_id, compressed RLE, weight)``; weight-0 instances are left out.
        categories: ``{id, name}`` of the thing classes.
    """
    from pycocotools import mask as mask_utils

    annotations = []
    for image in images:
        for category_id, rle, weight in instances.get(int(image["id"]), ()):
            if weight <= 0:
                continue
            counts = rle["counts"]
            compressed = {"size": [int(v) for v in rle["size"]],
                          "counts": counts if isinstance(counts, bytes) else str(counts).encode("ascii")}
            annotations.append({"id": len(annotations) + 1, "image_id": int(image["id"]),
                                "category_id": int(category_id),
                                "segmentation": {"size": compressed["size"],
                                                 "counts": compressed["counts"].decode("ascii")},
                                "area": float(mask_utils.area(compressed)),
                                "bbox": [float(v) for v in mask_utils.toBbox(compressed)], "iscrowd": 0})
    return {"images": [{k: image[k] for k in ("id", "file_name", "height", "width")} for image in images],
            "annotations": annotations,
            "categories": [{"id": int(c["id"]), "name": str(c["name"])} for c in categories]}


def predictions_from_fields(pred_masks: np.ndarray, pred_classes: np.ndarray, scores: np.ndarray,
                            contiguous_to_category: Mapping[int, int], *, max_detections: int
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """detectron2 ``Instances`` fields (bool masks (N, H, W), 0-based classes, scores) → masks,
    dataset category ids and scores, best first, at most ``max_detections``, empty masks left out."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    masks = np.asarray(pred_masks, dtype=bool)[order]
    keep = np.flatnonzero(masks.any(axis=(1, 2)))[:max_detections]
    cats = np.array([contiguous_to_category[int(c)] for c in np.asarray(pred_classes)[order]], dtype=np.int64)
    return masks[keep], cats[keep], np.asarray(scores, dtype=np.float64)[order][keep]


@dataclass(frozen=True)
class Detectron2Settings:
    """What the detectron2 backend sets on top of the model-zoo config (SOLVER/INPUT/MODEL keys)."""

    config_name: str
    weights: str
    ims_per_batch: int
    base_lr: float
    momentum: float
    weight_decay: float
    max_iter: int
    steps: tuple[int, ...]
    gamma: float
    warmup_iters: int
    warmup_factor: float
    checkpoint_period: int
    min_size_train: tuple[int, ...]
    max_size: int
    detections_per_image: int
    score_threshold: float
    seed: int
    amp: bool


def train_and_predict(settings: Detectron2Settings, *, train_json: Path, image_root: Path, num_classes: int,
                      output_dir: Path, val_images: Iterable[tuple[int, np.ndarray]], category_ids: Sequence[int],
                      ) -> Iterable[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Train with ``DefaultTrainer`` (resuming from ``output_dir``), then yield per val image
    ``(image_id, masks, category_ids, scores)``. ``val_images`` yields ``(id, uint8 RGB)``; masks are
    detectron2's (pasted at its fixed 0.5 threshold)."""
    require_detectron2()
    import torch
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.data.datasets import register_coco_instances
    from detectron2.engine import DefaultPredictor, DefaultTrainer

    name = f"wsis_train_{abs(hash((str(train_json), str(output_dir))))}"
    register_coco_instances(name, {}, str(train_json), str(image_root))
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(settings.config_name))
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (name,), ()
    cfg.MODEL.WEIGHTS = settings.weights
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = settings.score_threshold
    cfg.MODEL.DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
    cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR = settings.ims_per_batch, settings.base_lr
    cfg.SOLVER.MOMENTUM, cfg.SOLVER.WEIGHT_DECAY = settings.momentum, settings.weight_decay
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS, cfg.SOLVER.GAMMA = settings.max_iter, settings.steps, settings.gamma
    cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.WARMUP_FACTOR = settings.warmup_iters, settings.warmup_factor
    cfg.SOLVER.CHECKPOINT_PERIOD = settings.checkpoint_period
    cfg.SOLVER.AMP.ENABLED = settings.amp and cfg.MODEL.DEVICE == "cuda"
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = settings.min_size_train, settings.max_size
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = settings.min_size_train[-1], settings.max_size
    cfg.TEST.DETECTIONS_PER_IMAGE = settings.detections_per_image
    cfg.SEED = settings.seed
    cfg.OUTPUT_DIR = str(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(cfg.dump(), encoding="utf-8")

    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=True)
    trainer.train()

    cfg.MODEL.WEIGHTS = str(output_dir / "model_final.pth")
    predictor = DefaultPredictor(cfg)
    to_category = {k: cid for cid, k in contiguous_ids(category_ids).items()}
    for image_id, rgb in val_images:
        instances = predictor(np.ascontiguousarray(rgb[:, :, ::-1]))["instances"].to("cpu")  # BGR input
        masks = instances.pred_masks.numpy() if instances.has("pred_masks") else np.zeros((0, *rgb.shape[:2]), bool)
        masks, cats, scores = predictions_from_fields(masks, instances.pred_classes.numpy(),
                                                      instances.scores.numpy(), to_category,
                                                      max_detections=settings.detections_per_image)
        yield image_id, masks, cats, scores

