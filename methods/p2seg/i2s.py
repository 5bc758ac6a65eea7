"""P2Seg I2S (Sec. 3.2, Eq. 5): instance affinity, its loss, and the refined semantic map S = A^∘β · C.

Line numbers ("l.") are lines of the paper's text (000_b325cd590f7f7e35.txt).

**Affinity** (l. 88, l. 113): the network predicts Â ∈ R^{hw×hw} over the pixels of one image's
stride-4 grid; :class:`AffinityHead` gives embeddings F (conv3×3 on the fused stride-4 features,
release: ``aff_conv = Conv2d(48, 256, 3)`` on HRNet's stride-4 branch) and the logits are
Â_ij = F_iᵀF_j, the affinity σ(Â_ij) (release: ``sigmoid(FᵀF)``). The paper gives no scaling or
normalisation of F; none is applied (no 1/√D, no L2 norm), as in the release, whose conv init
N(0, 0.001) keeps the logits near 0 at the start — the head does the same.

**Target** (l. 88): A_ij = 1 iff pixels i, j belong to the same instance (id > 0), else 0. What the
paper leaves open is a parameter: ``background`` — id-0 pixels are in no instance, so the paper's
"otherwise 0" makes every pair with a background pixel a negative, background–background and a
pixel with itself included (``"negative"``, default; also the release). Note the degeneracy:
over the n_bg background pixels Σ_ij F_iᵀF_j = ‖Σ_i F_i‖² ≥ 0, so the mean logit of the
background–background negatives (most of R⁻ in a typical image) is ≥ −max‖F_i‖²/(n_bg − 1) ≈ 0:
they cannot be pushed much below σ = 1/2 on average; ``"negative-to-instances"``
keeps background–instance negatives but drops background–background pairs; ``"ignore"`` drops
background pixels altogether. Ignored pixels (``valid`` False, or id == ``ignore_index``) are in
no pair. ``self_pairs`` (i, i) are counted (paper: all pairs; release: yes).

**Eq. 5** (l. 111, l. 113): L = 1/N⁺ Σ_{R⁺} (2 − σ(A_ij) − σ(Â_ij)) + 1/N⁻ Σ_{R⁻} (σ(A_kl) + σ(Â_kl)),
A = the target from the S2I instance map, Â = the predicted affinity. A is binary, so σ(A) is a
constant (σ(1) on R⁺, σ(0) = 1/2 on R⁻) and the equation is ill-posed only in its value, not its
gradient. ``reading="paper"`` (default) keeps the constants literally: (2 − σ(1)) − σ(Â) on R⁺,
1/2 + σ(Â) on R⁻ (minimum 1.269·w⁺ + 0.5·w⁻). ``reading="probability"`` takes σ(A) as the target
probability A itself: 1 − σ(Â) on R⁺, σ(Â) on R⁻ (minimum 0) — the release's ``aff_loss``. Both
give identical gradients. N⁺, N⁻ count the pairs of the whole batch (``per_image=False``, as the
release pools; an empty set's mean is 0); pairs never cross images.

Release facts, each a parameter: weights 0.5 / 0.5 (``positive_weight``, ``negative_weight``);
``aff_loss`` applies a second sigmoid to the already-sigmoided affinity (``double_sigmoid``); its
targets are the class-wise semantic masks (same class ⇒ positive) and, with ``iterate_refine``,
the online instance mask, the two losses averaged (``target="both"``; the release's instance mask
holds only the last instance written per image, and its ``mask_to_aff`` sums the targets over the
batch, neither reproduced); counts N + 1 (not reproduced: max(N, 1)). Its masks are max-pooled 4×
from the input to the stride-4 grid, so a cell touched by a mask is in it and may be in several
(:func:`pooled_masks`; a pair is positive when the two cells share a mask); pixels its WSSS map
ignores (255) are in no class mask, i.e. background. The label grid must match the embedding grid
here; the optional ``pool`` of :class:`AffinityHead` is a further coarsening the release does not do.

**Memory**: a dense hw×hw block per image (10,816² at a 416 crop). No pair mask is built: the
sums over R⁺ / R⁻ come from σ(Â) @ one-hot(labels) (see :func:`_prob_sums`) and the counts N± from
the label histogram, so the dense path keeps one hw×hw float tensor per image (σ(Â)) for backward.
``chunk_size`` computes row blocks under activation checkpointing (each block recomputed in
backward), so at most one chunk_size×hw block is alive; ``max_pairs`` instead samples pairs
(stratified: half from R⁺, half from R⁻, uniformly with replacement; each image's sampled means are
weighted by its exact N±). Loss weight λ_I2S (paper 1.0, l. 123) is the caller's.

**Refined semantic map** (l. 88): S = A^∘β · C, the Hadamard power of the predicted affinity times
the class map C ∈ R^{hw×S}. The paper gives no β; default ``DEFAULT_BETA`` = 8 (see there).
``normalize``: ``"row"`` (default) S = D⁻¹A^∘β C, D = row sums — every output is a convex
combination of class scores (AffinityNet's random-walk transition D⁻¹A^∘β) with the same per-pixel
argmax as the paper's unnormalised product; ``"release"``: the release's
``matmul(softmax(seg), aff / aff.sum(1))``, i.e. S = A^∘β D⁻¹ C; ``None``: S = A^∘β C.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

__all__ = [
    "DEFAULT_BETA",
    "RELEASE_LOSS",
    "AffinityHead",
    "affinity_logits",
    "i2s_loss",
    "instance_affinity_target",
    "pair_masks",
    "pooled_masks",
    "refined_semantic",
    "sample_pairs",
]

Background = Literal["negative", "negative-to-instances", "ignore"]

DEFAULT_BETA = 8.0
"""β of S = A^∘β · C. The paper gives none (the release: 1; a commented-out ``aff*aff*aff*aff`` on the
logits suggests 4 was tried). The affinity is global (all pairs of the image, one step, no random-walk
iterations), so an object pixel's row holds few same-instance pixels (σ → 1) against many others;
pairs the network has not separated sit at logit ≈ 0, σ = 1/2 (the start of training with the
release's init, and the background–background block, whose mean logit is ≈ 0 or more, see the module
doc). They weigh 2^−β relative to a certain positive, so same-instance mass dominates a row when
2^β > n_other / n_same: β = 8 (256) does so for objects of ≥ 1/257 of the image (≈ 42 cells of a 104²
grid) even before anything is separated, where β = 1 (the release) leaves an object pixel's refined
score mostly the image average. 8 is also AffinityNet's β for its transition D⁻¹A^∘β (IRN: 10). The
paper's "smoothens" (l. 88) would suggest β < 1, which pushes every σ towards 1 — towards the image
average, against I2S's stated aim of instance-wise semantics (l. 88, l. 202)."""

