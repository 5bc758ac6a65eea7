"""Instance-wise boundary maps of Point2Mask (paper 001, Sec. 3.3.1 and Eq. 6-7, Table 3).

- :class:`BoundaryHead` — P^b_high: the multi-level neck features summed at the finest level,
  1x1 conv, ReLU, 1x1 conv, sigmoid. ``detach_inputs`` reproduces the release, whose head reads
  detached features (L_bou then trains the head only).
- :func:`boundary_loss` — L_bou of Eq. 6-7 on a pseudo panoptic map.
- :func:`low_level_boundary` — P^b_low. The paper uses the Structured Edge detector (Dollar and
  Zitnick, ICCV 2013), whose trained forest is not available here; the substitute is a classical
  Sobel gradient magnitude on the CIE-LAB image (scikit-image), scaled to [0, 1].
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from skimage.color import rgb2lab
from skimage.filters import sobel

from .config import Point2MaskConfig

__all__ = ["BoundaryHead", "boundary_loss", "boundary_maps", "low_level_boundary"]

#: Forward 8-neighbour offsets (dy, dx); each unordered neighbour pair once.
_OFFSETS = ((0, 1), (1, 0), (1, 1), (1, -1))


class BoundaryHead(nn.Module):
    """P^b_high (Sec. 3.3.1): sum of the neck levels -> conv1x1 -> ReLU -> conv1x1 -> sigmoid."""

    def __init__(self, channels: int, *, detach_inputs: bool = False) -> None:
        super().__init__()
        self.detach_inputs = detach_inputs
        self.layers = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU(), nn.Conv2d(channels, 1, 1))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Features (B, channels, h_l, w_l), finest first -> (B, h_0, w_0) boundary probabilities."""
        size = features[0].shape[-2:]
        summed = sum(f if f.shape[-2:] == size else F.interpolate(f, size=size, mode="bilinear", align_corners=False)
                     for f in features)
        if self.detach_inputs:
            summed = summed.detach()
        return torch.sigmoid(self.layers(summed))[:, 0]


def _pairs(x: torch.Tensor, dy: int, dx: int) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = x.shape[-2:]
    xs, xt = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    return x[..., 0 : h - dy, xs], x[..., dy:h, xt]


def boundary_loss(boundary: torch.Tensor, segments: torch.Tensor, thing: torch.Tensor, *, eps: float = 1e-5) -> torch.Tensor:
    """L_bou of Eq. 7 with the affinity of Eq. 6, averaged over the images of the batch.

        A_kl = 1 - max(P^b(k), P^b(l))                         over 8-neighbour pairs (k, l)
        L = - sum_{M+_thing} log A / (2 |M+_thing|) - sum_{M+_stuff} log A / (2 |M+_stuff|)
            - sum_{M-} log(1 - A) / |M-|

    M+_thing / M+_stuff: both pixels in the same thing / stuff pseudo segment; M-: different
    segments. Pairs touching a void pixel (segment 0) are left out; an empty set contributes 0.
    ``eps`` is added inside the logs (as the release does).

    Args:
        boundary: (B, H, W) or (H, W) boundary probabilities P^b_high.
        segments: same shape, integer pseudo segment ids (e.g. :func:`~.pseudo.pseudo_masks`), 0 = void.
        thing: same shape, bool, True on pixels of thing segments.
    """
    if boundary.shape != segments.shape or boundary.shape != thing.shape:
        raise ValueError(f"boundary {tuple(boundary.shape)}, segments {tuple(segments.shape)} and "
                         f"thing {tuple(thing.shape)} must have one shape")
    if boundary.ndim == 2:
        boundary, segments, thing = boundary[None], segments[None], thing[None]
    dims = (1, 2)
    sums = {key: boundary.new_zeros(boundary.shape[0]) for key in ("thing", "stuff", "neg")}
    counts = {key: boundary.new_zeros(boundary.shape[0]) for key in sums}
    for dy, dx in _OFFSETS:
        bk, bl = _pairs(boundary, dy, dx)
        sk, sl = _pairs(segments, dy, dx)
        tk, _ = _pairs(thing, dy, dx)
        affinity = 1 - torch.maximum(bk, bl)
        valid = (sk > 0) & (sl > 0)
        same = valid & (sk == sl)
        sets = {"thing": (same & tk, -torch.log(affinity + eps)),
                "stuff": (same & ~tk, -torch.log(affinity + eps)),
                "neg": (valid & (sk != sl), -torch.log(1 - affinity + eps))}
        for key, (mask, loss) in sets.items():
            weight = mask.to(boundary.dtype)
            sums[key] = sums[key] + (loss * weight).sum(dims)
            counts[key] = counts[key] + weight.sum(dims)
    mean = {key: sums[key] / counts[key].clamp_min(1.0) for key in sums}
    return (mean["thing"] / 2 + mean["stuff"] / 2 + mean["neg"]).mean()


def low_level_boundary(image: np.ndarray) -> np.ndarray:
    """P^b_low substitute: Sobel gradient magnitude of the CIE-LAB image, divided by its maximum.

    Args:
        image: (H, W, 3) RGB, uint8 or float in [0, 1].

    Returns:
        (H, W) float32 in [0, 1] (all zeros on a flat image).
    """
    lab = rgb2lab(image)
    magnitude = np.sqrt(sum(sobel(lab[..., c]) ** 2 for c in range(3)))
    peak = magnitude.max()
    return (magnitude / peak if peak > 0 else magnitude).astype(np.float32)


def boundary_maps(config: Point2MaskConfig, *, high: torch.Tensor | None = None,
                  image: np.ndarray | None = None) -> torch.Tensor | None:
    """The P^b maps of Table 3 selected by ``use_high_boundary`` / ``use_low_boundary``, as the
    ``boundary`` argument of :func:`~.pseudo.pseudo_masks`: (K, h, w) or None (P^s only).

    Args:
        high: (h', w') P^b_high (e.g. a :class:`BoundaryHead` output), needed with ``use_high_boundary``.
        image: (H, W, 3) RGB for P^b_low, needed with ``use_low_boundary``. With both maps, P^b_high
            is resized bilinearly to the image size; alone it keeps its resolution.
    """
    maps = []
    if config.use_high_boundary:
        if high is None:
            raise ValueError("use_high_boundary needs the high-level boundary map")
        maps.append(high.float())
    if config.use_low_boundary:
        if image is None:
            raise ValueError("use_low_boundary needs the image")
        low = torch.from_numpy(low_level_boundary(image)).to(maps[0].device if maps else "cpu")
        maps = [F.interpolate(m[None, None], size=low.shape, mode="bilinear", align_corners=False)[0, 0]
                for m in maps] + [low]
    return torch.stack(maps) if maps else None
