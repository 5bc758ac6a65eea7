"""Point2Mask transport cost (Eq. 2-3): grid shortest paths against brute force, and its switches."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from methods.point2mask import Point2MaskConfig, transport_cost


def brute_force_costs(probs, bounds, emb, sources, config, point_class=None):
    """Floyd-Warshall over the 8-connected grid, edge lengths written out per pair (Eq. 2-3)."""
    _, h, w = probs.shape
    nodes = [(y, x) for y in range(h) for x in range(w)]
    dist = np.full((len(nodes), len(nodes)), np.inf)
    np.fill_diagonal(dist, 0.0)
    for a, (y, x) in enumerate(nodes):
        for dy, dx in itertools.product((-1, 0, 1), repeat=2):
            yy, xx = y + dy, x + dx
            if (dy, dx) == (0, 0) or not (0 <= yy < h and 0 <= xx < w):
                continue
            if point_class is None:
                d_s = np.abs(probs[:, y, x] - probs[:, yy, xx]).sum()
            else:
                d_s = abs(probs[point_class, y, x] - probs[point_class, yy, xx])
            d_b = sum(max(b[y, x], b[yy, xx]) for b in bounds)
            length = d_s + config.beta * d_b
            if config.embedding_term:
                length += config.embedding_weight * max(0.0, 1 - float(emb[:, y, x] @ emb[:, yy, xx]))
            if config.diagonal_sqrt2 and dy and dx:
                length *= math.sqrt(2)
            dist[a, yy * w + xx] = length
    for k in range(len(nodes)):
        dist = np.minimum(dist, dist[:, k : k + 1] + dist[k : k + 1, :])
    return np.stack([dist[y * w + x].reshape(h, w) for y, x in sources])


@pytest.fixture(scope="module")
def maps():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(4), size=(3, 5)).transpose(2, 0, 1).astype(np.float32)
    bounds = rng.random((2, 3, 5)).astype(np.float32)
    emb = rng.normal(size=(3, 3, 5)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=0, keepdims=True)
    return probs, bounds, emb


@pytest.mark.parametrize("config", [
    Point2MaskConfig(),
    Point2MaskConfig(diagonal_sqrt2=False, embedding_term=True),
    Point2MaskConfig(cost_distance="own-class", beta=0.3),
], ids=["paper", "release-edges", "own-class"])
def test_grid_dijkstra_equals_brute_force(maps, config):
    probs, bounds, emb = maps
    rows, cols, classes = np.array([0, 2, 1]), np.array([0, 4, 2]), np.array([1, 1, 3])
    cost = transport_cost(torch.from_numpy(probs), torch.from_numpy(bounds), torch.from_numpy(emb),
                          rows, cols, classes, config)
    sources = list(zip(rows, cols))
    if config.cost_distance == "own-class":
        expected = np.concatenate([brute_force_costs(probs, bounds, emb, [s], config, c) for s, c in zip(sources, classes)])
    else:
        expected = brute_force_costs(probs, bounds, emb, sources, config)
    np.testing.assert_allclose(cost.image.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert cost.grid_max == pytest.approx(expected.max(), rel=1e-5)


def test_grid_stride_runs_on_coarse_grid_and_upsamples():
    probs = torch.zeros(2, 32, 32)
    probs[1] = 1.0
    bound = torch.zeros(1, 32, 32)
    bound[0, :, 16:] = 1.0  # the right half is "boundary": every edge there costs beta
    config = Point2MaskConfig(grid_stride=16, diagonal_sqrt2=False)
    cost = transport_cost(probs, bound, None, np.array([3]), np.array([3]), np.array([1]), config)
    assert cost.image.shape == (1, 32, 32)
    # 2 x 2 grid, source node (0, 0): the edges into the right column cost beta * 1.
    assert cost.grid_max == pytest.approx(0.1)
    assert float(cost.image[0, 0, 0]) == 0.0 and float(cost.image[0, -1, -1]) == pytest.approx(0.1)