_SIGMOID_1 = 1.0 / (1.0 + math.exp(-1.0))  # σ(A) on R⁺ under reading="paper"


def _constants(reading: str) -> tuple[float, float]:
    """(c⁺, c⁻): the R⁺ term is c⁺ − σ(Â), the R⁻ term c⁻ + σ(Â)."""
    return (2.0 - _SIGMOID_1, 0.5) if reading == "paper" else (1.0, 0.0)


RELEASE_LOSS = {"target": "both", "reading": "probability", "positive_weight": 0.5,
                "negative_weight": 0.5, "double_sigmoid": True}
"""Keyword arguments of :func:`i2s_loss` that reproduce the release's ``aff_loss`` (see module doc)."""


class AffinityHead(nn.Module):
    """conv3×3 (``in_channels`` → ``embed_dim``, release 48 → 256, bias) on stride-4 features, then an
    optional ``pool``× max-pool of the grid (1 = none, the release; with pool > 1 the label maps of
    :func:`i2s_loss` must be on the pooled grid). ``forward`` → (B, D, h, w)."""

    def __init__(self, in_channels: int, embed_dim: int = 256, *, pool: int = 1) -> None:
        super().__init__()
        if pool < 1:
            raise ValueError(f"pool must be >= 1, got {pool}")
        self.conv = nn.Conv2d(in_channels, embed_dim, 3, padding=1)
        self.pool = pool
        nn.init.normal_(self.conv.weight, std=0.001)  # release init: logits ≈ 0, σ ≈ 1/2 at the start
        nn.init.zeros_(self.conv.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        emb = self.conv(features)
        return F.max_pool2d(emb, self.pool) if self.pool > 1 else emb


def pooled_masks(labels: torch.Tensor, size: tuple[int, int], *, ignore_index: int | None = 255) -> torch.Tensor:
    """(B, H, W) integer labels → (B, K, h, w) bool: the mask of each label > 0 (``ignore_index`` excluded)
    max-pooled to the (h, w) grid, i.e. a cell is in a label's mask when any of its pixels is (the
    release's ``MaxPool2d(4, 4)`` of its masks before ``mask_to_aff``; adaptive pooling, the same for
    H = 4h). A cell may be in several masks; K = the most labels of an image, unused channels empty."""
    per_image = []
    for lab in labels.long():
        ids = torch.unique(lab)
        ids = ids[(ids > 0) & (ids != (-1 if ignore_index is None else ignore_index))]
        onehot = (lab[None] == ids[:, None, None]).float()
        per_image.append(F.adaptive_max_pool2d(onehot[None], size)[0] > 0 if len(ids) else
                         torch.zeros((0, *size), dtype=torch.bool, device=labels.device))
    k = max(m.shape[0] for m in per_image) if per_image else 0
    out = torch.zeros((labels.shape[0], k, *size), dtype=torch.bool, device=labels.device)
    for i, m in enumerate(per_image):
        out[i, :m.shape[0]] = m
    return out


def affinity_logits(embeddings: torch.Tensor) -> torch.Tensor:
    """Dense Â = FᵀF per image: (B, D, h, w) → (B, hw, hw). Memory B·(hw)²; prefer the chunked paths."""
    f = embeddings.flatten(2)
    return f.transpose(1, 2) @ f


def _labels(labels: torch.Tensor, valid: torch.Tensor | None, background: Background,
            ignore_index: int | None) -> torch.Tensor:
    """(B, h, w) ids → (B, hw) long, −1 for pixels in no pair (invalid, ignore, background if ignored)."""
    lab = labels.long().flatten(1).clone()
    bad = lab < 0
    if ignore_index is not None:
        bad |= lab == ignore_index
    if valid is not None:
        bad |= ~valid.flatten(1).bool()
    if background == "ignore":
        bad |= lab == 0
    elif background not in ("negative", "negative-to-instances"):
        raise ValueError(f"unknown background mode {background!r}")
    return lab.masked_fill(bad, -1)


def pair_masks(rows: torch.Tensor, cols: torch.Tensor, *, row_index: torch.Tensor | None = None,
               col_index: torch.Tensor | None = None, background: Background = "negative",
               self_pairs: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) bool masks (len(rows), len(cols)) of pairs between pixels with prepared
    labels ``rows``/``cols`` (−1 = in no pair, 0 = background, > 0 = instance). ``row_index`` /
    ``col_index`` (pixel indices) identify self pairs; needed only when ``self_pairs`` is False."""
    r, c = rows[:, None], cols[None, :]
    eligible = (r >= 0) & (c >= 0)
    if background == "negative-to-instances":
        eligible &= (r > 0) | (c > 0)
    if not self_pairs:
        if row_index is None or col_index is None:
            raise ValueError("self_pairs=False needs row_index and col_index")
        eligible &= row_index[:, None] != col_index[None, :]
    pos = eligible & (r == c) & (r > 0)
    return pos, eligible & ~pos


def instance_affinity_target(instance_map: torch.Tensor) -> torch.Tensor:
    """A_ij = 1 iff pixels i, j have the same instance id > 0 (l. 88): (h, w) → (hw, hw) bool, or
    (B, h, w) → (B, hw, hw). Which pairs count (background, ignore) is :func:`pair_masks`' business."""
    lab = instance_map.flatten(-2).long()
    return (lab[..., :, None] == lab[..., None, :]) & (lab[..., :, None] > 0)


def _prob_sums(f_rows, f_all, group_rows, bg_rows, onehot, compat, bg_group, r0, *, background, self_pairs,
               double_sigmoid):
    """(Σ_R⁺ σ(Â), Σ_R⁻ σ(Â)) over rows r0.. of one image, without any pair mask: with the one-hot
    (n, groups) of the pixels' label groups, (σ(Â) @ onehot)[i, g] sums row i over group g; the groups
    ``compat`` (G, G) pairs as positives hold row i's positives, the rest of the row its negatives
    (background–background pairs among them; ``bg_group`` (G,) marks the background group). Only σ(Â)
    (r × n) is kept for backward."""
    p = torch.sigmoid(f_rows.transpose(0, 1) @ f_all)
    if double_sigmoid:
        p = torch.sigmoid(p)
    per_group = p @ onehot
    s_pos = (per_group * compat[group_rows]).sum()
    s_neg = per_group.sum() - s_pos
    if background == "negative-to-instances":  # background–background pairs are in no set
        s_neg = s_neg - torch.where(bg_rows, per_group @ bg_group, 0).sum()
    if not self_pairs:
        diag = p.diagonal(r0)
        s_pos = s_pos - torch.where(bg_rows, 0, diag).sum()
        if background == "negative":
            s_neg = s_neg - torch.where(bg_rows, diag, 0).sum()
    return s_pos, s_neg


def _pair_counts(groups: torch.Tensor, compat: torch.Tensor, bg: torch.Tensor, background: Background,
                 self_pairs: bool) -> tuple[int, int]:
    """Exact (N⁺, N⁻) of one image from its pixels' label groups (valid pixels only), the groups'
    positive pairing ``compat`` (G, G) and the background pixels ``bg``."""
    n, n_bg = groups.numel(), int(bg.sum())
    sizes = torch.bincount(groups, minlength=compat.shape[0]).to(torch.float64)
    n_pos = int(round(float(sizes @ compat.to(torch.float64) @ sizes))) - (0 if self_pairs else n - n_bg)
    total = n * (n - 1 + int(self_pairs))
    if background == "negative-to-instances":
        total -= n_bg * (n_bg - 1 + int(self_pairs))
    return n_pos, total - n_pos


def sample_pairs(labels: torch.Tensor, *, num_positive: int, num_negative: int,
                 background: Background = "negative", self_pairs: bool = True,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs drawn uniformly with replacement from R⁺ and from R⁻ of one image.

    ``labels``: (n,) prepared labels (≥ 0: 0 background, > 0 instance; drop excluded pixels first).
    Returns (i, j) index tensors (num_positive + num_negative,), positives first; a set with no pair
    yields none of its draws. Exact: pixel i is drawn ∝ its number of partners, then j uniformly
    among them (pixels sorted by label, so a partner set is the label order minus one contiguous block).
    """
    lab = labels.cpu().long()
    groups = torch.unique(lab, return_inverse=True)[1]  # 0..G−1 in label order: background (0) first
    order = torch.argsort(groups, stable=True)
    sorted_groups = groups[order]
    n, n_bg = lab.numel(), int((lab == 0).sum())
    sizes = torch.bincount(sorted_groups)
    starts = torch.cumsum(sizes, 0) - sizes
    pos_in_order = torch.arange(n)
    g_start, g_size = starts[sorted_groups], sizes[sorted_groups]
    is_bg = lab[order] == 0
    s = int(self_pairs)

    def draw(weight, k, block_start, block_len, base):
        """i ∝ weight; j = base + r (r uniform in [0, weight_i)) skipping [block_start, +block_len)."""
        if k == 0 or weight.sum() == 0:
            return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
        i = torch.multinomial(weight.double(), k, replacement=True, generator=generator)
        r = (torch.rand(k, generator=generator, dtype=torch.float64) * weight[i].double()).long()
        r = torch.minimum(r, weight[i] - 1)
        j = base[i] + r
        j = torch.where(j >= block_start[i], j + block_len[i], j)
        return order[i], order[j]

    zero = torch.zeros(n, dtype=torch.long)
    # positives: partners = own group (minus self if excluded)
    w_pos = torch.where(is_bg, zero, g_size - 1 + s)
    pi, pj = draw(w_pos, num_positive, pos_in_order if not s else torch.full((n,), n), zero + (1 - s), g_start)
    # negatives: instance pixel → everything outside its group; background → see the module doc
    if background == "negative":
        bg_w, bg_block_start, bg_block_len = zero + n - 1 + s, pos_in_order, zero + (1 - s)
    else:  # negative-to-instances (ignore: no background labels left)
        bg_w, bg_block_start, bg_block_len = zero + n - n_bg, zero, zero + n_bg
    w_neg = torch.where(is_bg, bg_w, n - g_size)
    block_start = torch.where(is_bg, bg_block_start, g_start)
    block_len = torch.where(is_bg, bg_block_len, g_size)
    ni, nj = draw(w_neg, num_negative, block_start, block_len, zero)
    return torch.cat([pi, ni]).to(labels.device), torch.cat([pj, nj]).to(labels.device)


def i2s_loss(
    embeddings: torch.Tensor,
    instance_map: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    semantic_map: torch.Tensor | None = None,
    target: Literal["instance", "semantic-class", "both"] = "instance",
    background: Background = "negative",
    self_pairs: bool = True,
    ignore_index: int | None = 255,
    reading: Literal["paper", "probability"] = "paper",
    positive_weight: float = 1.0,
    negative_weight: float = 1.0,
    double_sigmoid: bool = False,
    per_image: bool = False,
    chunk_size: int | None = None,
    max_pairs: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Eq. 5 on embeddings (B, D, h, w) against an id map (B, h, w) on the same grid (0 = background,
    ``ignore_index`` / ``valid`` False = no pair), or against label masks (B, K, h, w) (:func:`pooled_masks`:
    a cell in no mask is background; two cells pair positively when they share a mask; not with
    ``max_pairs``). ``target``: ``"instance"`` (paper) pairs by
    ``instance_map``; ``"semantic-class"`` by ``semantic_map`` (same class ⇒ positive, release);
    ``"both"``: the mean of the two losses (release). ``chunk_size``: rows per checkpointed block
    (None = one dense block per image); ``max_pairs``: sampled pairs per image instead (not with
    ``chunk_size``). ``per_image``: mean of per-image losses instead of batch-pooled pair means."""
    if reading not in ("paper", "probability"):
        raise ValueError(f"unknown reading {reading!r}")
    if target == "both":
        kw = dict(background=background, self_pairs=self_pairs, ignore_index=ignore_index, reading=reading,
                  positive_weight=positive_weight, negative_weight=negative_weight,
                  double_sigmoid=double_sigmoid, per_image=per_image, chunk_size=chunk_size,
                  max_pairs=max_pairs, generator=generator)
        return 0.5 * (i2s_loss(embeddings, instance_map, valid, semantic_map=semantic_map,
                               target="semantic-class", **kw)
                      + i2s_loss(embeddings, instance_map, valid, target="instance", **kw))
    if target == "semantic-class":
        if semantic_map is None:
            raise ValueError('target="semantic-class" needs semantic_map')
        instance_map = semantic_map
    elif target != "instance":
        raise ValueError(f"unknown target {target!r}")
    if chunk_size is not None and max_pairs is not None:
        raise ValueError("give chunk_size or max_pairs, not both")
    if max_pairs is not None and max_pairs < 2:
        raise ValueError(f"max_pairs must be >= 2 (half from R⁺, half from R⁻), got {max_pairs}")
    b, d, h, w = embeddings.shape
    multi = instance_map.dim() == 4
    if (instance_map.shape[0], *instance_map.shape[-2:]) != (b, h, w) or instance_map.dim() not in (3, 4):
        raise ValueError(f"label map {tuple(instance_map.shape)} does not match embeddings grid {(b, h, w)}")
    if multi and max_pairs is not None:
        raise ValueError("max_pairs samples pairs of an id map (B, h, w), not of label masks (B, K, h, w)")
    if multi:
        masks = instance_map.to(embeddings.device).bool().flatten(2)  # (B, K, hw)
        keep = torch.ones((b, h * w), dtype=torch.bool, device=embeddings.device)
        if valid is not None:
            keep &= valid.to(embeddings.device).flatten(1).bool()
        if background == "ignore":
            keep &= masks.any(1)
        elif background not in ("negative", "negative-to-instances"):
            raise ValueError(f"unknown background mode {background!r}")
    else:
        labels = _labels(instance_map.to(embeddings.device), valid, background, ignore_index)
        keep = labels >= 0
    flat = embeddings.flatten(2)
    sums: list[tuple[torch.Tensor, int, torch.Tensor, int]] = []
    for k in range(b):
        idx = keep[k].nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        f = flat[k][:, idx]
        if multi:  # a pixel's group: its set of masks; two groups pair positively when they share a mask
            sig = torch.cat([masks[k][:, idx].transpose(0, 1), masks.new_zeros((idx.numel(), 1))], 1)
            sigs, groups = torch.unique(sig.to(torch.uint8), dim=0, return_inverse=True)
            compat = (sigs.double() @ sigs.double().T) > 0
            bg, bg_group = ~sig.any(1), ~sigs.bool().any(1)
        else:
            lab = labels[k, idx]
            ids, groups = torch.unique(lab, return_inverse=True)
            compat, bg, bg_group = torch.diag(ids > 0), lab == 0, ids == 0
        n_pos, n_neg = _pair_counts(groups, compat, bg, background, self_pairs)
        if max_pairs is not None:
            k_pos = 0 if n_pos == 0 else (max_pairs if n_neg == 0 else max_pairs // 2)
            i, j = sample_pairs(lab, num_positive=k_pos, num_negative=0 if n_neg == 0 else max_pairs - k_pos,
                                background=background, self_pairs=self_pairs, generator=generator)
            p = torch.sigmoid((f[:, i] * f[:, j]).sum(0))
            if double_sigmoid:
                p = torch.sigmoid(p)
            c_pos, c_neg = _constants(reading)
            s_pos = (c_pos - p[:k_pos]).mean() * n_pos if k_pos else p.sum() * 0
            s_neg = (c_neg + p[k_pos:]).mean() * n_neg if n_neg else p.sum() * 0
        else:
            step = idx.numel() if chunk_size is None else chunk_size
            onehot = F.one_hot(groups, compat.shape[0]).to(f.dtype)
            compat_f, bg_group_f = compat.to(f.dtype), bg_group.to(f.dtype)
            opts = dict(background=background, self_pairs=self_pairs, double_sigmoid=double_sigmoid)
            p_pos = p_neg = f.sum() * 0
            for r0 in range(0, idx.numel(), step):
                args = (f[:, r0:r0 + step], f, groups[r0:r0 + step], bg[r0:r0 + step], onehot, compat_f, bg_group_f,
                        r0)
                if chunk_size is not None and torch.is_grad_enabled() and f.requires_grad:
                    sp, sn = checkpoint(lambda *a: _prob_sums(*a, **opts), *args, use_reentrant=False)
                else:
                    sp, sn = _prob_sums(*args, **opts)
                p_pos, p_neg = p_pos + sp, p_neg + sn
            c_pos, c_neg = _constants(reading)
            s_pos, s_neg = c_pos * n_pos - p_pos, c_neg * n_neg + p_neg
        sums.append((s_pos, n_pos, s_neg, n_neg))
    if not sums:
        return embeddings.sum() * 0
    if per_image:
        return torch.stack([positive_weight * sp / max(np_, 1) + negative_weight * sn / max(nn_, 1)
                            for sp, np_, sn, nn_ in sums]).mean()
    return (positive_weight * sum(s[0] for s in sums) / max(sum(s[1] for s in sums), 1)
            + negative_weight * sum(s[2] for s in sums) / max(sum(s[3] for s in sums), 1))


def _powered_rows(f_rows, f_all, beta):
    """A^∘β for one row block: σ(F_rᵀF)^β = exp(β · logsigmoid(F_rᵀF))."""
    return torch.exp(beta * F.logsigmoid(f_rows.transpose(0, 1) @ f_all))


def refined_semantic(
    class_scores: torch.Tensor,
    *,
    embeddings: torch.Tensor | None = None,
    logits: torch.Tensor | None = None,
    beta: float = DEFAULT_BETA,
    normalize: Literal["row", "release"] | None = "row",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """S = A^∘β · C per image: class scores C (B, S, h, w) (probabilities: the release softmaxes first)
    and either ``embeddings`` (B, D, h, w) (A = σ(FᵀF), chunked by ``chunk_size`` rows under
    checkpointing) or dense affinity ``logits`` (B, hw, hw). Returns (B, S, h, w)."""
    if (embeddings is None) == (logits is None):
        raise ValueError("give exactly one of embeddings or logits")
    if normalize not in ("row", "release", None):
        raise ValueError(f"unknown normalize {normalize!r}")
    b, s, h, w = class_scores.shape
    c = class_scores.flatten(2).transpose(1, 2)  # (B, hw, S)
    if logits is not None:
        a = torch.exp(beta * F.logsigmoid(logits))
        if normalize == "row":
            out = (a @ c) / a.sum(2, keepdim=True)
        elif normalize == "release":
            out = a @ (c / a.sum(2, keepdim=True))
        else:
            out = a @ c
        return out.transpose(1, 2).reshape(b, s, h, w)
    flat = embeddings.flatten(2)
    n = h * w
    step = n if chunk_size is None else chunk_size
    use_ckpt = chunk_size is not None and torch.is_grad_enabled() and (flat.requires_grad or c.requires_grad)

    def run(fn, *args):
        return checkpoint(fn, *args, use_reentrant=False) if use_ckpt else fn(*args)

    def block(f_rows, f_all, rhs):  # (A_r^β @ rhs, row sums of A_r^β)
        a = _powered_rows(f_rows, f_all, beta)
        return a @ rhs, a.sum(1, keepdim=True)

    outs = []
    for k in range(b):
        f, ck = flat[k], c[k]
        if normalize == "release":  # S = A^β D⁻¹ C: degrees first (A symmetric: row sums = column sums)
            deg = torch.cat([run(lambda fr, fa: _powered_rows(fr, fa, beta).sum(1, keepdim=True), f[:, r:r + step], f)
                             for r in range(0, n, step)])
            ck = ck / deg
        rows = []
        for r in range(0, n, step):
            num, den = run(block, f[:, r:r + step], f, ck)
            rows.append(num / den if normalize == "row" else num)
        outs.append(torch.cat(rows))
    return torch.stack(outs).transpose(1, 2).reshape(b, s, h, w)
