"""Minimum-spanning-tree filter and Point2Mask's long-range RGB loss (L_RGB in Eq. 5).

Point2Mask (paper 001, Sec. 3.4.1, Eq. 5) takes the long-range RGB affinity of the Tree Energy
Loss (TEL, Liang et al. CVPR 2022): the image's 4-connected grid graph, edge weight the squared
colour distance, is reduced to its minimum spanning tree (MST); the similarity of two pixels is
the product of the edge affinities along their (unique) tree path,

    S_ij = prod_{e in path(i, j)} exp(-w_e / sigma)  =  exp(-(sum_{e in path} w_e) / sigma),

and the filtered map is AS_i = sum_j S_ij f_j / sum_j S_ij (sigma = 0.02 in the release).
The loss is the L1 distance between the prediction and its filtered version on unlabelled pixels.

The filter is computed **exactly** in linear time with the two-pass recursion on a rooted tree
(Yang, "Stereo matching using tree filtering", PAMI 2015; the same recursion as the release's
CUDA op):

    leaf -> root:  A_up(v) = f_v + sum_{c child of v} s_c * A_up(c)
    root -> leaf:  A(root) = A_up(root)
                   A(v)    = A_up(v) + s_v * (A(parent v) - s_v * A_up(v))
                           = s_v * A(parent v) + (1 - s_v**2) * A_up(v)

with s_v = exp(-w(v, parent v) / sigma); A(v) = sum_j S_vj f_j. The normaliser is the same with
f = 1 (done as one extra channel). Both passes are vectorised over BFS levels: all nodes of one
depth (over the whole batch) are processed at once with ``index_add`` / ``index_select``, so the
work is O(N) and the Python loop runs O(depth) times. The tree is rooted at its centre (half the
diameter), which halves the depth compared with an arbitrary root.

The MST itself is built on the CPU with :func:`scipy.sparse.csgraph.minimum_spanning_tree`
(without gradient); the index tensors are then moved to the device of the features, so the
filtering runs (and back-propagates, through plain autograd on index ops) on CPU or CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra, shortest_path
from scipy.sparse.csgraph import minimum_spanning_tree as _scipy_mst

from .losses import to_unit_float

__all__ = [
    "GridTree",
    "build_grid_mst",
    "tree_filter",
    "tree_filter_dense",
    "tree_path_affinity",
    "rgb_tree_loss",
]

#: Constant added to every grid-edge weight before calling scipy. scipy's sparse graphs treat an
#: explicit 0 as "no edge" (a constant-colour region would then be disconnected); every spanning
#: tree has exactly N - 1 edges, so a constant offset changes no tree's rank: the MST is the same.
MST_WEIGHT_OFFSET = 1.0


@dataclass(frozen=True)
class GridTree:
    """MSTs of a batch of H x W grid graphs, rooted at their centres, with BFS-level indices.

    Attributes:
        batch, height, width: the grid geometry (N = height * width nodes per image).
        parent: (B, N) int64 numpy, parent pixel index of each pixel in its image's tree, -1 at
            the root. The tree edges are {(v, parent[v])}; every one is a 4-neighbour pair.
        parent_sqdist: (B, N) float64 numpy, squared guidance distance ||g_v - g_parent||^2
            of each node's edge to its parent (0 at the root) — w_e in the module docstring.
        root: (B,) int64 numpy, root pixel of each image.
        depth: (B, N) int64 numpy, hop distance from the root.
        order: (B*N,) int64 tensor: global node ids (b * N + v) sorted by depth (stable), so
            level d is ``order[bounds[d]:bounds[d + 1]]``.
        bounds: level boundaries into ``order`` (length = number of levels + 1).
        parent_local: (B*N,) int64 tensor, in ``order`` positions: the position of the node's
            parent inside the previous level's slice (0 for roots, unused).
        sorted_sqdist: (B*N,) float64 tensor, ``parent_sqdist`` in ``order`` positions.
        inverse: (B*N,) int64 tensor, position in ``order`` of each global node id.
    """

    batch: int
    height: int
    width: int
    parent: np.ndarray
    parent_sqdist: np.ndarray
    root: np.ndarray
    depth: np.ndarray
    order: torch.Tensor
    bounds: tuple[int, ...]
    parent_local: torch.Tensor
    sorted_sqdist: torch.Tensor
    inverse: torch.Tensor

    @property
    def num_levels(self) -> int:
        """Number of BFS levels (max depth + 1): the Python iterations of each pass."""
        return len(self.bounds) - 1

    @property
    def device(self) -> torch.device:
        return self.order.device

    def to(self, device: torch.device | str) -> "GridTree":
        """The same tree with its index tensors on ``device``."""
        device = torch.device(device)
        if device == self.device:
            return self
        return GridTree(
            self.batch, self.height, self.width, self.parent, self.parent_sqdist, self.root,
            self.depth, self.order.to(device), self.bounds, self.parent_local.to(device),
            self.sorted_sqdist.to(device), self.inverse.to(device),
        )


def _grid_edges(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """All 4-neighbour pairs (u, v), u < v, of an H x W grid (horizontal first, then vertical)."""
    idx = np.arange(height * width, dtype=np.int64).reshape(height, width)
    u = np.concatenate([idx[:, :-1].ravel(), idx[:-1, :].ravel()])
    v = np.concatenate([idx[:, 1:].ravel(), idx[1:, :].ravel()])
    return u, v


def _tree_centre(tree_csr, n: int) -> int:
    """A centre of a tree (a middle node of a longest path), by three BFS (vectorised)."""
    d0 = dijkstra(tree_csr, directed=False, indices=0, unweighted=True)
    a = int(np.argmax(d0))
    da = dijkstra(tree_csr, directed=False, indices=a, unweighted=True)
    b = int(np.argmax(da))
    db = dijkstra(tree_csr, directed=False, indices=b, unweighted=True)
    diameter = da[b]
    on_path = np.isclose(da + db, diameter)
    centre = np.flatnonzero(on_path & np.isclose(da, np.floor(diameter / 2)))
    return int(centre[0])


def _single_mst(guide: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """MST of one (D, H, W) float64 guidance image: parent, parent_sqdist, root, depth."""
    d, h, w = guide.shape
    n = h * w
    flat = guide.reshape(d, n)
    if n == 1:
        return np.array([-1]), np.zeros(1), 0, np.zeros(1, np.int64)
    u, v = _grid_edges(h, w)
    weight = ((flat[:, u] - flat[:, v]) ** 2).sum(0)
    graph = coo_matrix((weight + MST_WEIGHT_OFFSET, (u, v)), shape=(n, n)).tocsr()
    mst = _scipy_mst(graph).tocoo()
    if mst.nnz != n - 1:  # pragma: no cover - the grid is connected and weights are > 0
        raise RuntimeError(f"MST has {mst.nnz} edges, expected {n - 1}")
    sym = coo_matrix(
        (np.ones(2 * mst.nnz), (np.concatenate([mst.row, mst.col]), np.concatenate([mst.col, mst.row]))),
        shape=(n, n),
    ).tocsr()
    root = _tree_centre(sym, n)
    dist, pred = dijkstra(sym, directed=False, indices=root, unweighted=True, return_predecessors=True)
    depth = dist.astype(np.int64)
    parent = pred.astype(np.int64)
    parent[root] = -1  # scipy marks it -9999
    has_parent = parent >= 0
    sqdist = np.zeros(n)
    sqdist[has_parent] = ((flat[:, has_parent] - flat[:, parent[has_parent]]) ** 2).sum(0)
    return parent, sqdist, root, depth


@torch.no_grad()
def build_grid_mst(guide: torch.Tensor, device: torch.device | str | None = None) -> GridTree:
    """Minimum spanning trees of the 4-connected grid graphs of a batch of guidance images.

    Edge weight between 4-neighbours i, j: w_ij = ||g_i - g_j||^2 (squared colour distance, as
    the release's ``MinimumSpanningTree(TreeFilter2D.norm2_distance)``). The MST is found on the
    CPU by scipy (weights shifted by :data:`MST_WEIGHT_OFFSET` so zero-weight edges of flat
    regions survive; ties are broken by scipy — any of the tied trees is a valid MST). No
    gradient flows into the tree.

    Args:
        guide: (B, D, H, W) or (D, H, W) guidance (the RGB image: uint8, or float in the scale
            ``sigma`` is meant for — [0, 1] for sigma = 0.02; see :func:`rgb_tree_loss`).
        device: where the index tensors go (default: the guide's device).

    Returns:
        a :class:`GridTree`.
    """
    if guide.ndim == 3:
        guide = guide[None]
    if guide.ndim != 4:
        raise ValueError(f"guide must be (B, D, H, W), got {tuple(guide.shape)}")
    device = torch.device(device) if device is not None else guide.device
    g = to_unit_float(guide).detach().to("cpu", torch.float64).numpy()
    b, _, h, w = g.shape
    n = h * w
    parents, sqdists, roots, depths = [], [], [], []
    for k in range(b):
        p, s, r, dep = _single_mst(g[k])
        parents.append(p), sqdists.append(s), roots.append(r), depths.append(dep)
    parent = np.stack(parents)
    parent_sqdist = np.stack(sqdists)
    root = np.asarray(roots, dtype=np.int64)
    depth = np.stack(depths)

    # Global (forest) indexing: node b*N + v; group all nodes of one depth, over the batch.
    depth_all = depth.ravel()
    order = np.argsort(depth_all, kind="stable")
    counts = np.bincount(depth_all)
    bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    offset = (np.arange(b, dtype=np.int64) * n)[:, None]
    parent_global = np.where(parent >= 0, parent + offset, -1).ravel()
    sorted_parent = parent_global[order]
    sorted_depth = depth_all[order]
    parent_local = np.zeros(order.size, dtype=np.int64)
    nonroot = sorted_parent >= 0
    parent_local[nonroot] = inverse[sorted_parent[nonroot]] - bounds[sorted_depth[nonroot] - 1]
    sorted_sqdist = parent_sqdist.ravel()[order]

    return GridTree(
        batch=b, height=h, width=w, parent=parent, parent_sqdist=parent_sqdist, root=root,
        depth=depth, order=torch.from_numpy(order).to(device), bounds=tuple(int(x) for x in bounds),
        parent_local=torch.from_numpy(parent_local).to(device),
        sorted_sqdist=torch.from_numpy(sorted_sqdist).to(device),
        inverse=torch.from_numpy(inverse).to(device),
    )


def _check_tree(features: torch.Tensor, tree: GridTree) -> None:
    if features.ndim != 4:
        raise ValueError(f"features must be (B, C, H, W), got {tuple(features.shape)}")
    b, _, h, w = features.shape
    if (b, h, w) != (tree.batch, tree.height, tree.width):
        raise ValueError(f"features {(b, h, w)} do not match tree {(tree.batch, tree.height, tree.width)}")


def tree_filter(
    features: torch.Tensor,
    tree: GridTree | None = None,
    *,
    guide: torch.Tensor | None = None,
    sigma: float = 0.02,
) -> torch.Tensor:
    """Exact normalised MST filter AS = (S f) / (S 1), in O(N) work and O(depth) iterations.

    S_ij = exp(-(sum of w_e over the tree path i..j) / sigma), S_ii = 1 (the TEL / Point2Mask
    affinity; paper 001 Sec. 3.4.1, "long-range RGB affinity"). Differentiable w.r.t.
    ``features`` (autograd through ``index_select`` / ``index_add``); the tree is a constant.

    Args:
        features: (B, C, H, W) float features (e.g. class probabilities), any device.
        tree: from :func:`build_grid_mst`; built from ``guide`` when omitted.
        guide: the guidance image, only used when ``tree`` is None.
        sigma: affinity bandwidth, in squared guidance units (0.02 in the release).

    Returns:
        (B, C, H, W) filtered features, same dtype and device as ``features``.
    """
    if tree is None:
        if guide is None:
            raise ValueError("give a tree or a guide image")
        tree = build_grid_mst(guide, device=features.device)
    _check_tree(features, tree)
    tree = tree.to(features.device)
    b, c, h, w = features.shape
    n = h * w
    x = features.permute(0, 2, 3, 1).reshape(b * n, c)
    x = torch.cat([x, x.new_ones(b * n, 1)], dim=1)  # last channel: the normaliser S 1
    # Keep every product out of the subnormal range (CPUs compute subnormals ~100x slower; a
    # random image made one 512^2 call 10x slower): edge affinities below eps^2 become 0 and
    # feature values below tiny / eps^2 become 0, so s * A >= tiny whenever it is non-zero.
    # The error is < N * eps^2 relative (float32: 1.4e-14 per dropped path; float64: none).
    finfo = torch.finfo(x.dtype)
    s_min = finfo.eps ** 2
    x = torch.where(x.abs() < finfo.tiny / s_min, torch.zeros_like(x), x)
    xs = x.index_select(0, tree.order)
    s = torch.exp(-tree.sorted_sqdist / sigma).to(x.dtype)
    s = torch.where(s < s_min, torch.zeros_like(s), s).unsqueeze(1)
    bounds = tree.bounds
    levels = len(bounds) - 1
    sizes = [bounds[d + 1] - bounds[d] for d in range(levels)]
    # One split (not one slice per level): the backward of a slice materialises a gradient the
    # size of the whole input, which would make the backward O(N * depth); split's is one cat.
    x_lv = torch.split(xs, sizes)
    s_lv = torch.split(s, sizes)
    p_lv = torch.split(tree.parent_local, sizes)

    # leaf -> root: A_up of level d-1 = its own features + sum over children (level d) s * A_up.
    up: list[torch.Tensor] = list(x_lv)
    for d in range(levels - 1, 0, -1):
        up[d - 1] = x_lv[d - 1].index_add(0, p_lv[d], s_lv[d] * up[d])
    # root -> leaf: A(v) = s_v A(parent) + (1 - s_v^2) A_up(v)  (no cancellation when s_v ~ 1).
    down: list[torch.Tensor] = [up[0]]
    for d in range(1, levels):
        sd = s_lv[d]
        down.append(sd * down[d - 1].index_select(0, p_lv[d]) + (1 - sd * sd) * up[d])
    agg = torch.cat(down, dim=0).index_select(0, tree.inverse)
    out = agg[:, :c] / agg[:, c:]
    return out.reshape(b, h, w, c).permute(0, 3, 1, 2)


def tree_path_affinity(tree: GridTree, sigma: float = 0.02) -> np.ndarray:
    """Dense (B, N, N) float64 S_ij by enumerating tree paths — O(N^2) memory, for tests only.

    The tree is re-weighted with w_e + 1 (scipy drops explicit zeros); the path length returned
    by scipy's all-pairs shortest path (on a tree: the unique path) minus the hop count is the
    sum of w_e along the path.
    """
    n = tree.height * tree.width
    out = np.empty((tree.batch, n, n))
    for k in range(tree.batch):
        v = np.flatnonzero(tree.parent[k] >= 0)
        p = tree.parent[k][v]
        g = coo_matrix((tree.parent_sqdist[k][v] + 1.0, (v, p)), shape=(n, n)).tocsr()
        weighted = shortest_path(g, method="D", directed=False)
        hops = shortest_path(g, method="D", directed=False, unweighted=True)
        out[k] = np.exp(-(weighted - hops) / sigma)
    return out


def tree_filter_dense(features: torch.Tensor, tree: GridTree, *, sigma: float = 0.02) -> torch.Tensor:
    """Brute-force O(N^2) reference of :func:`tree_filter` (float64 numpy; not differentiable)."""
    _check_tree(features, tree)
    b, c, h, w = features.shape
    s = tree_path_affinity(tree, sigma)
    f = features.detach().to("cpu", torch.float64).reshape(b, c, h * w).numpy()
    num = np.einsum("bij,bcj->bci", s, f)
    den = s.sum(2)[:, None, :]
    return torch.from_numpy(num / den).reshape(b, c, h, w).to(features.device, features.dtype)


def rgb_tree_loss(
    probs: torch.Tensor,
    image: torch.Tensor,
    *,
    sigma: float = 0.02,
    unlabelled_mask: torch.Tensor | None = None,
    detach_target: bool = False,
    mask_numerator: bool = True,
    tree: GridTree | None = None,
) -> torch.Tensor:
    """Point2Mask's long-range RGB loss L_RGB (paper 001, Eq. 5; TEL's tree energy loss).

        L_RGB = (1 / |U|) * sum_{i in U} sum_c | p_i(c) - AS_i(c) |,   AS = tree_filter(p)

    i.e. the per-pixel L1 distance over classes, averaged over the unlabelled pixels U (the
    normalisation of TEL and of the release: ``sum(|p - AS|) / N_unlabelled``). 0 when U is empty.

    Args:
        probs: (B, C, H, W) class probabilities (softmax of the semantic logits).
        image: (B, 3, H, W) guidance for the MST and the affinities: uint8 (scaled to [0, 1]) or
            float used as is. sigma = 0.02 is meant for colours in [0, 1]. NOTE: the release feeds
            the mean/std-normalised image (std ~ 58/255), i.e. squared distances ~ 19x larger —
            pass that image instead to reproduce it (equivalently sigma ~ 0.001 on [0, 1]).
        sigma: affinity bandwidth (0.02 in the release).
        unlabelled_mask: (B, H, W) bool/0-1, True where the pixel is unlabelled (the release:
            outside the expanded point squares); None = every pixel.
        detach_target: stop the gradient through AS(p). Default False, as the release: its
            CUDA op implements ``refine_backward_feature`` and the loss does not detach, so the
            gradient flows through both p and AS(p). True treats AS(p) as a fixed soft target
            (the "pseudo label" reading of the TEL paper).
        mask_numerator: True (default, TEL): sum |p - AS| over U only. False reproduces the
            Point2Mask release (``rgd_semantic_loss``), which sums over *all* pixels but still
            divides by |U|.
        tree: a prebuilt :class:`GridTree` for ``image`` (built here when None).

    Returns:
        scalar loss tensor.
    """
    if tree is None:
        tree = build_grid_mst(image, device=probs.device)
    target = tree_filter(probs, tree, sigma=sigma)
    if detach_target:
        target = target.detach()
    per_pixel = (probs - target).abs().sum(1)  # (B, H, W)
    if unlabelled_mask is None:
        return per_pixel.mean()
    m = unlabelled_mask.to(per_pixel.dtype)
    if m.shape != per_pixel.shape:
        raise ValueError(f"unlabelled_mask {tuple(m.shape)} != {tuple(per_pixel.shape)}")
    count = m.sum()
    if count.item() == 0:
        return per_pixel.sum() * 0.0
    numerator = (per_pixel * m).sum() if mask_numerator else per_pixel.sum()
    return numerator / count
