"""Point2Mask's semantic map loss (paper 001, Eq. 5), composed from :mod:`methods.wsss`.

    L_sem = L_partial + alpha_1 * L_LAB + alpha_2 * L_RGB

The three terms (partial CE on the points enlarged to squares, the LAB pairwise prior, the MST
tree filter) live in :mod:`methods.wsss.losses` / :mod:`methods.wsss.tree_filter` and are combined
by :func:`methods.wsss.point_train.compute_losses`; this module only maps
:class:`~.config.Point2MaskConfig` onto that function.
"""

from __future__ import annotations

import torch

from methods.wsss.point_train import PointWsssConfig, compute_losses

from .config import Point2MaskConfig

__all__ = ["semantic_loss"]


def semantic_loss(
    logits: torch.Tensor, images_u8: torch.Tensor, point_labels: torch.Tensor, config: Point2MaskConfig,
    pairwise_scale: float = 1.0,
) -> dict[str, torch.Tensor]:
    """L_sem of Eq. 5 for one batch: ``{"loss", "partial", ["lab"], ["rgb"]}``.

    Args:
        logits: (B, C, H, W) semantic logits, at the resolution the loss runs at.
        images_u8: (B, 3, H, W) uint8 RGB at that resolution.
        point_labels: (B, H, W) long, the point pixels' classes, 255 elsewhere (squares of side
            ``config.point_square`` are drawn here).

    ``pairwise_scale`` multiplies alpha_1 and alpha_2 (a warm-up ramp of the training loop; 1 = Eq. 5).
    The Table 4 switches are ``config.use_lab`` / ``config.use_rgb``; the remaining settings of the
    terms (LAB kernels and threshold, tree-filter sigma) are the :class:`PointWsssConfig` defaults.
    """
    wsss = PointWsssConfig(
        use_lab=config.use_lab,
        use_rgb=config.use_rgb,
        alpha_lab=config.alpha_lab,
        alpha_rgb=config.alpha_rgb,
        point_square=config.point_square,
        loss_stride=1,
    )
    return compute_losses(logits, images_u8, point_labels, wsss, pairwise_scale=pairwise_scale)
