"""BESTIE's peak attention module (PAM; paper 002, Sec. 3.1, Fig. 4, appendix Listing 2).

For a feature map X (B, K, H, W): ReLU; the *selector* takes each channel's spatial max
S_p = GMP(X); the *controller* is the constant alpha (G_p = alpha, the non-learnable setting of
DRS; alpha = 0.7, Table 7: 0.3-0.7 barely matter); the *peak stimulator* zeroes the "noisy"
activations below tau_p = alpha * S_p:

    PAM(X)_{k,y,x} = relu(X)_{k,y,x}   if relu(X)_{k,y,x} >= alpha * max_{y',x'} relu(X)_{k,y',x'}
                     0                 otherwise

(strict ``<`` is zeroed, exactly as the release: a value equal to the boundary is kept). No
parameters. In the release's classifier (a VGG-16 variant, output stride 8) it follows each of
the three extra 3x3 convs; the paper's appendix (Table 8) finds the last layer alone best.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["peak_attention", "PeakAttention"]


def peak_attention(x: torch.Tensor, alpha: float = 0.7) -> torch.Tensor:
    """Functional PAM: ReLU, then zero every value below ``alpha`` x its channel's spatial max.

    Args:
        x: (B, K, H, W) features.
        alpha: controller value in [0, 1] (0.7).

    Returns:
        tensor of the same shape; gradients flow through the kept activations only (the
        boundary is treated as a constant, as ``x < boundary`` in the release is not
        differentiable).
    """
    if x.ndim != 4:
        raise ValueError(f"x must be (B, K, H, W), got {tuple(x.shape)}")
    x = F.relu(x)
    boundary = alpha * x.amax(dim=(2, 3), keepdim=True)
    return torch.where(x < boundary, torch.zeros_like(x), x)


class PeakAttention(nn.Module):
    """Peak attention module as an ``nn.Module`` (see :func:`peak_attention`)."""

    def __init__(self, alpha: float = 0.7) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.alpha = float(alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return peak_attention(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"
