"""The release's photometric distortion and discrete random scale (BESTIE's and P2Seg's training recipe).

The paper names no augmentation; the release (``utils/transforms``, used by both BESTIE and P2Seg)
applies, in this order, a photometric distortion of the whole image, a resize, a random scale drawn
from ``linspace(0.7, 1.3, 7)``, a random crop with random padding, and a horizontal flip. This module
holds the two pieces that are not plain geometry; :func:`methods.bestie.train._augment` chains them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: The release's ``RandomBrightness`` (± 16 grey levels), ``RandomContrast`` (× 0.5–1.5) and
#: ``RandomHue`` (± 36° of OpenCV's float HSV hue, 0–360) ranges; each fires with probability 0.5.
BRIGHTNESS_DELTA = 16.0
CONTRAST_RANGE = (0.5, 1.5)
HUE_DELTA = 36.0


@dataclass(frozen=True)
class Distortion:
    """One draw of the photometric distortion: ``None`` = that operation does not fire."""

    brightness: float | None = None  # added to every channel
    contrast: float | None = None  # multiplies every channel
    hue: float | None = None  # degrees added to the hue
    contrast_first: bool = True  # contrast before the hue shift (else after)


def sample_distortion(rng: np.random.Generator) -> Distortion:
    """Draw a :class:`Distortion` as the release's ``PhotometricDistort`` does: brightness with p = 0.5;
    then, with p = 0.5 each, the chain contrast → hue or hue → contrast, in which contrast and hue each
    fire with p = 0.5."""
    brightness = float(rng.uniform(-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA)) if rng.random() < 0.5 else None
    contrast_first = bool(rng.random() < 0.5)
    contrast = hue = None
    if contrast_first and rng.random() < 0.5:
        contrast = float(rng.uniform(*CONTRAST_RANGE))
    if rng.random() < 0.5:
        hue = float(rng.uniform(-HUE_DELTA, HUE_DELTA))
    if not contrast_first and rng.random() < 0.5:
        contrast = float(rng.uniform(*CONTRAST_RANGE))
    return Distortion(brightness, contrast, hue, contrast_first)


def distort(image: np.ndarray, d: Distortion) -> np.ndarray:
    """Apply one :class:`Distortion` to an RGB uint8 image (H, W, 3): float arithmetic clipped to [0, 255]
    after the brightness and each contrast step, the hue shifted in OpenCV's float HSV with wrap-around,
    truncated back to uint8 (the release's ``np.clip(...).astype(np.uint8)``)."""
    im = image.astype(np.float32)
    if d.brightness is not None:
        im = np.clip(im + d.brightness, 0.0, 255.0)
    if d.contrast is not None and d.contrast_first:
        im = np.clip(im * d.contrast, 0.0, 255.0)
    if d.hue is not None:
        hsv = cv2.cvtColor(im, cv2.COLOR_RGB2HSV)
        h = hsv[..., 0] + d.hue
        h[h > 360.0] -= 360.0
        h[h < 0.0] += 360.0
        hsv[..., 0] = h
        im = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if d.contrast is not None and not d.contrast_first:
        im = np.clip(im * d.contrast, 0.0, 255.0)
    return np.clip(im, 0.0, 255.0).astype(np.uint8)


def sample_scale(low: float, high: float, step: float, rng: np.random.Generator) -> float:
    """A random scale factor: one of ``linspace(low, high, int((high - low) / step + 1))`` (the release's
    ``RandomScale`` with a step), uniform on [low, high) for ``step = 0``, ``low`` when the two are equal."""
    if high <= low:
        return float(low)
    if step <= 0:
        return float(rng.uniform(low, high))
    choices = np.linspace(low, high, int((high - low) / step + 1))
    return float(choices[int(rng.integers(len(choices)))])
