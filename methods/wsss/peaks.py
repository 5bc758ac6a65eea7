"""Instance cues from class activation maps: BESTIE's peak extraction (paper 002, Sec. 3.1).

BESTIE's image-level setting takes the local maxima of the CAM of a classifier equipped with the
peak attention module (:mod:`methods.wsss.pam`) as instance cues ("we extract instance cues by
obtaining local maximum points from the PAM ... whose value is larger than the threshold, which
is set to 0.5", appendix). The release (``PAM/point_extraction.py``) fixes the rest:

1. per-channel normalisation of the (ReLU'd, absent classes zeroed, upsampled) CAM by its
   spatial max + 1e-5 (:func:`normalize_cam`) — done by the caller, per view;
2. flip-averaging: (cam(x) + flip(cam(flip(x)))) / 2 — done by the caller (:func:`flip_average`);
3. 3 x 3 mean smoothing (zero padding, i.e. ``avg_pool2d(3, 1, 1)``) — ``smooth_kernel``;
4. local maxima: ``max_pool2d(k = 15, stride 1, padding 7) == cam`` (NMS kernel 15);
5. the 25 highest maxima per class (``topk``), then a confidence threshold: the paper keeps
   > 0.5; the release writes peaks >= 0.1 and its training loader keeps those > 0.7
   (``--pseudo_thresh 0.7`` in ``scripts/run_image_labels.sh``).

Defaults: kernel 15, top_k 25, threshold 0.5 (paper), strict ``>``, smoothing 3 (the paper is
silent on smoothing, so the release's step is the default; ``smooth_kernel=None`` disables it).
"""

from __future__ import annotations

from typing import Iterable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Peak", "normalize_cam", "flip_average", "local_maxima", "extract_peaks"]


class Peak(NamedTuple):
    """One instance cue: class index (CAM channel), pixel column x, row y, CAM score."""

    cls: int
    x: int
    y: int
    score: float


def _as_chw(cam: torch.Tensor | np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(cam)
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 3:
        raise ValueError(f"cam must be (C, H, W) or (1, C, H, W), got {tuple(t.shape)}")
    return t.detach().float()


def normalize_cam(cam: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """ReLU, then divide each channel by its spatial max + eps (release ``cam_normalize``).

    Args:
        cam: (..., H, W) activation maps.

    Returns:
        maps in [0, 1) (an all-zero channel stays zero).
    """
    cam = F.relu(cam)
    return cam / (cam.amax(dim=(-2, -1), keepdim=True) + eps)


def flip_average(cam: torch.Tensor, cam_of_flipped: torch.Tensor) -> torch.Tensor:
    """(cam + horizontally flipped cam of the flipped image) / 2 (release flip TTA)."""
    return (cam + cam_of_flipped.flip(-1)) / 2.0


def local_maxima(cam: torch.Tensor, kernel: int = 15) -> torch.Tensor:
    """Boolean (C, H, W) map of pixels equal to the max of their kernel x kernel window.

    Max-pool NMS (CenterNet style): the window is clipped at the border (padding acts as -inf),
    so border pixels can be maxima. Plateaus: every pixel of a flat top is its window's max,
    so all of them are maxima (ties are not broken here — see :func:`extract_peaks`).
    """
    if kernel < 1 or kernel % 2 != 1:
        raise ValueError(f"kernel must be a positive odd integer, got {kernel}")
    pooled = F.max_pool2d(cam[None], kernel, stride=1, padding=kernel // 2)[0]
    return pooled == cam


def extract_peaks(
    cam: torch.Tensor | np.ndarray,
    *,
    kernel: int = 15,
    top_k: int = 25,
    threshold: float = 0.5,
    smooth_kernel: int | None = 3,
    classes: Iterable[int] | None = None,
) -> list[Peak]:
    """Peaks of a (normalised, flip-averaged) CAM: local maxima, top-k per class, threshold.

    Args:
        cam: (C, H, W) or (1, C, H, W) class activation maps, normally in [0, 1]
            (:func:`normalize_cam`); torch or numpy, any device (read on the CPU).
        kernel: NMS window (15, paper appendix / release).
        top_k: at most this many peaks per class (25, release ``peak_extract(K=25)``).
        threshold: keep peaks with score **strictly greater** than this (paper 0.5 — "larger
            than the threshold"; release training keeps > 0.7).
        smooth_kernel: mean filter before NMS (release: 3, zero padding counted); None or 1 = off.
        classes: channels to search (the image-level labels); None = all channels.

    Returns:
        ``Peak(cls, x, y, score)`` list ordered by class, then score descending; equal scores
        (plateaus, symmetric maps) by raster order (y, then x). Every pixel of a plateau that is
        a local maximum is returned, as in the release; they compete for the top-k slots.
    """
    t = _as_chw(cam).cpu()
    if smooth_kernel is not None and smooth_kernel > 1:
        t = F.avg_pool2d(t[None], smooth_kernel, stride=1, padding=smooth_kernel // 2)[0]
    is_max = local_maxima(t, kernel)
    _, h, w = t.shape
    wanted = range(t.shape[0]) if classes is None else sorted(set(int(c) for c in classes))
    peaks: list[Peak] = []
    for c in wanted:
        score = t[c].reshape(-1)
        keep = torch.nonzero(is_max[c].reshape(-1) & (score > threshold)).flatten()
        if keep.numel() == 0:
            continue
        # sort by score descending, ties by raster index ascending (stable sort on sorted indices)
        order = torch.sort(score[keep], descending=True, stable=True).indices[:top_k]
        for flat in keep[order].tolist():
            y, x = divmod(flat, w)
            peaks.append(Peak(c, x, y, float(score[flat])))
    return peaks
