"""MST tree filter (Point2Mask L_RGB): the tree, the exact linear-time filter, the loss."""

import heapq

import numpy as np
import pytest
import torch

from methods.wsss.tree_filter import build_grid_mst, rgb_tree_loss, tree_filter, tree_filter_dense


def _prim_total_weight(img: np.ndarray) -> float:
    """Total weight of an MST of the 4-connected grid (squared colour distance), plain Prim."""
    _, h, w = img.shape
    n = h * w
    flat = img.reshape(img.shape[0], n)
    seen = np.zeros(n, bool)
    heap = [(0.0, 0)]
    total = 0.0
    while heap:
        wt, v = heapq.heappop(heap)
        if seen[v]:
            continue
        seen[v] = True
        total += wt
        y, x = divmod(v, w)
        for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
            if 0 <= yy < h and 0 <= xx < w and not seen[yy * w + xx]:
                u = yy * w + xx
                heapq.heappush(heap, (float(((flat[:, v] - flat[:, u]) ** 2).sum()), u))
    return total


# ---------------------------------------------------------------------------------------------
# the tree
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 5), (8, 8), (3, 7)])
def test_tree_is_a_minimum_spanning_tree_of_the_4_connected_grid(shape):
    rng = np.random.default_rng(0)
    img = rng.random((3, *shape))
    tree = build_grid_mst(torch.from_numpy(img))
    h, w = shape
    parent = tree.parent[0]
    child = np.flatnonzero(parent >= 0)
    assert len(child) == h * w - 1 and (parent == -1).sum() == 1  # N - 1 edges, one root
    dy = np.abs(child // w - parent[child] // w)
    dx = np.abs(child % w - parent[child] % w)
    assert np.all(dy + dx == 1)  # only 4-neighbour edges
    assert np.all(tree.depth[0][child] == tree.depth[0][parent[child]] + 1)  # connected, rooted
    assert tree.parent_sqdist[0].sum() == pytest.approx(_prim_total_weight(img), abs=1e-12)


def test_constant_image_still_gives_a_spanning_tree():
    # all edge weights are 0: scipy drops explicit zeros, hence the constant offset
    tree = build_grid_mst(torch.full((1, 3, 6, 6), 0.5))
    assert (tree.parent[0] >= 0).sum() == 35
    assert np.all(tree.parent_sqdist == 0)


def test_root_is_the_tree_centre():
    # a 1 x 9 grid is a path: rooted at its middle it has 5 levels, not 9
    tree = build_grid_mst(torch.rand(1, 3, 1, 9))
    assert tree.root[0] == 4
    assert tree.num_levels == 5


# ---------------------------------------------------------------------------------------------
# the filter
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (4, 4), (5, 8), (8, 8)])
@pytest.mark.parametrize("sigma", [0.02, 0.2, 2.0])
def test_linear_filter_equals_brute_force_over_tree_paths(shape, sigma):
    g = torch.Generator().manual_seed(hash((shape, sigma)) % 2**31)
    img = torch.rand(2, 3, *shape, generator=g, dtype=torch.float64)
    feats = torch.rand(2, 4, *shape, generator=g, dtype=torch.float64)
    tree = build_grid_mst(img)
    fast = tree_filter(feats, tree, sigma=sigma)
    slow = tree_filter_dense(feats, tree, sigma=sigma)
    assert torch.allclose(fast, slow, atol=1e-10, rtol=0)
    # float32 features: the same to 1e-6
    fast32 = tree_filter(feats.float(), tree, sigma=sigma)
    assert fast32.dtype == torch.float32
    assert torch.allclose(fast32.double(), slow, atol=1e-6, rtol=0)


def test_constant_signal_is_unchanged():
    img = torch.rand(2, 3, 9, 7)
    feats = torch.full((2, 3, 9, 7), 0.3)
    assert torch.allclose(tree_filter(feats, guide=img, sigma=0.5), feats, atol=1e-6)


def test_constant_image_gives_the_global_mean():
    # every edge weight is 0, every S_ij = 1: AS_i = mean_j f_j
    feats = torch.rand(1, 2, 5, 6, dtype=torch.float64)
    out = tree_filter(feats, guide=torch.zeros(1, 3, 5, 6), sigma=0.02)
    assert torch.allclose(out, feats.mean((2, 3), keepdim=True).expand_as(feats), atol=1e-12)


