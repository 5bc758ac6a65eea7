"""Transport cost of Point2Mask (paper 001, Sec. 3.3.2, Eq. 2-3).

The task-oriented maps are an 8-connected grid graph. Between neighbours k and l,

    d^s_kl = |P^s(k) - P^s(l)|,    d^b_kl = max(P^b(k), P^b(l))                 (Eq. 2)
    edge_kl = d^s_kl + beta * d^b_kl  [+ w_e * max(0, 1 - <e_k, e_l>)]   [x sqrt(2) on diagonals]

and the cost c_ij from point i to pixel j is the shortest-path length (Eq. 3), computed for all
points by one multi-source call of :func:`scipy.sparse.csgraph.dijkstra` on a graph built without
Python loops over pixels. Several boundary maps (P^b_low and P^b_high, Table 3) each add their own
max term, as the release does. The release's variants (:class:`~.config.Point2MaskConfig` fields):
``grid_stride = 16`` (paths on a 1/16 grid, distances upsampled bilinearly), ``embedding_term``,
``diagonal_sqrt2 = False``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from scipy.sparse.csgraph import dijkstra

from .config import Point2MaskConfig

__all__ = ["GeodesicCost", "grid_shape", "resize_maps", "edge_lengths", "grid_graph", "transport_cost"]

#: Forward neighbour offsets (dy, dx) of the 8-connected grid; each undirected edge once.
OFFSETS: tuple[tuple[int, int], ...] = ((0, 1), (1, 0), (1, 1), (1, -1))


class GeodesicCost(NamedTuple):
    """Eq. 3 costs: ``image`` (n, H, W) float32 at image resolution, and ``grid_max``, the largest
    finite path length on the grid (the release normalises centroid costs by it)."""

    image: torch.Tensor
    grid_max: float


def grid_shape(height: int, width: int, stride: int) -> tuple[int, int]:
    """The (H // s, W // s) grid the shortest paths run on (the release's 1/16 grid for s = 16)."""
    h, w = height // stride, width // stride
    if h < 1 or w < 1:
        raise ValueError(f"image {height}x{width} is smaller than grid_stride {stride}")
    return h, w


def resize_maps(maps: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """(K, h', w') -> (K, h, w) by bilinear interpolation (align_corners=False); same size = copy-free."""
    if tuple(maps.shape[-2:]) == tuple(shape):
        return maps
    return F.interpolate(maps[None], size=shape, mode="bilinear", align_corners=False)[0]


def _pair(x: torch.Tensor, dy: int, dx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x at k, x at l = k + (dy, dx)) over every k whose neighbour l is inside the grid (dy >= 0)."""
    h, w = x.shape[-2:]
    xs, xt = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    return x[..., 0 : h - dy, xs], x[..., dy:h, xt]


def edge_lengths(
    probs: torch.Tensor,
    boundaries: torch.Tensor | None,
    embedding: torch.Tensor | None,
    config: Point2MaskConfig,
    point_class: int | None = None,
) -> list[torch.Tensor]:
    """Edge lengths of Eq. 2-3 for each forward offset in :data:`OFFSETS`.

    Args:
        probs: (C, h, w) class probabilities on the grid.
        boundaries: (K, h, w) boundary maps in [0, 1] (K = 0..2) or None.
        embedding: (D, h, w) embedding (used with ``config.embedding_term``).
        point_class: the source point's class, for ``cost_distance = "own-class"``.

    Returns:
        four float32 tensors, entry (y, x) of offset (dy, dx) = length of edge (y, x)-(y+dy, x+dx).
    """
    out = []
    for dy, dx in OFFSETS:
        a, b = _pair(probs, dy, dx)
        if config.cost_distance == "l1-class":
            length = (a - b).abs().sum(0)
        else:
            length = (a[point_class] - b[point_class]).abs()
        if boundaries is not None and len(boundaries):
            ba, bb = _pair(boundaries, dy, dx)
            length = length + config.beta * torch.maximum(ba, bb).sum(0)
        if config.embedding_term:
            ea, eb = _pair(embedding, dy, dx)
            length = length + config.embedding_weight * (1 - (ea * eb).sum(0)).clamp_min(0)
        if config.diagonal_sqrt2 and dy and dx:
            length = length * math.sqrt(2)
        out.append(length.float())
    return out


def grid_graph(lengths: list[torch.Tensor], shape: tuple[int, int]) -> sp.csr_matrix:
    """Symmetric sparse adjacency of the 8-connected (h, w) grid with the given edge lengths.

    Zero-length edges are kept as explicit entries (csgraph treats them as edges)."""
    h, w = shape
    index = torch.arange(h * w).reshape(h, w)
    rows, cols, vals = [], [], []
    for (dy, dx), length in zip(OFFSETS, lengths):
        k, l = _pair(index, dy, dx)
        rows += [k.reshape(-1), l.reshape(-1)]
        cols += [l.reshape(-1), k.reshape(-1)]
        vals += [length.reshape(-1)] * 2
    data = torch.cat(vals).double().cpu().numpy()
    return sp.csr_matrix((data, (torch.cat(rows).numpy(), torch.cat(cols).numpy())), shape=(h * w, h * w))


def _grid_sources(rows: np.ndarray, cols: np.ndarray, stride: int, shape: tuple[int, int]) -> np.ndarray:
    """Flat grid node of each image pixel (y // s, x // s), clipped to the grid."""
    gy = np.clip(np.asarray(rows) // stride, 0, shape[0] - 1)
    gx = np.clip(np.asarray(cols) // stride, 0, shape[1] - 1)
    return gy * shape[1] + gx


def transport_cost(
    probs: torch.Tensor,
    boundaries: torch.Tensor | None,
    embedding: torch.Tensor | None,
    rows: np.ndarray,
    cols: np.ndarray,
    point_classes: np.ndarray,
    config: Point2MaskConfig,
) -> GeodesicCost:
    """c_ij of Eq. 3 from each source pixel (rows[i], cols[i]) to every pixel of the image.

    Args:
        probs: (C, H, W) class probabilities at image resolution (float32, any device; the shortest
            paths run on the CPU, the returned costs are on ``probs.device``).
        boundaries: (K, h', w') boundary maps in [0, 1] at any resolution, or None.
        embedding: (D, h', w') embedding at any resolution (``config.embedding_term``), or None.
        rows, cols: (n,) source pixels (points or centroids), image coordinates.
        point_classes: (n,) class of each source (used by ``cost_distance = "own-class"``).

    Returns:
        :class:`GeodesicCost`; ``image`` is (n, H, W) float32, the grid distances upsampled
        bilinearly when ``grid_stride > 1``. Pixels unreachable from a source (none on a grid) are inf.
    """
    height, width = probs.shape[-2:]
    shape = grid_shape(height, width, config.grid_stride)
    grid_probs = resize_maps(probs, shape)
    grid_bound = None if boundaries is None else resize_maps(boundaries, shape)
    grid_emb = resize_maps(embedding, shape) if config.embedding_term else None
    sources = _grid_sources(rows, cols, config.grid_stride, shape)
    dist = np.empty((len(sources), shape[0] * shape[1]), dtype=np.float64)
    groups = np.unique(point_classes) if config.cost_distance == "own-class" else [None]
    for cls in groups:
        members = np.arange(len(sources)) if cls is None else np.flatnonzero(point_classes == cls)
        graph = grid_graph(edge_lengths(grid_probs, grid_bound, grid_emb, config, cls), shape)
        dist[members] = dijkstra(graph, directed=True, indices=sources[members])
    grid = torch.from_numpy(dist.astype(np.float32)).reshape(len(sources), *shape).to(probs.device)
    grid_max = float(grid[torch.isfinite(grid)].max()) if grid.numel() else 0.0
    image = grid if shape == (height, width) else resize_maps(grid, (height, width))
    return GeodesicCost(image, grid_max)
