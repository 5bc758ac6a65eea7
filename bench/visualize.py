"""Overlay pictures of predictions for MLflow: instance masks blended on the image, outlined."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils


def _colour(index: int) -> np.ndarray:
    """A distinct, stable colour per instance (golden-angle hues)."""
    hue = int((index * 137.508) % 180)
    hsv = np.array([[[hue, 200, 255]]], dtype=np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def overlay_instances(image: np.ndarray, records: Sequence[dict], *, alpha: float = 0.45) -> np.ndarray:
    """RGB picture of ``image`` with each predicted instance (COCO result record) tinted and outlined."""
    canvas = image.astype(np.float32).copy()
    for index, record in enumerate(sorted(records, key=lambda r: r.get("score", 1.0))):
        mask = mask_utils.decode(record["segmentation"]).astype(bool)
        colour = _colour(index)
        canvas[mask] = (1 - alpha) * canvas[mask] + alpha * colour
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(canvas, contours, -1, colour.tolist(), 1)
    return np.clip(canvas, 0, 255).astype(np.uint8)


def save_rgb(path: Path, rgb: np.ndarray, *, scale: int = 1) -> None:
    if scale > 1:
        rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
