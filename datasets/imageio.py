"""Reading and writing the image files of datasets, with errors that name the file.

Index PNGs (VOC SegmentationObject/SegmentationClass, canonical semantic maps), COCO panoptic
PNGs (``id = R + 256·G + 256²·B``) and a decode check for source images.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from datasets.errors import DatasetError

__all__ = [
    "check_image", "read_rgb", "read_index_png", "read_panoptic_png", "write_index_png", "write_panoptic_png",
    "rgb2id", "id2rgb", "link_or_copy", "MAX_PANOPTIC_ID",
]

#: Largest id a panoptic PNG can hold (three 8-bit channels).
MAX_PANOPTIC_ID = 256**3 - 1
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError)


def check_image(path: Path, *, height: int | None = None, width: int | None = None,
                record: str | None = None) -> tuple[int, int]:
    """Decode ``path`` completely (JPEGs at 1/8 scale: every byte is still entropy-decoded, so a
    truncated or corrupt file fails) and return its ``(height, width)``; a size different from the
    given one is an error."""
    if not path.is_file():
        raise DatasetError("image file is missing", path=path, record=record)
    try:
        with Image.open(path) as im:
            w, h = im.size
            if im.format == "JPEG":
                im.draft(None, (max(1, w // 8), max(1, h // 8)))  # any JPEG mode (L, RGB, CMYK)
            im.load()
    except _DECODE_ERRORS as e:
        raise DatasetError(f"image cannot be decoded (corrupt or truncated): {e}", path=path, record=record) from e
    if (height is not None and h != height) or (width is not None and w != width):
        raise DatasetError(f"image is {w}x{h} (WxH) but its annotations are {width}x{height}: "
                           "mask size different from image size", path=path, record=record)
    return h, w


def read_rgb(path: Path, *, record: str | None = None) -> np.ndarray:
    """The image at ``path`` as ``uint8 (H, W, 3)`` RGB — the one reader of dataset images: a missing, corrupt or
    truncated file is a :class:`DatasetError` naming the file (PIL's own errors name none)."""
    if not path.is_file():
        raise DatasetError("image file is missing", path=path, record=record)
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except _DECODE_ERRORS as e:
        raise DatasetError(f"image cannot be decoded (corrupt or truncated): {e}; re-run `bench data prepare` or "
                           "restore the file", path=path, record=record) from e


def _open_png(path: Path, record: str | None) -> Image.Image:
    if not path.is_file():
        raise DatasetError("annotation PNG is missing", path=path, record=record)
    try:
        im = Image.open(path)
        im.load()
    except _DECODE_ERRORS as e:
        raise DatasetError(f"PNG cannot be decoded (unreadable or truncated): {e}", path=path, record=record) from e
    return im


def read_index_png(path: Path, *, record: str | None = None) -> np.ndarray:
    """An 8-bit index image (palette ``P`` or grey ``L`` PNG) as ``uint8 (H, W)`` — the palette
    indices, not the colours. RGB images are rejected: the index cannot be recovered from them."""
    im = _open_png(path, record)
    with im:
        if im.mode not in ("P", "L"):
            raise DatasetError(f"expected a palette (P) or grey (L) index PNG, got mode {im.mode}",
                               path=path, record=record)
        return np.array(im, dtype=np.uint8)


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """COCO panoptic colour → id: ``R + 256·G + 256²·B`` as ``int32``."""
    rgb = rgb.astype(np.int32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """COCO panoptic id → colour ``uint8 (H, W, 3)`` (RGB order)."""
    ids = ids.astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() > MAX_PANOPTIC_ID):
        raise ValueError(f"panoptic ids must lie in 0..{MAX_PANOPTIC_ID}")
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def read_panoptic_png(path: Path, *, record: str | None = None) -> np.ndarray:
    """A COCO panoptic PNG as segment ids ``int32 (H, W)`` (0 = void)."""
    im = _open_png(path, record)
    with im:
        if im.mode not in ("RGB", "RGBA"):
            raise DatasetError(f"expected an RGB panoptic PNG, got mode {im.mode}", path=path, record=record)
        return rgb2id(np.asarray(im)[..., :3])


def _imwrite(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), array):
        raise OSError(f"{path}: cannot write PNG")


def write_index_png(path: Path, index: np.ndarray) -> None:
    """Write an 8-bit single-channel PNG (canonical semantic maps)."""
    _imwrite(path, np.ascontiguousarray(index, dtype=np.uint8))


def write_panoptic_png(path: Path, ids: np.ndarray, lut: np.ndarray | None = None) -> None:
    """Write segment ids as a COCO panoptic PNG; with ``lut``, pixel ``p`` gets id ``lut[ids[p]]``."""
    if lut is None:
        bgr = id2rgb(ids)[..., ::-1]
    else:
        bgr = np.take(np.ascontiguousarray(id2rgb(lut)[:, ::-1]), ids, axis=0)  # colour table, then one gather
    _imwrite(path, np.ascontiguousarray(bgr))  # OpenCV writes BGR


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst``; copy where a link cannot be made (another file system, …)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
