"""P2Seg's network: BESTIE's (semantic / centre / offset heads on a timm backbone, fused stride-4
features) plus the I2S affinity head on the same fused features (release: ``aff_conv`` on HRNet's
stride-4 branch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from methods.bestie import BestieNet

from .i2s import AffinityHead

__all__ = ["P2SegNet"]


class P2SegNet(BestieNet):
    """:class:`~methods.bestie.BestieNet` + :class:`~methods.p2seg.i2s.AffinityHead`.

    ``forward`` adds ``"embedding"`` (B, D, h, w): the affinity embeddings F on the stride-4 grid
    (÷ ``affinity_pool``); :meth:`grid_outputs` gives the class map C and F on the same grid for
    the refined semantic map S = A^∘β · C.
    """

    def __init__(self, num_semantic: int, num_center: int, *, embed_dim: int = 256, affinity_pool: int = 1,
                 **bestie_kwargs: object) -> None:
        super().__init__(num_semantic, num_center, **bestie_kwargs)  # type: ignore[arg-type]
        self.affinity_head = AffinityHead(self.decoder.semantic_channels, embed_dim, pool=affinity_pool)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        out = self.heads(f, x.shape[-2:])
        out["embedding"] = self.affinity_head(f.semantic)
        return out

    def grid_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(class probabilities C (B, S, h, w), embeddings F (B, D, h, w)) on the affinity grid: the
        semantic head's softmax at stride 4, average-pooled like the embeddings when pooled."""
        f = self.features(x)
        prob = self.semantic_head(f.semantic).float().softmax(1)
        pool = self.affinity_head.pool
        if pool > 1:
            prob = F.avg_pool2d(prob, pool)
        return prob, self.affinity_head(f.semantic).float()
