"""Unsupervised segment proposals (the stand-in for MCG, which no package registry carries): selective-
search-style hierarchical grouping of superpixels (Uijlings et al., the paper's reference [78]).

For every strategy — a colour space (``rgb``, ``hsv``, ``lab``) × a Felzenszwalb-Huttenlocher scale
``k`` (multiplied by the image side / 500, so an image's grouping does not depend on its resolution
class) — the image is over-segmented (``skimage.segmentation.felzenszwalb``) and adjacent regions are
merged greedily by similarity (colour-histogram intersection + size + fill, selective search's
``C+S+F``) until one region is left; every region of the hierarchy is a proposal. Proposals of all
strategies are ranked as selective search does (position in its hierarchy, whole image = 1, times a
seeded uniform number; lowest first), identical masks are kept once, the best ``max_proposals`` kept.
Score = 1 - rank / n, in (0, 1], non-increasing.

All strategies' superpixels are intersected into one superpixel map (the common refinement); a
proposal is the set of those superpixels it covers — the release's representation of MCG proposals.
The file format and its checks: :func:`write_proposals`, :func:`read_proposals` (docs/formats.md).
"""

from __future__ import annotations

import heapq
import itertools
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from scipy import sparse

from datasets.errors import DatasetError

__all__ = ["FORMAT_VERSION", "ImageProposals", "ProposalConfig", "generate_proposals", "read_proposals",
           "recall", "write_proposals"]

FORMAT_VERSION = 1
_BINS = 25
_KEYS = ("format_version", "image_id", "height", "width", "superpixels", "indptr", "indices", "boxes", "scores")


@dataclass(frozen=True)
class ProposalConfig:
    """Strategies and cap of :func:`generate_proposals`."""

    colour_spaces: tuple[str, ...] = ("rgb", "hsv", "lab")
    scales: tuple[float, ...] = (50.0, 100.0, 200.0)
    sigma: float = 0.8
    max_proposals: int = 4000
    seed: int = 0

    def __post_init__(self) -> None:
        bad = set(self.colour_spaces) - {"rgb", "hsv", "lab"}
        if bad or not self.colour_spaces:
            raise ValueError(f"colour_spaces must be drawn from rgb, hsv, lab; got {self.colour_spaces}")
        if not self.scales or min(self.scales) <= 0 or self.max_proposals < 1:
            raise ValueError("scales must be positive and max_proposals >= 1")


