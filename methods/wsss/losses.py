"""Point-supervised semantic losses of Point2Mask's category-wise semantic map (paper 001, Eq. 5).

    L_sem = L_partial + alpha_1 * L_LAB + alpha_2 * L_RGB,     alpha_1 = alpha_2 = 3

- :func:`partial_cross_entropy` — L_partial, CE on the labelled (point) pixels only; the release
  first enlarges every point to a 17 x 17 square (:func:`expand_points`).
- :func:`lab_pairwise_loss` — L_LAB, BoxInst's pairwise colour prior in CIE-LAB (Tian et al.,
  CVPR 2021): neighbours of a 3x3 and a 5x5 kernel with dilation 2 (weights 0.35 / 0.65 in the
  release), a pair counts when exp(-0.5 ||LAB_i - LAB_j||) >= 0.3, per-pair loss
  -log sum_c p_i(c) p_j(c).
- L_RGB lives in :mod:`methods.wsss.tree_filter` (:func:`~methods.wsss.tree_filter.rgb_tree_loss`).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "IGNORE_INDEX",
    "to_unit_float",
    "partial_cross_entropy",
    "expand_points",
    "rgb_to_lab",
    "lab_pairwise_loss",
]

#: Label value of unlabelled pixels in point-label maps.
IGNORE_INDEX = 255


def to_unit_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1]; float images are returned unchanged (assumed [0, 1])."""
    if image.dtype == torch.uint8:
        return image.float() / 255.0
    if not image.is_floating_point():
        raise TypeError(f"image must be uint8 or floating point, got {image.dtype}")
    return image


# ---------------------------------------------------------------------------------------------
# L_partial
# ---------------------------------------------------------------------------------------------


def partial_cross_entropy(
    logits: torch.Tensor, point_labels: torch.Tensor, *, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """L_partial of Eq. 5: cross-entropy on the labelled pixels only.

        L_partial = (1 / |L|) * sum_{i in L} -log softmax(logits_i)[y_i]

    averaged over all labelled pixels of the batch (the release's ``partial_cross_entropy_loss``:
    sum / number of valid pixels). With no labelled pixel the loss is an exact 0 that still
    depends on ``logits`` (so ``backward()`` works and gives zero gradients) — the release would
    divide 0 by 0 here.

    Args:
        logits: (B, C, H, W) unnormalised class scores.
        point_labels: (B, H, W) integer class map, ``ignore_index`` (255) = unlabelled.
            Values outside [0, C) other than ``ignore_index`` raise.

    Returns:
        scalar loss tensor.
    """
    if logits.ndim != 4 or point_labels.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"logits {tuple(logits.shape)} / labels {tuple(point_labels.shape)} mismatch")
    target = point_labels.long()
    valid = target != ignore_index
    if bool(((target[valid] < 0) | (target[valid] >= logits.shape[1])).any()):
        raise ValueError("point label outside [0, C)")
    count = valid.sum()
    if count.item() == 0:
        return logits.sum() * 0.0
    loss = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
    return loss / count


