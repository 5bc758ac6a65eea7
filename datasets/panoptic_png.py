"""COCO panoptic PNG encoding: segment id = R + 256·G + 256²·B, 0 = void."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 colours → (H, W) uint32 segment ids."""
    rgb = rgb.astype(np.uint32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W) segment ids → (H, W, 3) uint8 colours."""
    ids = ids.astype(np.uint32)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def read_panoptic_png(path: Path) -> np.ndarray:
    """Segment-id map of a panoptic PNG; errors name the file."""
    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read panoptic PNG ({exc})") from exc
    return rgb_to_id(rgb)


def write_panoptic_png(path: Path, ids: np.ndarray) -> None:
    Image.fromarray(id_to_rgb(ids)).save(path)