@dataclass
class ImageProposals:
    """Proposals of one image: ``superpixels`` (H, W) int32 ids 0..S-1; proposal k is the superpixels
    ``indices[indptr[k]:indptr[k+1]]``; ``boxes`` (N, 4) int32 x0, y0, x1, y1 (ends exclusive, the mask's
    tight box); ``scores`` (N,) float32, non-increasing."""

    image_id: int
    superpixels: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def num_superpixels(self) -> int:
        return int(self.superpixels.max()) + 1 if self.superpixels.size else 0

    def members(self) -> list[np.ndarray]:
        """The superpixel ids of every proposal."""
        return np.split(self.indices.astype(np.int64), self.indptr[1:-1])

    def membership(self) -> sparse.csr_matrix:
        """(N, S) sparse 0/1 membership matrix."""
        data = np.ones(len(self.indices), np.float64)
        return sparse.csr_matrix((data, self.indices, self.indptr), shape=(len(self), self.num_superpixels))

    def mask(self, k: int) -> np.ndarray:
        """(H, W) bool mask of proposal ``k``."""
        inside = np.zeros(self.num_superpixels, bool)
        inside[self.indices[self.indptr[k]:self.indptr[k + 1]]] = True
        return inside[self.superpixels]

    def rle(self, k: int) -> dict:
        """Proposal ``k``'s mask as a COCO RLE (``counts`` a str)."""
        rle = mask_utils.encode(np.asfortranarray(self.mask(k).astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        return rle

    def as_arrays(self) -> tuple[np.ndarray, list[np.ndarray], np.ndarray, np.ndarray]:
        """``(superpixels, members, boxes, scores)``, the per-image input of
        ``methods.jtsm.segments.SegmentBatch.from_arrays``."""
        return self.superpixels.astype(np.int64), self.members(), self.boxes, self.scores


def _colour(image: np.ndarray, space: str) -> np.ndarray:
    """The image in ``space``, each channel scaled to [0, 1]."""
    from skimage import color

    rgb = image.astype(np.float64) / 255.0
    if space == "rgb":
        return rgb
    if space == "hsv":
        return color.rgb2hsv(rgb)
    lab = color.rgb2lab(rgb)
    return (lab - np.array([0.0, -128.0, -128.0])) / np.array([100.0, 255.0, 255.0])


def _region_stats(labels: np.ndarray, img: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per region: size (R,), L1-normalised colour histogram (R, 3·25), box (R, 4) ends exclusive."""
    flat = labels.ravel()
    size = np.bincount(flat, minlength=count).astype(np.float64)
    bins = np.clip((img.reshape(-1, 3) * _BINS).astype(np.int64), 0, _BINS - 1)
    hist = np.concatenate([np.bincount(flat * _BINS + bins[:, c], minlength=count * _BINS).reshape(count, _BINS)
                           for c in range(3)], 1).astype(np.float64)
    hist /= hist.sum(1, keepdims=True)
    h, w = labels.shape
    ys, xs = np.divmod(np.arange(h * w), w)
    box = np.stack([np.full(count, w), np.full(count, h), np.zeros(count, np.int64), np.zeros(count, np.int64)], 1)
    np.minimum.at(box[:, 0], flat, xs)
    np.minimum.at(box[:, 1], flat, ys)
    np.maximum.at(box[:, 2], flat, xs + 1)
    np.maximum.at(box[:, 3], flat, ys + 1)
    return size, hist, box


def _adjacent_pairs(labels: np.ndarray) -> np.ndarray:
    """(E, 2) distinct pairs a < b of 4-adjacent regions."""
    pairs = np.concatenate([np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], 1),
                            np.stack([labels[:-1].ravel(), labels[1:].ravel()], 1)])
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return np.unique(np.sort(pairs, 1), axis=0)


def _hierarchy(labels: np.ndarray, img: np.ndarray) -> list[frozenset[int]]:
    """Every region of the greedy C+S+F grouping of ``labels``, in creation order (base regions first,
    the whole image last), each as its set of base labels."""
    count = int(labels.max()) + 1
    size, hist, box = _region_stats(labels, img, count)
    total = float(labels.size)
    size, hist, box = list(size), list(hist), [b.astype(np.int64) for b in box]
    regions: list[frozenset[int]] = [frozenset([r]) for r in range(count)]
    neighbours: list[set[int]] = [set() for _ in range(count)]
    for a, b in _adjacent_pairs(labels).tolist():
        neighbours[a].add(b)
        neighbours[b].add(a)

    def similarity(a: int, b: int) -> float:
        colour = float(np.minimum(hist[a], hist[b]).sum())
        joint = size[a] + size[b]
        x0, y0 = min(box[a][0], box[b][0]), min(box[a][1], box[b][1])
        x1, y1 = max(box[a][2], box[b][2]), max(box[a][3], box[b][3])
        return colour + (1 - joint / total) + (1 - ((x1 - x0) * (y1 - y0) - joint) / total)

    heap = [(-similarity(a, b), a, b) for a in range(count) for b in neighbours[a] if a < b]
    heapq.heapify(heap)
    alive = [True] * count
    while heap:
        _, a, b = heapq.heappop(heap)
        if not (alive[a] and alive[b]):
            continue
        t = len(regions)
        alive[a] = alive[b] = False
        alive.append(True)
        size.append(size[a] + size[b])
        hist.append((size[a] * hist[a] + size[b] * hist[b]) / size[t])
        box.append(np.concatenate([np.minimum(box[a][:2], box[b][:2]), np.maximum(box[a][2:], box[b][2:])]))
        regions.append(regions[a] | regions[b])
        near = (neighbours[a] | neighbours[b]) - {a, b}
        neighbours.append(near)
        for n in near:
            neighbours[n] -= {a, b}
            neighbours[n].add(t)
            heapq.heappush(heap, (-similarity(t, n), t, n))
    return regions


def generate_proposals(image: np.ndarray, config: ProposalConfig = ProposalConfig(), *, image_id: int = 0
                       ) -> ImageProposals:
    """Segment proposals of an RGB uint8 image (H, W, 3); deterministic for a config (module doc)."""
    from skimage.segmentation import felzenszwalb

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image {image_id}: expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    rng = np.random.default_rng(config.seed)
    base, hierarchies = [], []
    for space, k in itertools.product(config.colour_spaces, config.scales):
        img = _colour(image, space)
        labels = felzenszwalb(img, scale=k * max(h, w) / 500.0, sigma=config.sigma,
                              min_size=max(4, int(k * max(h, w) / 500.0)))
        base.append(labels)
        hierarchies.append(_hierarchy(labels, img))
    stacked = np.stack([b.ravel() for b in base], 1)
    _, inverse = np.unique(stacked, axis=0, return_inverse=True)
    superpixels = inverse.reshape(h, w).astype(np.int32)
    first = np.zeros(int(superpixels.max()) + 1, np.int64)
    first[superpixels.ravel()] = np.arange(h * w)
    base_of = stacked[first]                                      # (S, strategies): base label of each sp
    candidates: dict[bytes, float] = {}
    for s, regions in enumerate(hierarchies):
        keys = (len(regions) - np.arange(len(regions))) * rng.random(len(regions))
        for region, key in zip(regions, keys.tolist()):
            inside = np.zeros(int(base[s].max()) + 1, bool)
            inside[list(region)] = True
            ids = np.flatnonzero(inside[base_of[:, s]]).astype(np.int32)
            raw = ids.tobytes()
            if key < candidates.get(raw, np.inf):
                candidates[raw] = key
    ranked = sorted(candidates.items(), key=lambda kv: (kv[1], kv[0]))[:config.max_proposals]
    members = [np.frombuffer(raw, np.int32) for raw, _ in ranked]
    indptr = np.concatenate([[0], np.cumsum([len(m) for m in members])]).astype(np.int64)
    indices = np.concatenate(members).astype(np.int32)
    n = len(members)
    boxes = _proposal_boxes(superpixels, indptr, indices)
    scores = (1.0 - np.arange(n) / n).astype(np.float32)
    return ImageProposals(image_id, superpixels, indptr, indices, boxes, scores)


def _proposal_boxes(superpixels: np.ndarray, indptr: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(N, 4) int32 tight boxes of the proposals (ends exclusive), from the superpixels' boxes."""
    h, w = superpixels.shape
    count = int(superpixels.max()) + 1
    _, _, sp_box = _region_stats(superpixels.astype(np.int64), np.zeros((h, w, 3)), count)
    starts = indptr[:-1]
    lo = np.minimum.reduceat(sp_box[indices][:, :2], starts, axis=0)
    hi = np.maximum.reduceat(sp_box[indices][:, 2:], starts, axis=0)
    return np.concatenate([lo, hi], 1).astype(np.int32)


def write_proposals(path: str | Path, proposals: ImageProposals) -> None:
    """Write one image's proposals as an ``.npz`` (docs/formats.md, "Segment proposals"), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = proposals.superpixels.shape
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}.npz")
    try:
        np.savez_compressed(tmp, format_version=np.int64(FORMAT_VERSION), image_id=np.int64(proposals.image_id),
                            height=np.int64(h), width=np.int64(w),
                            superpixels=proposals.superpixels.astype(np.int32),
                            indptr=proposals.indptr.astype(np.int64), indices=proposals.indices.astype(np.int32),
                            boxes=proposals.boxes.astype(np.int32), scores=proposals.scores.astype(np.float32))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_proposals(path: str | Path, *, height: int | None = None, width: int | None = None) -> ImageProposals:
    """Read and check a proposals file. Stops with a :class:`DatasetError` naming the file and, where
    one is at fault, the proposal: missing keys or a wrong version, an image size other than the
    expected one, superpixel ids not 0..S-1, a proposal without superpixels or with ids out of range,
    unsorted or repeated, a box outside the image or empty, a box other than its mask's tight box, a
    non-finite score, or scores out of order."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as err:
        raise DatasetError(f"cannot read proposals: {err}", path=path) from err
    missing = [k for k in _KEYS if k not in data]
    if missing:
        raise DatasetError(f"proposals file lacks {missing}", path=path)
    if int(data["format_version"]) != FORMAT_VERSION:
        raise DatasetError(f"format_version {int(data['format_version'])}, expected {FORMAT_VERSION}", path=path)
    h, w = int(data["height"]), int(data["width"])
    sp, indptr, indices = data["superpixels"], data["indptr"].astype(np.int64), data["indices"].astype(np.int64)
    boxes, scores = data["boxes"], data["scores"]
    if sp.shape != (h, w) or (height is not None and (h, w) != (height, width)):
        raise DatasetError(f"superpixel map {sp.shape} does not match the image size {(height or h, width or w)}",
                           path=path)
    count = int(sp.max()) + 1 if sp.size else 0
    if sp.size and (sp.min() < 0 or len(np.unique(sp)) != count):
        raise DatasetError("superpixel ids must be exactly 0..S-1", path=path)
    n = len(boxes)
    if boxes.shape != (n, 4) or scores.shape != (n,) or indptr.shape != (n + 1,) or indptr[0] != 0 \
            or indptr[-1] != len(indices) or (np.diff(indptr) < 0).any():
        raise DatasetError("boxes (N, 4), scores (N,) and indptr (N+1,) disagree", path=path)
    for k in range(n):
        ids = indices[indptr[k]:indptr[k + 1]]
        if len(ids) == 0 or ids.min() < 0 or ids.max() >= count or (np.diff(ids) <= 0).any():
            raise DatasetError("superpixel ids empty, out of range, unsorted or repeated", path=path,
                               record=f"proposal {k}")
    bad = (boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (boxes[:, 2] > w) | (boxes[:, 3] > h) \
        | (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise DatasetError(f"box {boxes[k].tolist()} is empty or outside the {w}x{h} image", path=path,
                           record=f"proposal {k}")
    tight = _proposal_boxes(sp, indptr, indices) if n else boxes
    mismatch = (tight != boxes).any(1)
    if mismatch.any():
        k = int(np.flatnonzero(mismatch)[0])
        raise DatasetError(f"box {boxes[k].tolist()} is not its mask's box {tight[k].tolist()}", path=path,
                           record=f"proposal {k}")
    if not np.isfinite(scores).all() or (np.diff(scores) > 0).any():
        k = int(np.flatnonzero(~np.isfinite(scores) | np.r_[False, np.diff(scores) > 0])[0])
        raise DatasetError(f"score {scores[k]} is not finite or breaks the non-increasing order", path=path,
                           record=f"proposal {k}")
    return ImageProposals(int(data["image_id"]), sp.astype(np.int32), indptr, indices.astype(np.int32),
                          boxes.astype(np.int32), scores.astype(np.float32))


def recall(proposals: ImageProposals, gt_masks: np.ndarray, thresholds: tuple[float, ...] = (0.5, 0.7)
           ) -> tuple[dict[float, float], np.ndarray]:
    """Best overlap of every ground-truth mask (G, H, W) with any proposal (pixel IoU, from superpixel
    areas), and the fraction of masks whose best overlap reaches each threshold (1.0 when G = 0)."""
    if len(gt_masks) == 0:
        return {t: 1.0 for t in thresholds}, np.zeros(0)
    sp = proposals.superpixels.ravel().astype(np.int64)
    count = proposals.num_superpixels
    areas = np.bincount(sp, minlength=count).astype(np.float64)
    per_sp = np.stack([np.bincount(sp[g.ravel()], minlength=count) for g in gt_masks.astype(bool)], 1)
    m = proposals.membership()
    inter = m @ per_sp.astype(np.float64)                                  # (N, G)
    union = (m @ areas)[:, None] + gt_masks.reshape(len(gt_masks), -1).sum(1)[None] - inter
    best = (inter / np.maximum(union, 1.0)).max(0) if len(proposals) else np.zeros(len(gt_masks))
    return {t: float((best >= t).mean()) for t in thresholds}, best
