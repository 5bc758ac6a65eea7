"""SOLOv2 instance segmentation (Wang et al., "SOLOv2: Dynamic and Fast Instance Segmentation", NeurIPS 2020).

The harness' own implementation, written from the paper and, where the paper is silent, from the
documented defaults of the reference implementations (mmdetection ``SOLOV2Head`` /
``MaskFeatModule`` with ``solov2_r50_fpn_1x_coco``, AdelaiDet ``SOLOv2``). P2Seg (Table 4) trains it
on pseudo labels.

Architecture (paper Sec. 3.2, Fig. 2):

* **Pyramid.** The shared :class:`methods.segmentor.backbone.TimmFPN` yields P2..P5 (strides 4..32).
  The instance levels are, as in mmdetection (FPN ``num_outs=5`` + ``SOLOV2Head.resize_feats``):
  P2 bilinearly downsampled to stride 8, P3, P4, P5 and P6 = stride-2 max-pool (kernel 1) of P5
  bilinearly resized back to P5's size; i.e. effective strides ``(8, 8, 16, 32, 32)``. With fewer than
  5 grids (small-image configs) the first ``len(grids)`` of these levels are used.
* **Category branch** (Sec. 3.1/3.2.1): the level feature is bilinearly resized to ``S x S``, passes
  ``head_convs`` 3x3 conv-GN(32)-ReLU layers of ``head_channels`` and a 3x3 conv to ``K`` sigmoid
  logits per grid cell (bias initialised to the 0.01 prior).
* **Kernel branch** (Sec. 3.2.1): the same input with two normalised coordinate channels appended
  (CoordConv), resized to ``S x S``, ``head_convs`` conv-GN-ReLU layers and a 3x3 conv predicting a
  ``E * k * k`` dynamic kernel per cell (``E = mask_out_channels``, ``k = kernel_size = 1``).
* **Unified mask feature branch** (Sec. 3.2.2, Fig. 3): P2..P5 each pass ``i`` conv-GN-ReLU +
  2x bilinear upsampling stages (P2: one conv, no upsampling) down to stride 4, the coarsest (P5)
  with coordinate channels appended; the sum goes through a 1x1 conv-GN-ReLU to ``E`` channels.
* **Dynamic convolution** (Sec. 3.2.3): the mask of grid cell ``(i, j)`` is
  ``sigmoid(G_ij * F)`` where ``G_ij`` is its predicted kernel and ``F`` the mask feature.

Training (Sec. 3.2.4, inheriting SOLOv1's label assignment and loss): an instance whose box scale
``sqrt(w * h)`` falls in a level's scale range is positive at the grid cells of its centre region —
the box ``(c_x, c_y, sigma * w/2, sigma * h/2)`` around its mask's centre of mass, ``sigma = 0.2``,
limited to the 3x3 neighbourhood of the centre cell. ``L = L_cate + lambda * L_mask``: sigmoid focal
loss (alpha 0.25, gamma 2) summed over all cells and classes divided by ``num_pos + 1``, and the mean
Dice loss of the positive cells' masks (at stride 4), ``lambda = 3``.

Inference (Sec. 3.2.4, 3.3): category scores after point NMS (2x2 max-pool) above ``score_thr``;
masks ``> mask_thr`` smaller than the level stride are dropped; scores are multiplied by the
maskness (mean probability inside the binary mask); the top ``nms_pre`` go through Matrix NMS
(Gaussian, sigma 2); scores below ``update_thr`` are dropped and the best ``max_per_img`` kept.

Deviations from mmdetection (all documented where they occur):

* Per-instance soft ``weights`` (harness extension for pseudo labels): a positive cell's focal-loss
  row (all ``K`` classes) and its Dice loss are multiplied by its instance's weight, while the
  normaliser stays the positive-cell count (mmdetection's ``weight`` + ``avg_factor`` convention), so
  weights scale an instance's contribution and all-ones weights reproduce mmdetection exactly. A
  weight-0 instance's cells are thus neither positives nor negatives for the loss terms.
* A grid cell claimed by two instances belongs to the later one for both its label and its mask
  target (mmdetection keeps the later label but trains the cell's kernel towards both masks).
* Inference keeps at most ``max_candidates`` (cell, class) pairs above ``score_thr`` (by category
  score) before computing their masks, bounding memory for barely trained models; trained models
  stay far below the default 2000.
* Output boxes are the tight boxes of the thresholded masks at the original size (``x2 = last column
  + 1``), as the contract asks; SOLOv2 itself predicts no boxes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import sigmoid_focal_loss

__all__ = [
    "SOLOv2",
    "SOLOv2Config",
    "LevelTargets",
    "assign_targets",
    "center_of_mass",
    "dice_loss",
    "masks_to_boxes",
    "matrix_nms",
    "points_nms",
]

#: Effective strides of the five instance levels (P2 downsampled, P3, P4, P5, P6 resized to P5).
LEVEL_STRIDES: tuple[int, ...] = (8, 8, 16, 32, 32)


@dataclass(frozen=True)
class SOLOv2Config:
    """SOLOv2 hyper-parameters; defaults are the paper's / mmdetection ``solov2_r50_fpn_1x_coco``.

    Attributes:
        grids: number of grid cells ``S`` per side of each instance level, finest first (1 to 5 levels).
        scale_ranges: ``(low, high)`` range of ``sqrt(box_w * box_h)`` (resized-image pixels, both
            inclusive) of the instances assigned to each level; ranges overlap on purpose.
        sigma: centre-region scale ``epsilon``: a cell is positive when inside the box of half-size
            ``sigma * (w/2, h/2)`` around the mask's centre of mass (and within the 3x3 neighbourhood
            of the centre cell).
        head_channels: width of the category / kernel branch convs (mmdet ``feat_channels``).
        head_convs: stacked 3x3 conv-GN-ReLU layers in each of those branches.
        mask_feat_channels: width inside the mask feature branch (mmdet ``MaskFeatModule.feat_channels``).
        mask_out_channels: channels ``E`` of the unified mask feature = input channels of a dynamic kernel.
        kernel_size: spatial size ``k`` of the dynamic kernels (odd; the paper uses 1).
        norm_groups: GroupNorm groups of every conv-GN-ReLU (channel widths must be multiples of it).
        focal_alpha, focal_gamma: sigmoid focal loss parameters of the category branch.
        cate_loss_weight: weight of the category loss.
        mask_loss_weight: ``lambda``, weight of the Dice mask loss.
        dice_eps: smoothing added to both squared sums of the Dice denominator (SOLO: 1e-3).
        prior_prob: initial foreground probability of the category logits (bias init).
        score_thr: minimum category score of a (cell, class) candidate at inference.
        mask_thr: probability threshold binarising predicted masks.
        update_thr: minimum score after Matrix NMS (mmdet ``filter_thr``).
        nms_pre: candidates (best rescored first) entering Matrix NMS.
        max_per_img: detections kept per image.
        nms_kernel: Matrix NMS decay function, ``"gaussian"`` or ``"linear"``.
        nms_sigma: Gaussian decay ``exp(-nms_sigma * iou**2)`` (the paper's ``exp(-iou**2 / 0.5)``).
        max_candidates: cap on candidates above ``score_thr`` whose masks are computed (by category
            score; guards memory on untrained models, not part of the paper).
    """

    grids: tuple[int, ...] = (40, 36, 24, 16, 12)
    scale_ranges: tuple[tuple[float, float], ...] = ((1, 96), (48, 192), (96, 384), (192, 768), (384, 2048))
    sigma: float = 0.2
    head_channels: int = 512
    head_convs: int = 4
    mask_feat_channels: int = 128
    mask_out_channels: int = 256
    kernel_size: int = 1
    norm_groups: int = 32
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    cate_loss_weight: float = 1.0
    mask_loss_weight: float = 3.0
    dice_eps: float = 1e-3
    prior_prob: float = 0.01
    score_thr: float = 0.1
    mask_thr: float = 0.5
    update_thr: float = 0.05
    nms_pre: int = 500
    max_per_img: int = 100
    nms_kernel: Literal["gaussian", "linear"] = "gaussian"
    nms_sigma: float = 2.0
    max_candidates: int = 2000

    def __post_init__(self) -> None:
        grids = tuple(int(g) for g in self.grids)
        ranges = tuple((float(lo), float(hi)) for lo, hi in self.scale_ranges)
        object.__setattr__(self, "grids", grids)
        object.__setattr__(self, "scale_ranges", ranges)
        if not 1 <= len(grids) <= len(LEVEL_STRIDES):
            raise ValueError(f"SOLOv2 supports 1..{len(LEVEL_STRIDES)} grid levels, got {grids}")
        if len(ranges) != len(grids):
            raise ValueError(f"{len(ranges)} scale_ranges for {len(grids)} grids")
        if any(g < 1 for g in grids) or any(lo > hi for lo, hi in ranges):
            raise ValueError(f"invalid grids {grids} or scale_ranges {ranges}")
        for name in ("head_channels", "mask_feat_channels", "mask_out_channels"):
            if getattr(self, name) % self.norm_groups:
                raise ValueError(f"{name}={getattr(self, name)} is not a multiple of norm_groups={self.norm_groups}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {self.kernel_size}")
        if self.nms_kernel not in ("gaussian", "linear"):
            raise ValueError(f"nms_kernel must be 'gaussian' or 'linear', got {self.nms_kernel!r}")
        if self.head_convs < 1:
            raise ValueError("head_convs must be >= 1")


# --------------------------------------------------------------------------------------------------
# Functional helpers (unit-tested on their own)
# --------------------------------------------------------------------------------------------------


def dice_loss(pred: Tensor, target: Tensor, eps: float = 1e-3) -> Tensor:
    """Per-instance Dice loss of SOLO (SOLOv1 Eq. 3): ``1 - 2 sum(p q) / (sum(p^2) + sum(q^2))``.

    Args:
        pred: ``(N, H, W)`` mask probabilities (after sigmoid).
        target: ``(N, H, W)`` binary (or soft) targets.
        eps: added to each squared sum of the denominator (SOLO's 1e-3) so empty pairs are defined.

    Returns:
        ``(N,)`` losses in ``[0, 1]``: ~0 for a perfect prediction, 1 for disjoint masks.
    """
    p = pred.flatten(1).float()
    q = target.flatten(1).float()
    inter = (p * q).sum(1)
    denom = (p * p).sum(1) + eps + (q * q).sum(1) + eps
    return 1.0 - 2.0 * inter / denom


def matrix_nms(
    masks: Tensor,
    labels: Tensor,
    scores: Tensor,
    *,
    kernel: Literal["gaussian", "linear"] = "gaussian",
    sigma: float = 2.0,
    mask_area: Tensor | None = None,
) -> Tensor:
    """Matrix NMS (SOLOv2 Sec. 3.3): decay every mask's score in one parallel step.

    With the masks sorted by decreasing score, ``iou_ij`` (``i`` before ``j``, same label) is the
    pairwise mask IoU and ``comp_i = max_k<i iou_ki`` the most ``i`` itself is overlapped by a
    better mask. Mask ``j``'s decay is ``min_i f(iou_ij) / f(comp_i)`` over the higher-scored ``i``
    (taking ``iou_ij = 0`` elsewhere), with ``f(x) = exp(-sigma * x**2)`` (Gaussian; the paper writes
    ``exp(-x**2 / sigma')`` with ``sigma' = 0.5``) or ``f(x) = 1 - x`` (linear).

    Args:
        masks: ``(N, H, W)`` binary masks (bool or 0/1).
        labels: ``(N,)`` class of each mask; only same-class pairs decay each other.
        scores: ``(N,)`` scores, in any order.
        kernel: ``"gaussian"`` or ``"linear"``.
        sigma: Gaussian decay strength.
        mask_area: optional precomputed ``(N,)`` mask areas.

    Returns:
        ``(N,)`` decayed scores in the input order (the best mask of each overlap group keeps its score).
    """
    n = scores.numel()
    if n == 0:
        return scores.clone()
    order = torch.argsort(scores, descending=True, stable=True)
    flat = masks[order].reshape(n, -1).float()
    area = flat.sum(1) if mask_area is None else mask_area[order].float()
    inter = flat @ flat.t()
    union = (area[:, None] + area[None, :] - inter).clamp_min(1e-6)
    same = labels[order][:, None] == labels[order][None, :]
    iou = (inter / union * same).triu(diagonal=1)  # iou[i, j], i ranked before j
    comp = iou.max(0).values[:, None]  # comp[i]: largest IoU of mask i with a better one
    if kernel == "gaussian":
        decay = torch.exp(-sigma * (iou.pow(2) - comp.pow(2))).min(0).values
    elif kernel == "linear":
        decay = ((1.0 - iou) / (1.0 - comp).clamp_min(1e-6)).min(0).values
    else:
        raise ValueError(f"unknown Matrix NMS kernel {kernel!r}")
    out = torch.empty_like(scores)
    out[order] = scores[order] * decay.to(scores.dtype)
    return out


def points_nms(heat: Tensor, kernel: int = 2) -> Tensor:
    """Point NMS on category maps: zero every cell that is not the max of its ``kernel x kernel``
    window ending at it (SOLO's 2x2 max-pool trick). ``heat``: ``(B, C, S, S)`` probabilities."""
    hmax = F.max_pool2d(heat, kernel, stride=1, padding=1)
    keep = hmax[..., :-1, :-1] == heat
    return heat * keep


def center_of_mass(masks: Tensor) -> Tensor:
    """``(N, 2)`` centre of mass ``(y, x)`` in pixel-index coordinates of ``(N, H, W)`` masks
    (NaN for an empty mask)."""
    h, w = masks.shape[-2:]
    rows = masks.sum(2, dtype=torch.float32)  # (N, H) pixels per row
    cols = masks.sum(1, dtype=torch.float32)  # (N, W) pixels per column
    total = rows.sum(1)
    ys = torch.arange(h, dtype=torch.float32, device=masks.device)
    xs = torch.arange(w, dtype=torch.float32, device=masks.device)
    return torch.stack([(rows * ys).sum(1) / total, (cols * xs).sum(1) / total], 1)


class LevelTargets(NamedTuple):
    """Targets of one image on one ``S x S`` level, cells flattened row-major (``i * S + j``).

    Attributes:
        labels: ``(S*S,)`` int64 class ``1..K`` of positive cells, 0 for background.
        weights: ``(S*S,)`` float loss weight of each cell (1 for background, the instance's weight
            for its positive cells).
        instance: ``(S*S,)`` int64 index of the instance (into the image's targets) whose mask a
            positive cell predicts, -1 for background.
    """

    labels: Tensor
    weights: Tensor
    instance: Tensor


def _grid_cell(v: float, s: int) -> int:
    """Index of the grid cell (of ``s``) containing normalised coordinate ``v``, clipped to the grid."""
    return min(max(int(math.floor(v * s)), 0), s - 1)


def assign_targets(
    boxes: Tensor,
    labels: Tensor,
    masks: Tensor,
    weights: Tensor | None,
    *,
    grids: Sequence[int],
    scale_ranges: Sequence[tuple[float, float]],
    sigma: float = 0.2,
) -> list[LevelTargets]:
    """SOLO label assignment (SOLOv1 Sec. 3.2 / SOLOv2 Sec. 3.2.4) for one image.

    An instance goes to every level whose ``[low, high]`` range contains ``sqrt(w * h)`` of its box.
    On a level with ``S`` cells per side over the (padded) image of size ``H x W``, its centre cell is
    ``floor(c / size * S)`` of the mask's centre of mass ``c``; the positive cells are those of the
    centre region (``c +- sigma * (w/2, h/2)``) clipped to the 3x3 neighbourhood of the centre cell.
    Instances with empty masks are skipped. Later instances overwrite earlier ones on shared cells.

    Args:
        boxes: ``(N, 4)`` xyxy boxes (pixels of the image the masks cover).
        labels: ``(N,)`` int64 classes ``1..K``.
        masks: ``(N, H, W)`` binary masks over the whole (padded) image.
        weights: ``(N,)`` per-instance loss weights, or ``None`` for all ones.
        grids: ``S`` of each level.
        scale_ranges: ``(low, high)`` box-scale range of each level.
        sigma: centre-region scale.

    Returns:
        One :class:`LevelTargets` per level.
    """
    device = masks.device
    n = int(boxes.shape[0])
    h, w = masks.shape[-2:]
    if weights is None:
        weights = torch.ones(n, device=device)
    out: list[LevelTargets] = []
    if n:
        scale = torch.sqrt((boxes[:, 2] - boxes[:, 0]).clamp_min(0) * (boxes[:, 3] - boxes[:, 1]).clamp_min(0))
        center = center_of_mass(masks)  # (N, 2) y, x
        valid = masks.flatten(1).any(1)
        half_h = 0.5 * (boxes[:, 3] - boxes[:, 1]) * sigma
        half_w = 0.5 * (boxes[:, 2] - boxes[:, 0]) * sigma
        # Normalised centre and centre-region bounds, one host transfer for all instances.
        geo = torch.stack(
            [center[:, 0] / h, center[:, 1] / w, (center[:, 0] - half_h) / h, (center[:, 0] + half_h) / h,
             (center[:, 1] - half_w) / w, (center[:, 1] + half_w) / w, scale, valid.float()], 1,
        ).nan_to_num(0.0).tolist()
        label_list = labels.tolist()
        weight_list = weights.float().tolist()
    else:
        geo, label_list, weight_list = [], [], []
    for s, (low, high) in zip(grids, scale_ranges):
        cell_labels = torch.zeros((s, s), dtype=torch.int64)
        cell_weights = torch.ones((s, s), dtype=torch.float32)
        cell_instance = torch.full((s, s), -1, dtype=torch.int64)
        for k in range(n):
            cy, cx, top_f, down_f, left_f, right_f, sc, ok = geo[k]
            if not ok or not (low <= sc <= high):
                continue
            ci, cj = _grid_cell(cy, s), _grid_cell(cx, s)
            top, down = max(_grid_cell(top_f, s), ci - 1), min(_grid_cell(down_f, s), ci + 1)
            left, right = max(_grid_cell(left_f, s), cj - 1), min(_grid_cell(right_f, s), cj + 1)
            cell_labels[top : down + 1, left : right + 1] = int(label_list[k])
            cell_weights[top : down + 1, left : right + 1] = weight_list[k]
            cell_instance[top : down + 1, left : right + 1] = k
        out.append(LevelTargets(cell_labels.flatten().to(device), cell_weights.flatten().to(device),
                                cell_instance.flatten().to(device)))
    return out


def masks_to_boxes(masks: Tensor) -> Tensor:
    """``(N, 4)`` xyxy pixel boxes enclosing the nonzero pixels of ``(N, H, W)`` masks
    (``x2 = last column + 1``, ``y2 = last row + 1``; all zeros for an empty mask)."""
    n, h, w = masks.shape
    if n == 0:
        return masks.new_zeros((0, 4), dtype=torch.float32)
    m = masks.bool()
    rows, cols = m.any(2), m.any(1)
    ys = torch.arange(h, device=masks.device)
    xs = torch.arange(w, device=masks.device)
    y1 = torch.where(rows, ys, h).min(1).values
    y2 = torch.where(rows, ys, -1).max(1).values + 1
    x1 = torch.where(cols, xs, w).min(1).values
    x2 = torch.where(cols, xs, -1).max(1).values + 1
    boxes = torch.stack([x1, y1, x2, y2], 1).float()
    return boxes * m.flatten(1).any(1, keepdim=True)


def coord_features(x: Tensor) -> Tensor:
    """``(B, 2, H, W)`` CoordConv channels (x then y, each linearly spaced in ``[-1, 1]``) for ``x``."""
    b, _, h, w = x.shape
    xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
    ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy])[None].expand(b, -1, -1, -1)


# --------------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------------


def _conv_gn_relu(cin: int, cout: int, groups: int, kernel: int = 3) -> nn.Sequential:
    """3x3 (or ``kernel``) conv without bias, GroupNorm, ReLU: mmdet's ``ConvModule`` with GN."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
        nn.GroupNorm(groups, cout),
        nn.ReLU(inplace=True),
    )


class MaskFeatureBranch(nn.Module):
    """Unified mask feature branch (SOLOv2 Sec. 3.2.2, Fig. 3; mmdet ``MaskFeatModule``).

    Level ``i`` of P2..P5 passes ``max(i, 1)`` conv-GN-ReLU layers, each but P2's followed by a 2x
    bilinear upsampling, so all reach stride 4; P5 gets two coordinate channels first. The sum is
    projected by a 1x1 conv-GN-ReLU to ``out_channels`` (the mask feature ``F``, ``E`` channels).
    """

    def __init__(self, in_channels: int, feat_channels: int, out_channels: int, groups: int,
                 num_levels: int = 4) -> None:
        super().__init__()
        self.levels = nn.ModuleList()
        for i in range(num_levels):
            layers: list[nn.Module] = []
            extra = 2 if i == num_levels - 1 else 0
            for j in range(max(i, 1)):
                layers.append(_conv_gn_relu((in_channels + extra) if j == 0 else feat_channels, feat_channels, groups))
                if i > 0:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.levels.append(nn.Sequential(*layers))
        self.pred = _conv_gn_relu(feat_channels, out_channels, groups, kernel=1)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        out: Tensor | None = None
        last = len(self.levels) - 1
        for i, (f, branch) in enumerate(zip(feats, self.levels)):
            if i == last:
                f = torch.cat([f, coord_features(f)], 1)
            y = branch(f)
            if out is not None and y.shape[-2:] != out.shape[-2:]:
                y = F.interpolate(y, size=out.shape[-2:], mode="bilinear", align_corners=False)
            out = y if out is None else out + y
        assert out is not None
        return self.pred(out)


class SOLOv2Head(nn.Module):
    """Category and kernel branches shared over the instance levels (SOLOv2 Sec. 3.2.1).

    ``forward`` takes the instance-level features and returns, per level, the category logits
    ``(B, K, S, S)`` and the dynamic kernels ``(B, E * k * k, S, S)``.
    """

    def __init__(self, in_channels: int, num_classes: int, cfg: SOLOv2Config) -> None:
        super().__init__()
        self.grids = cfg.grids
        c, g = cfg.head_channels, cfg.norm_groups
        self.cate_convs = nn.Sequential(*[_conv_gn_relu(in_channels if i == 0 else c, c, g)
                                          for i in range(cfg.head_convs)])
        self.kernel_convs = nn.Sequential(*[_conv_gn_relu(in_channels + 2 if i == 0 else c, c, g)
                                            for i in range(cfg.head_convs)])
        self.cate_out = nn.Conv2d(c, num_classes, 3, padding=1)
        self.kernel_out = nn.Conv2d(c, cfg.mask_out_channels * cfg.kernel_size**2, 3, padding=1)
        self.prior_prob = cfg.prior_prob

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        cates: list[Tensor] = []
        kernels: list[Tensor] = []
        for f, s in zip(feats, self.grids):
            x = torch.cat([f, coord_features(f)], 1)
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
            cates.append(self.cate_out(self.cate_convs(x[:, :-2])))
            kernels.append(self.kernel_out(self.kernel_convs(x)))
        return cates, kernels


def _init_weights(module: nn.Module, cate_out: nn.Conv2d, prior_prob: float) -> None:
    """mmdet init of the SOLOv2 head: convs N(0, 0.01) with zero bias; category bias at the prior."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    nn.init.constant_(cate_out.bias, -math.log((1 - prior_prob) / prior_prob))


class SOLOv2(nn.Module):
    """SOLOv2 with torchvision's detection calling convention.

    Args:
        num_classes: classes including background, as in torchvision (labels ``1..K``,
            ``K = num_classes - 1`` category channels).
        backbone: a feature pyramid returning an ordered mapping whose first four maps are P2..P5
            (strides 4, 8, 16, 32) with ``backbone.out_channels`` channels (e.g. ``TimmFPN``; an extra
            ``"pool"`` level is ignored, P6 is derived here).
        min_size, max_size, image_mean, image_std: resizing / normalisation of
            :class:`~torchvision.models.detection.transform.GeneralizedRCNNTransform` (a tuple
            ``min_size`` samples one per training image; inference uses the last); batches are padded
            to multiples of 32.
        **options: fields of :class:`SOLOv2Config`.

    ``model.train(); model(images, targets)`` returns ``{"loss_cate", "loss_mask"}`` (already weighted,
    float32). ``model.eval(); model(images)`` returns per image ``boxes (N, 4)``, ``labels (N,)``,
    ``scores (N,)`` and ``masks (N, 1, H, W)`` probabilities at the input image's size.
    Targets: ``boxes`` xyxy, ``labels`` 1..K, ``masks`` uint8 ``(N, H, W)``, optional ``weights (N,)``.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: nn.Module,
        *,
        min_size: int | tuple[int, ...] = 800,
        max_size: int = 1333,
        image_mean: Sequence[float] = (0.485, 0.456, 0.406),
        image_std: Sequence[float] = (0.229, 0.224, 0.225),
        **options: object,
    ) -> None:
        super().__init__()
        known = {f.name for f in fields(SOLOv2Config)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown SOLOv2 options {unknown}; known: {sorted(known)}")
        if num_classes < 2:
            raise ValueError("num_classes counts background and must be >= 2")
        self.config = SOLOv2Config(**options)  # type: ignore[arg-type]
        self.num_classes = num_classes
        self.backbone = backbone
        in_channels = int(backbone.out_channels)
        cfg = self.config
        sizes = (min_size,) if isinstance(min_size, int) else tuple(min_size)
        self.transform = GeneralizedRCNNTransform(sizes, max_size, list(image_mean), list(image_std), size_divisible=32)
        self.mask_branch = MaskFeatureBranch(in_channels, cfg.mask_feat_channels, cfg.mask_out_channels,
                                             cfg.norm_groups)
        self.head = SOLOv2Head(in_channels, num_classes - 1, cfg)
        _init_weights(self.mask_branch, self.head.cate_out, cfg.prior_prob)
        _init_weights(self.head, self.head.cate_out, cfg.prior_prob)

    # ---------------------------------------------------------------------------------------------
    def _levels(self, feats: Sequence[Tensor]) -> list[Tensor]:
        """Instance-level inputs: P2 at stride 8, P3, P4, P5, P6 (max-pooled P5 resized to P5)."""
        p2, p3, p4, p5 = feats[:4]
        p6 = F.max_pool2d(p5, 1, stride=2)
        levels = [
            F.interpolate(p2, scale_factor=0.5, mode="bilinear", align_corners=False),
            p3,
            p4,
            p5,
            F.interpolate(p6, size=p5.shape[-2:], mode="bilinear", align_corners=False),
        ]
        return levels[: len(self.config.grids)]

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        if self.training and targets is None:
            raise ValueError("SOLOv2 needs targets in training mode")
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        if self.training:
            assert targets is not None
            k = self.num_classes - 1
            for t in targets:
                if t["labels"].numel() and (int(t["labels"].min()) < 1 or int(t["labels"].max()) > k):
                    raise ValueError(f"target labels must lie in 1..{k}")
        image_list, targets = self.transform(images, targets)
        batch = image_list.tensors
        feats = list(self.backbone(batch).values())
        mask_feats = self.mask_branch(feats[:4])
        cates, kernels = self.head(self._levels(feats))
        if self.training:
            assert targets is not None
            return self._losses(cates, kernels, mask_feats, targets, batch.shape[-2:])
        return self._predict(cates, kernels, mask_feats, image_list.image_sizes, original_sizes, batch.shape[-2:])

    # ---------------------------------------------------------------------------------------------
    def _losses(
        self,
        cates: list[Tensor],
        kernels: list[Tensor],
        mask_feats: Tensor,
        targets: list[dict[str, Tensor]],
        padded: torch.Size,
    ) -> dict[str, Tensor]:
        """``L = L_cate + lambda * L_mask`` (SOLOv2 Sec. 3.2.4), with per-instance weights."""
        cfg = self.config
        hp, wp = int(padded[0]), int(padded[1])
        fh, fw = mask_feats.shape[-2:]
        b, k = cates[0].shape[:2]
        per_image: list[list[LevelTargets]] = []
        mask_targets: list[Tensor] = []
        for t in targets:
            m = t["masks"]
            m = F.pad(m.to(torch.uint8), (0, wp - m.shape[-1], 0, hp - m.shape[-2]))
            levels = assign_targets(t["boxes"], t["labels"], m, t.get("weights"),
                                    grids=cfg.grids, scale_ranges=cfg.scale_ranges, sigma=cfg.sigma)
            per_image.append(levels)
            # Mask targets at the mask-feature stride (bilinear rescale + round, like mmcv.imrescale),
            # only for the instances some cell predicts.
            small = torch.zeros((m.shape[0], fh, fw), device=m.device)
            used = torch.unique(torch.cat([lt.instance for lt in levels]))
            used = used[used >= 0]
            if used.numel():
                down = F.interpolate(m[used][:, None].float(), size=(fh, fw), mode="bilinear", align_corners=False)
                small[used] = (down[:, 0] >= 0.5).float()
            mask_targets.append(small)

        with torch.autocast(device_type=mask_feats.device.type, enabled=False):
            labels = torch.stack([torch.cat([lt.labels for lt in levels]) for levels in per_image])  # (B, C)
            weights = torch.stack([torch.cat([lt.weights for lt in levels]) for levels in per_image])
            instance = torch.stack([torch.cat([lt.instance for lt in levels]) for levels in per_image])
            logits = torch.cat([c.float().permute(0, 2, 3, 1).reshape(b, -1, k) for c in cates], 1)  # (B, C, K)
            onehot = torch.zeros_like(logits)
            pos = labels > 0
            onehot[pos] = F.one_hot(labels[pos] - 1, k).to(onehot.dtype)
            focal = sigmoid_focal_loss(logits, onehot, alpha=cfg.focal_alpha, gamma=cfg.focal_gamma, reduction="none")
            # mmdet convention for weighted losses: the average factor is the positive count,
            # weights only scale the terms (a weight-0 positive adds nothing but is still counted).
            num_pos = pos.sum().float()
            loss_cate = (focal.sum(-1) * weights).sum() / (num_pos + 1.0)

            ksz = cfg.kernel_size
            flat_kernels = torch.cat([kk.float().permute(0, 2, 3, 1).reshape(b, -1, kk.shape[1]) for kk in kernels], 1)
            feats32 = mask_feats.float()
            dice_terms: list[Tensor] = []
            for i in range(b):
                sel = (pos[i] & (weights[i] > 0)).nonzero().flatten()
                if sel.numel() == 0:
                    continue
                kern = flat_kernels[i, sel].reshape(-1, cfg.mask_out_channels, ksz, ksz)
                pred = F.conv2d(feats32[i : i + 1], kern, padding=ksz // 2)[0].sigmoid()
                tgt = mask_targets[i][instance[i, sel]]
                dice_terms.append(dice_loss(pred, tgt, cfg.dice_eps) * weights[i, sel])
            if dice_terms:
                loss_mask = torch.cat(dice_terms).sum() / num_pos
            else:  # keep every parameter in the graph (DDP) with a zero loss
                loss_mask = feats32.sum() * 0.0 + flat_kernels.sum() * 0.0
        return {
            "loss_cate": loss_cate * cfg.cate_loss_weight,
            "loss_mask": loss_mask * cfg.mask_loss_weight,
        }

    # ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _predict(
        self,
        cates: list[Tensor],
        kernels: list[Tensor],
        mask_feats: Tensor,
        image_sizes: list[tuple[int, int]],
        original_sizes: list[tuple[int, int]],
        padded: torch.Size,
    ) -> list[dict[str, Tensor]]:
        """Inference of SOLOv2 Sec. 3.2.4 / 3.3 (see the module docstring), one image at a time."""
        cfg = self.config
        b, k = cates[0].shape[:2]
        device = mask_feats.device
        ksz = cfg.kernel_size
        with torch.autocast(device_type=device.type, enabled=False):
            scores_all = torch.cat(
                [points_nms(c.float().sigmoid()).permute(0, 2, 3, 1).reshape(b, -1, k) for c in cates], 1
            )  # (B, C, K)
            kernels_all = torch.cat([kk.float().permute(0, 2, 3, 1).reshape(b, -1, kk.shape[1]) for kk in kernels], 1)
            cell_stride = torch.cat(
                [torch.full((s * s,), float(LEVEL_STRIDES[i]), device=device) for i, s in enumerate(cfg.grids)]
            )
            feats32 = mask_feats.float()
            results: list[dict[str, Tensor]] = []
            for i in range(b):
                results.append(self._predict_single(
                    scores_all[i], kernels_all[i], feats32[i : i + 1], cell_stride, ksz,
                    image_sizes[i], original_sizes[i], (int(padded[0]), int(padded[1])),
                ))
        return results

    def _predict_single(
        self,
        scores: Tensor,
        kernels: Tensor,
        mask_feat: Tensor,
        cell_stride: Tensor,
        ksz: int,
        image_size: tuple[int, int],
        original_size: tuple[int, int],
        padded: tuple[int, int],
    ) -> dict[str, Tensor]:
        cfg = self.config
        device = scores.device
        oh, ow = original_size

        def empty() -> dict[str, Tensor]:
            return {
                "boxes": torch.zeros((0, 4), device=device),
                "labels": torch.zeros((0,), dtype=torch.int64, device=device),
                "scores": torch.zeros((0,), device=device),
                "masks": torch.zeros((0, 1, oh, ow), device=device),
            }

        cand = (scores > cfg.score_thr).nonzero()
        if cand.shape[0] == 0:
            return empty()
        cls_scores = scores[cand[:, 0], cand[:, 1]]
        if cand.shape[0] > cfg.max_candidates:
            top = cls_scores.topk(cfg.max_candidates).indices
            cand, cls_scores = cand[top], cls_scores[top]
        cells, labels = cand[:, 0], cand[:, 1] + 1
        kern = kernels[cells].reshape(-1, cfg.mask_out_channels, ksz, ksz)
        probs = F.conv2d(mask_feat, kern, padding=ksz // 2)[0].sigmoid()  # (M, h, w)
        binary = probs > cfg.mask_thr
        area = binary.sum((1, 2)).float()
        keep = area > cell_stride[cells]
        if not bool(keep.any()):
            return empty()
        probs, binary, area, cls_scores, labels = probs[keep], binary[keep], area[keep], cls_scores[keep], labels[keep]
        maskness = (probs * binary).sum((1, 2)) / area
        rescored = cls_scores * maskness
        order = rescored.argsort(descending=True)[: cfg.nms_pre]
        probs, binary, area, rescored, labels = probs[order], binary[order], area[order], rescored[order], labels[order]
        decayed = matrix_nms(binary, labels, rescored, kernel=cfg.nms_kernel, sigma=cfg.nms_sigma, mask_area=area)
        keep = decayed >= cfg.update_thr
        if not bool(keep.any()):
            return empty()
        probs, labels, decayed = probs[keep], labels[keep], decayed[keep]
        order = decayed.argsort(descending=True)[: cfg.max_per_img]
        probs, labels, decayed = probs[order], labels[order], decayed[order]
        # Stride-4 probabilities -> padded input size -> crop the padding -> original image size.
        up = F.interpolate(probs[None], size=padded, mode="bilinear", align_corners=False)
        up = up[:, :, : image_size[0], : image_size[1]]
        up = F.interpolate(up, size=(oh, ow), mode="bilinear", align_corners=False)[0]
        return {
            "boxes": masks_to_boxes(up > cfg.mask_thr),
            "labels": labels,
            "scores": decayed,
            "masks": up[:, None].clamp(0.0, 1.0),
        }
