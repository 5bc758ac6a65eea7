"""GrabCut re-estimation of a mined mask within its box (Sec. 3.4, "bottom-up object evidence"), OpenCV.

- ``paper``: the highest-scoring segment proposal's pixels are firm foreground (``GC_FGD``), everything
  outside its box firm background (``GC_BGD``), the rest of the box probable foreground (``GC_PR_FGD``,
  as a rectangle initialisation marks it); initialised from that mask.
- ``release``: rectangle initialisation only (``GC_INIT_WITH_RECT``); boxes under 9 pixels return the
  box itself and a box covering the whole image is shrunk by 3 pixels per side (``do_grabcut``).

Either mode falls back to its initial foreground (paper: the proposal mask; release: the box) when the
image gives GrabCut no background or no foreground sample, or when its result is empty.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

__all__ = ["reestimate"]

_MIN_AREA = 9
_RECT_SHRINK = 3


def _box_mask(shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    out = np.zeros(shape, bool)
    x0, y0, x1, y1 = box
    out[y0:y1, x0:x1] = True
    return out


def reestimate(image: np.ndarray, box: tuple[int, int, int, int], mask: np.ndarray | None = None, *,
               mode: Literal["paper", "release"] = "paper", iterations: int = 5, seed: int = 0) -> np.ndarray:
    """(H, W) bool re-estimated mask of the object in ``box`` (x0, y0, x1, y1, ends exclusive) of the
    RGB uint8 ``image``; ``mask`` (H, W) bool is the mined proposal (required in ``paper`` mode).
    ``seed`` fixes OpenCV's random state (GrabCut's GMM initialisation): deterministic."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = (int(v) for v in box)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"GrabCut box {box} is empty inside the {w}x{h} image")
    bgr = np.ascontiguousarray(image[..., ::-1])
    cv2.setRNGSeed(seed)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    if mode == "release":
        rect_init = _box_mask((h, w), (x0, y0, x1, y1))
        if (x1 - x0) * (y1 - y0) < _MIN_AREA:
            return rect_init
        if x0 == 0 and y0 == 0 and x1 == w and y1 == h:
            x0, y0, x1, y1 = _RECT_SHRINK, _RECT_SHRINK, w - _RECT_SHRINK, h - _RECT_SHRINK
            if x1 <= x0 or y1 <= y0:
                return rect_init
        labels = np.zeros((h, w), np.uint8)
        cv2.grabCut(bgr, labels, (x0, y0, x1 - x0, y1 - y0), bgd, fgd, iterations, cv2.GC_INIT_WITH_RECT)
        fallback = rect_init
    elif mode == "paper":
        if mask is None:
            raise ValueError("paper-mode GrabCut needs the proposal mask as firm foreground")
        fallback = mask.astype(bool)
        labels = np.full((h, w), cv2.GC_BGD, np.uint8)
        labels[y0:y1, x0:x1] = cv2.GC_PR_FGD
        labels[fallback] = cv2.GC_FGD
        if not (labels == cv2.GC_BGD).any() and not (labels == cv2.GC_PR_BGD).any():
            return fallback  # no background sample: the box is the whole image
        if fallback.sum() == 0:
            return fallback
        cv2.grabCut(bgr, labels, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    else:
        raise ValueError(f"unknown GrabCut mode {mode!r}")
    out = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    return out if out.any() else fallback
