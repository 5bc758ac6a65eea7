"""BESTIE losses (Eqs. 3–6) and the hard-pixel cross-entropy."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from methods.bestie import InstanceTargets, LossWeights, bestie_loss, topk_cross_entropy


@pytest.mark.parametrize("ratio", [0.2, 0.25, 0.5, 1.0])
def test_topk_ce_keeps_ceil_ratio_n_pixels(ratio: float) -> None:
    """Eleven valid pixels (one ignored) with distinct per-pixel CE: the mean of the ceil(r·11) largest."""
    logits = torch.zeros(1, 2, 1, 12)
    logits[0, 0, 0] = torch.arange(12, dtype=torch.float32)  # class 0 logit grows; target 1 → loss grows
    target = torch.ones(1, 1, 12, dtype=torch.long)
    target[0, 0, 0] = 255
    per_pixel = F.cross_entropy(logits, target, ignore_index=255, reduction="none")[0, 0, 1:]
    k = math.ceil(ratio * 11)
    expected = per_pixel.sort(descending=True).values[:k].mean()
    assert topk_cross_entropy(logits, target, ratio=ratio).item() == pytest.approx(expected.item(), rel=1e-6)


def test_topk_ce_without_labels_is_zero_with_graph() -> None:
    logits = torch.zeros(1, 3, 2, 2, requires_grad=True)
    loss = topk_cross_entropy(logits, torch.full((1, 2, 2), 255), ratio=0.2)
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def _hand_case() -> dict:
    """2×2 image, 1 centre channel; pseudo labels on 2 pixels, refined on 1 pixel with weight 0.5."""
    center = torch.zeros(1, 1, 2, 2)
    offset = torch.zeros(1, 2, 2, 2)
    pseudo = InstanceTargets(
        offset=torch.tensor([[[[1.0, 0], [0, 0]], [[0, 2.0], [0, 0]]]]),  # |.|: 1 at (0,0), 2 at (0,1)
        offset_weight=torch.tensor([[[1.0, 1.0], [0, 0]]]),
        center=torch.tensor([[[[1.0, 0.5], [3.0, 0]]]]), center_weight=torch.tensor([[[1.0, 1.0], [0, 0]]]))
    refined = InstanceTargets(
        offset=torch.tensor([[[[0, 0], [4.0, 0]], [[0, 0], [0, 0]]]]), offset_weight=torch.tensor([[[0, 0], [0.5, 0]]]),
        center=torch.tensor([[[[0, 0], [2.0, 0]]]]), center_weight=torch.tensor([[[0, 0], [0.5, 0]]]))
    logits = torch.zeros(1, 2, 2, 2)
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    return dict(semantic_logits=logits, center=center, offset=offset, semantic_target=target, pseudo=pseudo,
                refined=refined)


def test_loss_weights_and_normalisation_sum() -> None:
    out = bestie_loss(**_hand_case(), combine="sum")
    # pseudo: offset (1 + 2) / 2 px = 1.5; centre (1 + 0.25) / 2 = 0.625 (the 3.0 pixel has weight 0)
    assert out["offset_pseudo"].item() == pytest.approx(1.5)
    assert out["center_pseudo"].item() == pytest.approx(0.625)
    # refined: weight 0.5 on 1 px: offset 0.5·4 / 1 = 2; centre 0.5·4 / 1 = 2
    assert out["offset_refined"].item() == pytest.approx(2.0)
    assert out["center_refined"].item() == pytest.approx(2.0)
    ce = math.log(2)
    assert out["loss"].item() == pytest.approx(200 * 2.625 + 0.01 * 3.5 + ce, rel=1e-6)


def test_loss_mean_halves_the_instance_terms() -> None:
    out = bestie_loss(**_hand_case(), combine="mean", weights=LossWeights(200, 0.01, 1))
    assert out["center"].item() == pytest.approx(2.625 / 2) and out["offset"].item() == pytest.approx(3.5 / 2)


def test_loss_without_refined_term() -> None:
    case = _hand_case()
    case["refined"] = None
    out = bestie_loss(**case, combine="mean")
    assert out["center"].item() == pytest.approx(0.625) and "center_refined" not in out


def test_the_release_hard_pixel_ce_keeps_int_ratio_of_all_pixels_ignored_at_zero() -> None:
    """Nine pixels, six labelled with per-pixel CE log(1 + e^v), v = 0 … 5, three ignored; ratio 0.2: the
    release keeps int(0.2 · 9) = 1 pixel (the largest loss), the labelled pool ceil(0.2 · 6) = 2."""
    logits = torch.zeros(1, 2, 3, 3)
    logits[0, 0].view(-1)[:6] = torch.arange(6, dtype=torch.float32)  # target 1: loss log(1 + e^v)
    target = torch.ones(1, 3, 3, dtype=torch.long)
    target.view(-1)[6:] = 255
    top = [math.log1p(math.exp(v)) for v in (5, 4)]
    assert topk_cross_entropy(logits, target, ratio=0.2, pool="all").item() == pytest.approx(top[0], rel=1e-6)
    assert topk_cross_entropy(logits, target, ratio=0.2).item() == pytest.approx(sum(top) / 2, rel=1e-6)
    assert topk_cross_entropy(logits, target, ratio=1.0, pool="all").item() == pytest.approx(
        sum(math.log1p(math.exp(v)) for v in range(6)) / 9, rel=1e-6)