def test_colour_edge_stops_the_smoothing():
    img = torch.zeros(1, 3, 6, 8)
    img[..., 4:] = 1.0  # black | white: the single crossing tree edge has s = exp(-3 / 0.02)
    feats = torch.zeros(1, 1, 6, 8, dtype=torch.float64)
    feats[..., :4] = 1.0
    out = tree_filter(feats, guide=img, sigma=0.02)
    assert torch.allclose(out, feats, atol=1e-12)


def test_batched_filter_equals_per_image_filter():
    img = torch.rand(3, 3, 6, 5, dtype=torch.float64)
    feats = torch.rand(3, 2, 6, 5, dtype=torch.float64)
    batched = tree_filter(feats, guide=img, sigma=0.1)
    for k in range(3):
        single = tree_filter(feats[k:k + 1], guide=img[k:k + 1], sigma=0.1)
        assert torch.allclose(batched[k:k + 1], single, atol=1e-12)


def test_gradcheck_wrt_features():
    img = torch.rand(1, 3, 3, 4, dtype=torch.float64)
    tree = build_grid_mst(img)
    feats = torch.rand(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f: tree_filter(f, tree, sigma=0.5), (feats,))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    img = torch.rand(2, 3, 16, 12)
    feats = torch.rand(2, 5, 16, 12, requires_grad=True)
    tree = build_grid_mst(img)
    cpu = tree_filter(feats, tree, sigma=0.1)
    feats_cuda = feats.detach().cuda().requires_grad_()
    gpu = tree_filter(feats_cuda, tree, sigma=0.1)
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-5)
    gpu.square().sum().backward()
    cpu.square().sum().backward()
    assert torch.allclose(feats_cuda.grad.cpu(), feats.grad, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# the loss
# ---------------------------------------------------------------------------------------------


def test_rgb_loss_is_zero_for_a_constant_prediction():
    probs = torch.full((2, 3, 8, 8), 1.0 / 3)
    assert rgb_tree_loss(probs, torch.rand(2, 3, 8, 8)).item() == pytest.approx(0.0, abs=1e-6)


def test_rgb_loss_is_the_l1_over_classes_averaged_over_unlabelled_pixels():
    img = torch.rand(1, 3, 6, 6, dtype=torch.float64)
    probs = torch.softmax(torch.randn(1, 4, 6, 6, dtype=torch.float64), 1)
    mask = torch.zeros(1, 6, 6, dtype=torch.bool)
    mask[0, 1:4, 2:5] = True
    target = tree_filter(probs, guide=img, sigma=0.2)
    per_pixel = (probs - target).abs().sum(1)
    loss = rgb_tree_loss(probs, img, sigma=0.2, unlabelled_mask=mask)
    assert loss.item() == pytest.approx(per_pixel[mask].mean().item(), abs=1e-12)
    # the release's numerator: all pixels, still divided by |U|
    release = rgb_tree_loss(probs, img, sigma=0.2, unlabelled_mask=mask, mask_numerator=False)
    assert release.item() == pytest.approx(per_pixel.sum().item() / 9, abs=1e-12)


def test_rgb_loss_without_unlabelled_pixels_is_zero_and_differentiable():
    probs = torch.rand(1, 2, 4, 4, requires_grad=True)
    loss = rgb_tree_loss(probs, torch.rand(1, 3, 4, 4), unlabelled_mask=torch.zeros(1, 4, 4))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(probs.grad == 0)


def test_detached_target_gives_the_plain_l1_gradient():
    img = torch.rand(1, 3, 5, 5, dtype=torch.float64)
    probs = torch.rand(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    rgb_tree_loss(probs, img, sigma=0.5, detach_target=True).backward()
    target = tree_filter(probs.detach(), guide=img, sigma=0.5)
    assert torch.allclose(probs.grad, torch.sign(probs.detach() - target) / 25)
    # not detached (release): the gradient also flows through AS(p), so it differs
    probs2 = probs.detach().clone().requires_grad_()
    rgb_tree_loss(probs2, img, sigma=0.5).backward()
    assert not torch.allclose(probs2.grad, probs.grad)


def test_uint8_image_is_read_as_unit_range():
    img8 = torch.randint(0, 256, (1, 3, 6, 6), dtype=torch.uint8)
    probs = torch.softmax(torch.randn(1, 3, 6, 6), 1)
    a = rgb_tree_loss(probs, img8, sigma=0.1)
    b = rgb_tree_loss(probs, img8.float() / 255, sigma=0.1)
    assert a.item() == pytest.approx(b.item(), abs=1e-6)
