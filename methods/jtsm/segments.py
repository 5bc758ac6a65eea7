"""Segment proposals of a batch of images as tensors: a superpixel map per image and, per proposal, the
set of superpixels it is made of (the release's representation of MCG proposals, and that of
``datasets.proposals``).

A proposal's mask is the union of its superpixels, so everything a proposal-level operation needs — its
mask sampled at a few points, its feature-cell indicator Ω (Eq. 6), the overlap of two proposals — is a
gather from small tables; no full-resolution mask per proposal is ever built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["SegmentBatch", "box_iou", "cell_superpixels", "mask_iou", "sample_masks", "superpixels_from_masks"]


@dataclass
class SegmentBatch:
    """The proposals of ``B`` images.

    ``superpixels`` (B, H, W) long: superpixel ids, unique across the batch (image b's ids follow image
    b-1's), images padded at the bottom/right with ``num_superpixels`` (the pad id, in no proposal);
    ``members`` (N, S) bool: proposal n holds superpixel s; ``boxes`` (N, 4) float ``x0, y0, x1, y1`` in
    pixels, ends exclusive (the tight box of the mask); ``batch_index`` (N,) long; ``scores`` (N,) float,
    the proposal generator's scores; ``image_sizes`` the (h, w) of each image before padding.
    """

    superpixels: torch.Tensor
    members: torch.Tensor
    boxes: torch.Tensor
    batch_index: torch.Tensor
    scores: torch.Tensor
    image_sizes: tuple[tuple[int, int], ...]

    @property
    def num_superpixels(self) -> int:
        return int(self.members.shape[1])

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def to(self, device: torch.device | str) -> SegmentBatch:
        return SegmentBatch(self.superpixels.to(device), self.members.to(device), self.boxes.to(device),
                            self.batch_index.to(device), self.scores.to(device), self.image_sizes)

    def areas(self) -> torch.Tensor:
        """(N,) pixel count of every proposal's mask."""
        counts = torch.bincount(self.superpixels.flatten(), minlength=self.num_superpixels + 1)[:-1]
        return self.members.float() @ counts.float()

    def select(self, index: torch.Tensor) -> SegmentBatch:
        """The proposals ``index`` (same images and superpixels)."""
        return SegmentBatch(self.superpixels, self.members[index], self.boxes[index], self.batch_index[index],
                            self.scores[index], self.image_sizes)

    def dense_masks(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """(n, H, W) bool full-resolution masks of the proposals ``index`` (all when None). For the few
        proposals that become pseudo ground truth; never called on all proposals by the poolers."""
        sel = self.select(index) if index is not None else self
        padded = torch.nn.functional.pad(sel.members, (0, 1))
        return padded[torch.arange(len(sel), device=sel.boxes.device)[:, None, None],
                      sel.superpixels[sel.batch_index]]

    @classmethod
    def from_arrays(cls, images: Sequence[tuple[np.ndarray, Sequence[np.ndarray], np.ndarray, np.ndarray]],
                    device: torch.device | str = "cpu") -> SegmentBatch:
        """Build a batch from per-image ``(superpixels (H, W) int, members [ids of each proposal],
        boxes (n, 4), scores (n,))``; ids are local to their image (0 .. max id)."""
        heights = [sp.shape[0] for sp, *_ in images]
        widths = [sp.shape[1] for sp, *_ in images]
        counts = [int(sp.max()) + 1 for sp, *_ in images]
        total = sum(counts)
        sp_map = np.full((len(images), max(heights), max(widths)), total, np.int64)
        rows, cols, all_boxes, all_scores, batch = [], [], [], [], []
        offset, n = 0, 0
        for b, (sp, members, boxes, scores) in enumerate(images):
            sp_map[b, :sp.shape[0], :sp.shape[1]] = sp + offset
            for ids in members:
                rows.append(np.full(len(ids), n))
                cols.append(np.asarray(ids, np.int64) + offset)
                n += 1
            all_boxes.append(np.asarray(boxes, np.float32).reshape(-1, 4))
            all_scores.append(np.asarray(scores, np.float32).reshape(-1))
            batch.append(np.full(len(members), b))
            offset += counts[b]
        member = torch.zeros(n, total, dtype=torch.bool)
        if n:
            member[torch.from_numpy(np.concatenate(rows)), torch.from_numpy(np.concatenate(cols))] = True
        return cls(torch.from_numpy(sp_map).to(device), member.to(device),
                   torch.from_numpy(np.concatenate(all_boxes)).to(device),
                   torch.from_numpy(np.concatenate(batch).astype(np.int64)).to(device),
                   torch.from_numpy(np.concatenate(all_scores)).to(device),
                   tuple(zip(heights, widths)))


def superpixels_from_masks(masks: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Any set of (n, H, W) bool masks as a superpixel map and memberships: superpixels are the pixels
    sharing one membership pattern (the common refinement of the masks). Exact for any masks."""
    n, h, w = masks.shape
    codes = np.packbits(masks.reshape(n, -1).T, axis=1) if n else np.zeros((h * w, 1), np.uint8)
    patterns, sp = np.unique(codes, axis=0, return_inverse=True)
    bits = np.unpackbits(patterns, axis=1, count=n).astype(bool)  # (S, n)
    return sp.reshape(h, w).astype(np.int64), [np.flatnonzero(bits[:, k]) for k in range(n)]


def cell_superpixels(superpixels: torch.Tensor, stride: int, feature_size: tuple[int, int], pad_id: int
                     ) -> torch.Tensor:
    """(B, Hf, Wf, P) long: the distinct superpixel ids inside each feature cell's pixel window
    [u·s, (u+1)·s) × [v·s, (v+1)·s) (Eq. 6 for an integer stride), padded with ``pad_id``.

    Ω_uv of a proposal is then "any of these ids is a member" — one gather per cell and proposal."""
    b, h, w = superpixels.shape
    hf, wf = feature_size
    grid = torch.full((b, hf * stride, wf * stride), pad_id, dtype=torch.long, device=superpixels.device)
    hh, ww = min(h, hf * stride), min(w, wf * stride)
    grid[:, :hh, :ww] = superpixels[:, :hh, :ww]
    blocks = grid.view(b, hf, stride, wf, stride).permute(0, 1, 3, 2, 4).reshape(b, hf, wf, stride * stride)
    blocks = blocks.sort(dim=-1).values
    repeated = torch.zeros_like(blocks, dtype=torch.bool)
    repeated[..., 1:] = blocks[..., 1:] == blocks[..., :-1]
    blocks = blocks.masked_fill(repeated, pad_id).sort(dim=-1).values
    width = int((blocks != pad_id).sum(-1).max().clamp(min=1))
    return blocks[..., :width].contiguous()


def sample_masks(segments: SegmentBatch, size: int | tuple[int, int]) -> torch.Tensor:
    """(N, h, w) float: each proposal's mask read at the centres of an h×w grid over its box."""
    gh, gw = (size, size) if isinstance(size, int) else size
    boxes = segments.boxes
    dev = boxes.device
    fy = (torch.arange(gh, device=dev, dtype=torch.float32) + 0.5) / gh
    fx = (torch.arange(gw, device=dev, dtype=torch.float32) + 0.5) / gw
    ys = (boxes[:, 1:2] + fy[None] * (boxes[:, 3:4] - boxes[:, 1:2])).long()
    xs = (boxes[:, 0:1] + fx[None] * (boxes[:, 2:3] - boxes[:, 0:1])).long()
    _, h, w = segments.superpixels.shape
    ys, xs = ys.clamp(0, h - 1), xs.clamp(0, w - 1)
    ids = segments.superpixels[segments.batch_index[:, None, None], ys[:, :, None], xs[:, None, :]]
    padded = torch.nn.functional.pad(segments.members, (0, 1))
    return padded.gather(1, ids.flatten(1)).view(-1, gh, gw).float()


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, m) IoU of boxes with exclusive ends (areas (x1 - x0)·(y1 - y0))."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None] - inter).clamp(min=1e-6)


def mask_iou(segments: SegmentBatch, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(len(a), len(b)) pixel IoU of proposals ``a`` and ``b`` of the batch, from superpixel areas.
    Proposals of different images overlap by 0."""
    counts = torch.bincount(segments.superpixels.flatten(), minlength=segments.num_superpixels + 1)[:-1].float()
    ma, mb = segments.members[a].float(), segments.members[b].float()
    inter = (ma * counts) @ mb.T
    area_a, area_b = ma @ counts, mb @ counts
    return inter / (area_a[:, None] + area_b[None] - inter).clamp(min=1e-6)
