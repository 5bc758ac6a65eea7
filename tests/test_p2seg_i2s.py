"""P2Seg I2S: affinity target, Eq. 5, S = A^∘β · C, chunked == dense, pair sampling."""

import math

import pytest
import torch

from methods.p2seg.i2s import (
    RELEASE_LOSS,
    AffinityHead,
    affinity_logits,
    i2s_loss,
    instance_affinity_target,
    pair_masks,
    pooled_masks,
    refined_semantic,
    sample_pairs,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SIG1 = 1.0 / (1.0 + math.exp(-1.0))  # σ(1) = 0.7310586


def _random_case(seed: int, b: int = 2, d: int = 4, h: int = 3, w: int = 5):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(b, d, h, w, generator=g, dtype=torch.float64)
    ids = torch.tensor([0, 1, 2, 3, 255])[torch.randint(0, 5, (b, h, w), generator=g)]
    return emb, ids


# ---------------------------------------------------------------------------------------------
# head and target
# ---------------------------------------------------------------------------------------------


def test_affinity_head_shapes_and_pool():
    x = torch.randn(2, 6, 8, 12)
    assert AffinityHead(6, 16)(x).shape == (2, 16, 8, 12)
    assert AffinityHead(6, 16, pool=4)(x).shape == (2, 16, 2, 3)


def test_target_of_a_2x3_map_is_the_hand_matrix_and_block_diagonal_after_sorting():
    ids = torch.tensor([[1, 1, 2], [1, 2, 2]])  # flat: 1 1 2 1 2 2
    expected = torch.tensor([
        [1, 1, 0, 1, 0, 0],
        [1, 1, 0, 1, 0, 0],
        [0, 0, 1, 0, 1, 1],
        [1, 1, 0, 1, 0, 0],
        [0, 0, 1, 0, 1, 1],
        [0, 0, 1, 0, 1, 1],
    ], dtype=torch.bool)
    a = instance_affinity_target(ids)
    assert torch.equal(a, expected)
    order = torch.tensor([0, 1, 3, 2, 4, 5])  # pixels sorted by instance
    blocks = torch.block_diag(torch.ones(3, 3), torch.ones(3, 3)).bool()
    assert torch.equal(a[order][:, order], blocks)
    assert torch.equal(instance_affinity_target(ids[None])[0], expected)


def test_background_pairs_per_mode_on_a_hand_case():
    lab = torch.tensor([0, 0, 1])  # two background pixels, one instance pixel
    pos, neg = pair_masks(lab, lab, background="negative")
    assert torch.equal(pos, torch.tensor([[0, 0, 0], [0, 0, 0], [0, 0, 1]]).bool())
    assert torch.equal(neg, ~pos)  # paper / release: every other pair, bg–bg and bg self pairs included
    pos, neg = pair_masks(lab, lab, background="negative-to-instances")
    assert torch.equal(neg, torch.tensor([[0, 0, 1], [0, 0, 1], [1, 1, 0]]).bool())
    idx = torch.arange(3)
    pos, neg = pair_masks(lab, lab, row_index=idx, col_index=idx, self_pairs=False)
    assert not pos.any() and torch.equal(neg, ~torch.eye(3, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------
# Eq. 5
# ---------------------------------------------------------------------------------------------


def _hand_embeddings():
    # 1×3 map, ids [1, 1, 2]; F0 = F1 = (1, 0), F2 = (0, 1) → logits FᵀF = [[1,1,0],[1,1,0],[0,0,1]].
    # R⁺ (self pairs included): (0,0),(0,1),(1,0),(1,1),(2,2), all logit 1 → σ(Â) = σ(1); N⁺ = 5.
    # R⁻: (0,2),(2,0),(1,2),(2,1), all logit 0 → σ(Â) = 1/2; N⁻ = 4.
    emb = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64).reshape(1, 2, 1, 3)
    return emb, torch.tensor([[[1, 1, 2]]])


def test_eq5_on_a_hand_case_both_readings():
    emb, ids = _hand_embeddings()
    # probability reading: mean_R⁺(1 − σ(1)) + mean_R⁻(1/2) = 1.5 − σ(1) = 0.7689414
    prob = i2s_loss(emb, ids, reading="probability")
    assert prob.item() == pytest.approx(1.5 - SIG1, abs=1e-12)
    # paper reading, σ applied to the binary target: R⁺ (2 − σ(1) − σ(1)), R⁻ (σ(0) + 1/2)
    paper = i2s_loss(emb, ids, reading="paper")
    assert paper.item() == pytest.approx((2 - 2 * SIG1) + 1.0, abs=1e-12)
    # release: 0.5 weights, σ applied twice: 0.5 (1 − σ(σ(1))) + 0.5 σ(σ(0)) = 0.5 (1 − σ(0.7311)) + 0.5 σ(0.5)
    release = i2s_loss(emb, ids, semantic_map=ids, **RELEASE_LOSS)  # same class ⇔ same instance here
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert release.item() == pytest.approx(0.5 * (1 - sig(SIG1)) + 0.5 * sig(0.5), abs=1e-12)


def test_eq5_readings_have_the_same_gradient():
    emb, ids = _random_case(0)
    grads = []
    for reading in ("paper", "probability"):
        e = emb.clone().requires_grad_()
        i2s_loss(e, ids, reading=reading).backward()
        grads.append(e.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_invalid_pixels_contribute_nothing():
    emb, ids = _random_case(1)
    valid = torch.ones_like(ids, dtype=torch.bool)
    valid[0, 0, :2] = False
    e = emb.clone().requires_grad_()
    loss = i2s_loss(e, ids, valid)
    loss.backward()
    off = ~valid | (ids == 255)
    assert (e.grad.permute(0, 2, 3, 1)[off] == 0).all()
    moved = emb.clone()
    moved.permute(0, 2, 3, 1)[off] += 7.0  # their embeddings do not matter
    torch.testing.assert_close(i2s_loss(moved, ids, valid), loss.detach())
    # ignored background: id-0 pixels drop out of every pair
    e = emb.clone().requires_grad_()
    i2s_loss(e, ids, background="ignore").backward()
    assert (e.grad.permute(0, 2, 3, 1)[(ids == 0) | (ids == 255)] == 0).all()


@pytest.mark.parametrize("background", ["negative", "negative-to-instances", "ignore"])
@pytest.mark.parametrize("self_pairs", [True, False])
def test_loss_equals_the_explicit_pair_mask_formula(background, self_pairs):
    # reference: Eq. 5 ("probability" reading) with the (hw × hw) masks of pair_masks, batch-pooled means
    emb, ids = _random_case(6)
    s_pos = s_neg = n_pos = n_neg = 0.0
    for k in range(ids.shape[0]):
        lab = ids[k].flatten().clone()
        lab[(lab == 255) | ((lab == 0) if background == "ignore" else torch.zeros_like(lab, dtype=torch.bool))] = -1
        f = emb[k].flatten(1)
        p = torch.sigmoid(f.T @ f)
        idx = torch.arange(lab.numel())
        pos, neg = pair_masks(lab, lab, row_index=idx, col_index=idx, background=background, self_pairs=self_pairs)
        s_pos, n_pos = s_pos + (1 - p)[pos].sum(), n_pos + pos.sum()
        s_neg, n_neg = s_neg + p[neg].sum(), n_neg + neg.sum()
    expected = s_pos / n_pos + s_neg / n_neg
    loss = i2s_loss(emb, ids, background=background, self_pairs=self_pairs, reading="probability")
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# chunked == dense
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("background", ["negative", "negative-to-instances", "ignore"])
@pytest.mark.parametrize("chunk", [1, 4, 7, 32])
def test_chunked_loss_and_gradient_equal_dense(background, chunk):
    emb, ids = _random_case(2)
    opts = dict(background=background, self_pairs=chunk != 4, per_image=chunk == 7)
    e1, e2 = emb.clone().requires_grad_(), emb.clone().requires_grad_()
    dense = i2s_loss(e1, ids, **opts)
    chunked = i2s_loss(e2, ids, chunk_size=chunk, **opts)
    dense.backward()
    chunked.backward()
    torch.testing.assert_close(chunked, dense, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(e2.grad, e1.grad, rtol=1e-10, atol=1e-12)


def test_refined_semantic_on_a_hand_case():
    # logits with σ = 3/4 (ln 3), 1/2 (0), 1/4 (−ln 3):
    l3 = math.log(3)
    logits = torch.tensor([[l3, l3, -l3], [l3, l3, 0.0], [-l3, 0.0, l3]], dtype=torch.float64)[None]
    c = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64).reshape(1, 2, 1, 3)  # pixels 0,1 class 0
    # β = 2: A^∘2 = [[9,9,1],[9,9,4],[1,4,9]] / 16; A^∘2 C = [[18,1],[18,4],[5,9]] / 16
    out = refined_semantic(c, logits=logits, beta=2.0, normalize=None)
    expected = torch.tensor([[18, 1], [18, 4], [5, 9]], dtype=torch.float64) / 16
    torch.testing.assert_close(out[0, :, 0].T, expected)
    # row-normalised: row sums 19, 22, 14 (/16) → [[18,1]/19, [18,4]/22, [5,9]/14]
    out = refined_semantic(c, logits=logits, beta=2.0, normalize="row")
    expected = torch.tensor([[18 / 19, 1 / 19], [18 / 22, 4 / 22], [5 / 14, 9 / 14]], dtype=torch.float64)
    torch.testing.assert_close(out[0, :, 0].T, expected)
    # release: A^∘2 D⁻¹ C, C/d = [[16/19, 0], [16/22, 0], [0, 16/14]]
    out = refined_semantic(c, logits=logits, beta=2.0, normalize="release")
    expected = torch.tensor([[9 / 19 + 9 / 22, 1 / 14], [9 / 19 + 9 / 22, 4 / 14], [1 / 19 + 4 / 22, 9 / 14]],
                            dtype=torch.float64)
    torch.testing.assert_close(out[0, :, 0].T, expected)


@pytest.mark.parametrize("normalize", ["row", "release", None])
@pytest.mark.parametrize("chunk", [1, 4, 7, 32])
def test_chunked_refined_semantic_equals_dense(normalize, chunk):
    emb, _ = _random_case(3)
    g = torch.Generator().manual_seed(4)
    c = torch.softmax(torch.randn(2, 3, 3, 5, generator=g, dtype=torch.float64), 1)
    w = torch.randn(2, 3, 3, 5, generator=g, dtype=torch.float64)
    e1, e2 = emb.clone().requires_grad_(), emb.clone().requires_grad_()
    c1, c2 = c.clone().requires_grad_(), c.clone().requires_grad_()
    dense = refined_semantic(c1, logits=affinity_logits(e1), beta=3.0, normalize=normalize)
    chunked = refined_semantic(c2, embeddings=e2, beta=3.0, normalize=normalize, chunk_size=chunk)
    torch.testing.assert_close(chunked, dense, rtol=1e-12, atol=1e-12)
    (dense * w).sum().backward()
    (chunked * w).sum().backward()
    torch.testing.assert_close(e2.grad, e1.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(c2.grad, c1.grad, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# pair sampling
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("background,self_pairs", [("negative", True), ("negative", False),
                                                   ("negative-to-instances", True), ("ignore", False)])
def test_sampled_pairs_are_exactly_the_requested_number_from_the_right_sets(background, self_pairs):
    lab = torch.tensor([7, 0, 40, 40, 0, 7, 7, 1000])  # ids need not be contiguous
    if background == "ignore":
        lab = lab[lab > 0]
    g = torch.Generator().manual_seed(0)
    i, j = sample_pairs(lab, num_positive=300, num_negative=500, background=background,
                        self_pairs=self_pairs, generator=g)
    assert i.shape == j.shape == (800,)
    idx = torch.arange(lab.numel())
    pos, neg = pair_masks(lab, lab, row_index=idx, col_index=idx, background=background, self_pairs=self_pairs)
    assert pos[i[:300], j[:300]].all() and neg[i[300:], j[300:]].all()
    # every pair of each set is reachable: frequencies ≈ uniform over R⁺ and R⁻
    for sel, mask, k in ((slice(0, 300), pos, 300), (slice(300, 800), neg, 500)):
        counts = torch.zeros_like(mask, dtype=torch.float64)
        counts.index_put_((i[sel], j[sel]), torch.ones(k, dtype=torch.float64), accumulate=True)
        assert (counts[mask] > 0).all()
        assert counts[mask].max() < 6 * k / mask.sum()


def test_sampled_loss_matches_dense_when_each_set_is_constant_and_is_unbiased():
    # image 0: instances on the two halves of one embedding direction — every R⁺ logit 4, every R⁻ logit −4
    # (F = ±2 along one axis) — so any sample gives the dense value, including the pooling over images
    # with different N⁺, N⁻ (image 1: one instance, R⁻ = its pairs with background, also logit −4).
    f0 = torch.tensor([2.0, 2.0, 2.0, -2.0, -2.0, -2.0], dtype=torch.float64)
    emb = torch.stack([f0, f0]).reshape(2, 1, 2, 3)
    ids = torch.tensor([[[1, 1, 1], [2, 2, 2]], [[1, 1, 1], [255, 255, 255]]])
    ids_bg = ids.clone()
    ids_bg[1, 1] = 0
    g = torch.Generator().manual_seed(0)
    for lab in (ids, ids_bg):
        dense = i2s_loss(emb, lab, background="negative-to-instances")
        sampled = i2s_loss(emb, lab, background="negative-to-instances", max_pairs=10, generator=g)
        torch.testing.assert_close(sampled, dense)
    # random embeddings: the mean of many sampled losses approaches the dense loss
    emb, ids = _random_case(5)
    dense = i2s_loss(emb, ids).item()
    est = torch.tensor([i2s_loss(emb, ids, max_pairs=64, generator=g).item() for _ in range(300)])
    assert abs(est.mean().item() - dense) < 4 * est.std().item() / math.sqrt(len(est))


def test_a_4x4_cell_is_in_the_mask_of_any_label_it_touches():
    """The release max-pools each mask over the cell: one class pixel at (1, 1) puts the cell in class 1;
    a cell touching classes 1 and 2 is in both; 0 and 255 are in no mask."""
    labels = torch.zeros(1, 4, 8, dtype=torch.long)
    labels[0, 1, 1] = 1
    labels[0, 0, 4], labels[0, 3, 7], labels[0, 2, 5] = 1, 2, 255
    masks = pooled_masks(labels, (1, 2))
    assert masks.shape == (1, 2, 1, 2)
    assert masks[0, :, 0, 0].tolist() == [True, False] and masks[0, :, 0, 1].tolist() == [True, True]


def test_cells_sharing_a_mask_pair_positively_on_a_hand_case():
    """1×3 cells in masks {A}, {A, B}, {B}: R⁺ = the seven pairs but (0, 2), (2, 0) (self pairs included),
    R⁻ = those two; Eq. 5 (probability reading) against the explicit pair sets."""
    emb, _ = _random_case(3, b=1, h=1, w=3)
    masks = torch.tensor([[[[1, 1, 0]], [[0, 1, 1]]]], dtype=torch.bool)
    p = torch.sigmoid(affinity_logits(emb))[0]
    pos = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 1, 1]], dtype=torch.bool)
    expected = (1 - p[pos]).mean() + p[~pos].mean()
    for chunk in (None, 2):
        assert i2s_loss(emb, masks, reading="probability", chunk_size=chunk).item() == pytest.approx(
            expected.item(), abs=1e-12)
    with pytest.raises(ValueError, match="max_pairs"):
        i2s_loss(emb, masks, max_pairs=4)
