"""P2Seg's network: BESTIE's (semantic / centre / offset heads on a timm backbone, fused stride-4
features) plus the I2S affinity head on the same fused features (release: ``aff_conv`` on HRNet's
stride-4 branch).

With ``semantic_from_affinity`` the semantic branch's output *is* the I2S map: the class map C of the
semantic head is propagated by the predicted affinity, S = A^∘β · C (Sec. 3.2), in the forward pass,
so L_seg supervises S and trains the affinity with it, and the online regrouping, inference and
export read S. Release: ``BaseSegmentationModel.forward`` overwrites ``pred['seg']`` with the
propagated map before any loss; paper: "the instance affinity prediction is used by semantic
segmentation branch, it also benefits the learning of global instance features" (Sec. 3.3), while
Eq. 4 names Ĉ, "the class map predicted by the network" — read here as the release does. Without
it: the semantic head's C alone, S only after training (:func:`~methods.p2seg.train.semantic_maps`).
Release details not reproduced: it propagates only the classes of the image's labels, and feeds the
propagated probabilities to the CE as if they were logits; here the ``"semantic"`` output is log S,
so the CE is the cross-entropy of S (of S / ΣS with ``normalize="release"`` or None, whose rows do
not sum to 1)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from methods.bestie import BestieNet
from methods.bestie.model import DecoderFeatures, _upsample

from .i2s import DEFAULT_BETA, AffinityHead, refined_semantic

__all__ = ["P2SegNet"]


class P2SegNet(BestieNet):
    """:class:`~methods.bestie.BestieNet` + :class:`~methods.p2seg.i2s.AffinityHead`.

    ``forward`` adds ``"embedding"`` (B, D, h, w): the affinity embeddings F on the stride-4 grid
    (÷ ``affinity_pool``); with ``semantic_from_affinity`` its ``"semantic"`` is log S, S = A^∘β · C
    (``beta``, ``normalize``, ``chunk_size`` as in :func:`~methods.p2seg.i2s.refined_semantic`),
    upsampled to the input. :meth:`grid_outputs` gives C and F on the affinity grid.
    """

    def __init__(self, num_semantic: int, num_center: int, *, embed_dim: int = 256, affinity_pool: int = 1,
                 semantic_from_affinity: bool = False, beta: float = DEFAULT_BETA,
                 normalize: Literal["row", "release"] | None = "row", chunk_size: int | None = None,
                 **bestie_kwargs: object) -> None:
        super().__init__(num_semantic, num_center, **bestie_kwargs)  # type: ignore[arg-type]
        self.affinity_head = AffinityHead(self.decoder.semantic_channels, embed_dim, pool=affinity_pool)
        self.semantic_from_affinity = semantic_from_affinity
        self.refine_options = {"beta": beta, "normalize": normalize, "chunk_size": chunk_size}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        emb = self.affinity_head(f.semantic)
        if not self.semantic_from_affinity:
            return {**self.heads(f, x.shape[-2:]), "embedding": emb}
        prob = self._grid_probabilities(f)
        with torch.autocast(x.device.type, enabled=False):  # σ(FᵀF)^β in float32
            s = refined_semantic(prob, embeddings=emb.float(), **self.refine_options)
        return {"semantic": _upsample((s + 1e-12).log(), x.shape[-2:]), **self.instance_heads(f, x.shape[-2:]),
                "embedding": emb}

    def _grid_probabilities(self, f: DecoderFeatures) -> torch.Tensor:
        """C: the semantic head's softmax at stride 4, average-pooled like the embeddings when pooled."""
        prob = self.semantic_head(f.semantic).float().softmax(1)
        pool = self.affinity_head.pool
        return F.avg_pool2d(prob, pool) if pool > 1 else prob

    def grid_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(class probabilities C (B, S, h, w), embeddings F (B, D, h, w)) on the affinity grid."""
        f = self.features(x)
        return self._grid_probabilities(f), self.affinity_head(f.semantic).float()
