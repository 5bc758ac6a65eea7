"""JTSM's heads (Sec. 3.2, 3.4): the proposal feature layers, the WSDDN two-stream MIL head over thing +
stuff classes (Eq. 2's S^MIL), the OICR refinement heads (Eq. 3-4), the instance mask branch (Eq. 9)
and the semantic branch (Eq. 10)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["InstanceMaskHead", "ProposalFeatures", "RefineHeads", "SemanticHead", "WsddnHead",
           "segment_softmax"]


def segment_softmax(logits: torch.Tensor, batch_index: torch.Tensor, num_images: int) -> torch.Tensor:
    """Softmax over the proposals of each image separately, per column: (N, K) → (N, K)."""
    k = logits.shape[1]
    index = batch_index[:, None].expand(-1, k)
    peak = logits.new_full((num_images, k), float("-inf")).scatter_reduce(0, index, logits, "amax")
    e = torch.exp(logits - peak[batch_index])
    total = logits.new_zeros(num_images, k).index_add(0, batch_index, e)
    return e / total[batch_index]


class ProposalFeatures(nn.Sequential):
    """Pooled features → two fully-connected layers with ReLU and dropout (Sec. 3.2; paper 4096, 0.5)."""

    def __init__(self, in_features: int, dim: int, dropout: float) -> None:
        super().__init__(nn.Flatten(), nn.Linear(in_features, dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
                         nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Dropout(dropout))


class WsddnHead(nn.Module):
    """Two streams S^C, S^D (N, n^c); S^MIL = softmax_classes(S^C) ⊙ softmax_proposals(S^D) and the
    image scores y_c = Σ_p S^MIL_pc per image (Sec. 3.2, the input of Eq. 2)."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.classification = nn.Linear(dim, num_classes)
        self.detection = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor, batch_index: torch.Tensor, num_images: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(S^MIL (N, n^c), y (B, n^c))."""
        s_c = torch.softmax(self.classification(x), dim=1)
        s_d = segment_softmax(self.detection(x), batch_index, num_images)
        scores = s_c * s_d
        image = scores.new_zeros(num_images, scores.shape[1]).index_add(0, batch_index, scores)
        return scores, image


class RefineHeads(nn.ModuleList):
    """n^r single fully-connected refinement heads, each over ``num_classes`` + background (the last
    column, detectron2's convention), Eq. 3."""

    def __init__(self, dim: int, num_classes: int, count: int) -> None:
        super().__init__([nn.Linear(dim, num_classes + 1) for _ in range(count)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        """Logits S^r (N, n^c + 1) of every head."""
        return [head(x) for head in self]


class InstanceMaskHead(nn.Sequential):
    """Mask R-CNN's head (Sec. 3.4): 4 conv 3×3 (``dim``) + ReLU, deconv 2×2 stride 2 + ReLU, conv 1×1 to
    one mask logit map per thing class. RoIAlign features (N, C, m/2, m/2) → (N, n^t, m, m)."""

    def __init__(self, in_channels: int, dim: int, num_things: int) -> None:
        layers: list[nn.Module] = []
        for k in range(4):
            layers += [nn.Conv2d(in_channels if k == 0 else dim, dim, 3, padding=1), nn.ReLU(inplace=True)]
        layers += [nn.ConvTranspose2d(dim, dim, 2, stride=2), nn.ReLU(inplace=True), nn.Conv2d(dim, num_things, 1)]
        super().__init__(*layers)


class SemanticHead(nn.Sequential):
    """Two conv 3×3 (``dim``) + ReLU and a 1×1 prediction over the stuff classes, on the full-image
    feature map (Sec. 3.4, Eq. 10)."""

    def __init__(self, in_channels: int, dim: int, num_stuff: int) -> None:
        super().__init__(nn.Conv2d(in_channels, dim, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(dim, dim, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(dim, num_stuff, 1))