def expand_points(
    point_labels: torch.Tensor, size: int = 17, *, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Enlarge every labelled pixel to a ``size`` x ``size`` square (the release: 17 x 17).

    The release builds a one-hot map of the point labels, dilates it with
    ``max_pool2d(size, stride 1, padding size // 2)`` (``expand_target_masks``) and reads the
    label back with ``max`` over the class axis, which returns the first maximal channel.
    This function reproduces that exactly:

    - squares are clipped at the image border;
    - **overlap rule:** where squares of different classes overlap, the lowest class index wins
      (even on the point pixel of a higher class);
    - squares of the same class simply merge.

    Args:
        point_labels: (B, H, W) or (H, W) integer map, ``ignore_index`` = unlabelled.
        size: odd side length; 1 returns a copy.

    Returns:
        the expanded map, same shape, dtype and device; ``ignore_index`` outside every square.
    """
    if size < 1 or size % 2 != 1:
        raise ValueError(f"size must be a positive odd integer, got {size}")
    squeeze = point_labels.ndim == 2
    labels = point_labels[None] if squeeze else point_labels
    if labels.ndim != 3:
        raise ValueError(f"point_labels must be (B, H, W) or (H, W), got {tuple(point_labels.shape)}")
    out = torch.full_like(labels, ignore_index)
    classes = torch.unique(labels[labels != ignore_index])
    for cls in classes.tolist():  # ascending: a lower class claims a pixel first and keeps it
        grown = F.max_pool2d((labels == cls).float()[:, None], size, stride=1, padding=size // 2)[:, 0] > 0
        out = torch.where(grown & (out == ignore_index), torch.full_like(out, cls), out)
    return out[0] if squeeze else out


# ---------------------------------------------------------------------------------------------
# L_LAB
# ---------------------------------------------------------------------------------------------

# sRGB (D65) -> XYZ, and the D65 2-degree white point: the constants of skimage.color.rgb2lab and
# of the release's ``_normalized_rgb_to_lab``.
_XYZ_FROM_RGB = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
_WHITE_D65 = (0.95047, 1.0, 1.08883)


@torch.no_grad()
def rgb_to_lab(image: torch.Tensor) -> torch.Tensor:
    """Vectorised sRGB -> CIE-LAB (D65), matching :func:`skimage.color.rgb2lab`.

    Args:
        image: (B, 3, H, W) or (3, H, W) RGB, uint8 or float in [0, 1] (clipped to [0, 1]).

    Returns:
        float LAB of the same shape (L in [0, 100], a/b roughly in [-128, 127]). No gradient.
    """
    rgb = to_unit_float(image).clamp(0.0, 1.0)
    if rgb.shape[-3] != 3:
        raise ValueError(f"expected 3 channels at dim -3, got {tuple(image.shape)}")
    dtype = rgb.dtype
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    m = torch.tensor(_XYZ_FROM_RGB, dtype=dtype, device=rgb.device)
    xyz = torch.einsum("mc,...chw->...mhw", m, linear)
    white = torch.tensor(_WHITE_D65, dtype=dtype, device=rgb.device).view(3, 1, 1)
    xyz = xyz / white
    f = torch.where(xyz > 0.008856, xyz.clamp_min(0.0) ** (1.0 / 3.0), 7.787 * xyz + 16.0 / 116.0)
    fx, fy, fz = f.unbind(-3)
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=-3)


def _shift_pair(x: torch.Tensor, dy: int, dx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x at pixels i, x at pixels i + (dy, dx)) over every i whose neighbour is in the image."""
    h, w = x.shape[-2:]
    ys, yt = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xt = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    return x[..., ys, xs], x[..., yt, xt]


def lab_pairwise_loss(
    probs: torch.Tensor,
    image_rgb: torch.Tensor,
    *,
    kernels: Sequence[tuple[int, int, float]] = ((3, 2, 0.35), (5, 2, 0.65)),
    threshold: float = 0.3,
    eps: float = 1e-8,
    from_logits: bool = False,
    valid_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_LAB of Eq. 5: BoxInst-style pairwise colour prior in LAB space.

    For every kernel (k, d, weight), the neighbours of pixel i are the k*k - 1 positions
    i + d * (a, b), a, b in [-k//2, k//2], (a, b) != (0, 0) (both directions of each pair are
    visited, as the release's unfold does). With colour similarity
    sim_ij = exp(-0.5 * ||LAB_i - LAB_j||_2), a pair *counts* when sim_ij >= threshold; its loss
    is -log sum_c p_i(c) p_j(c) (the probability that i and j take the same class). Per image
    and kernel, the loss is the mean over its counted pairs (0 without any); these are averaged
    over the batch and summed with the kernel weights — the release's ``color_prior_loss``.

    Differences from the release (both deliberate): pairs whose neighbour falls outside the
    image are skipped (the release zero-pads, which adds zero-loss pairs with LAB (0, 0, 0) to
    the denominator next to dark border pixels); the optional ``valid_mask`` must hold at both
    pixels of a pair (the release masks the centre pixel only).

    Args:
        probs: (B, C, H, W) class probabilities (or logits with ``from_logits``).
        image_rgb: (B, 3, H, W) RGB, uint8 or float in [0, 1], same H, W as ``probs``.
        kernels: (kernel size, dilation, weight) triples; release ((3, 2, 0.35), (5, 2, 0.65)).
        threshold: similarity threshold (0.3).
        eps: clamp of sum_c p_i p_j before the log (probability input only).
        from_logits: ``probs`` are logits: use log-softmax and logsumexp (exact, no clamp — the
            release's formulation).
        valid_mask: optional (B, H, W) bool; pairs touching an invalid pixel do not count.

    Returns:
        scalar loss tensor.
    """
    if probs.ndim != 4 or image_rgb.ndim != 4 or image_rgb.shape[1] != 3:
        raise ValueError(f"probs {tuple(probs.shape)} / image {tuple(image_rgb.shape)}: expected 4-D, RGB")
    b, _, h, w = probs.shape
    if image_rgb.shape[0] != b or image_rgb.shape[2:] != (h, w):
        raise ValueError(f"image {tuple(image_rgb.shape)} does not match probs {tuple(probs.shape)}")
    lab = rgb_to_lab(image_rgb).to(probs.device, probs.dtype)
    logp = F.log_softmax(probs, dim=1) if from_logits else None
    total = probs.sum() * 0.0
    for k, d, weight in kernels:
        if k < 1 or k % 2 != 1 or d < 1:
            raise ValueError(f"kernel size must be odd and dilation >= 1, got {(k, d)}")
        r = k // 2
        sums = probs.new_zeros(b)
        counts = probs.new_zeros(b)
        for a in range(-r, r + 1):
            for c in range(-r, r + 1):
                dy, dx = a * d, c * d
                if (dy, dx) == (0, 0) or abs(dy) >= h or abs(dx) >= w:
                    continue
                lab_i, lab_j = _shift_pair(lab, dy, dx)
                sim = torch.exp(-0.5 * torch.linalg.vector_norm(lab_i - lab_j, dim=1))
                counted = sim >= threshold
                if valid_mask is not None:
                    m_i, m_j = _shift_pair(valid_mask.bool(), dy, dx)
                    counted = counted & m_i & m_j
                if from_logits:
                    l_i, l_j = _shift_pair(logp, dy, dx)
                    pair_loss = -torch.logsumexp(l_i + l_j, dim=1)
                else:
                    p_i, p_j = _shift_pair(probs, dy, dx)
                    pair_loss = -torch.log((p_i * p_j).sum(1).clamp_min(eps))
                cw = counted.to(pair_loss.dtype)
                sums = sums + (pair_loss * cw).sum((1, 2))
                counts = counts + cw.sum((1, 2))
        total = total + weight * (sums / counts.clamp_min(1.0)).mean()
    return total
