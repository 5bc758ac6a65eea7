"""BESTIE peak attention module: ReLU, then zero what is below alpha x the channel max."""

import pytest
import torch

from methods.wsss.pam import PeakAttention, peak_attention


def test_pam_on_a_hand_made_tensor():
    x = torch.tensor([[
        [[10.0, 6.9], [7.0, 3.0]],    # max 10, boundary 7: 6.9 and 3 go, 7 (== boundary) stays
        [[-1.0, -2.0], [-3.0, -4.0]],  # all negative: ReLU leaves zeros
        [[0.5, -0.5], [0.2, 0.4]],    # max 0.5, boundary 0.35: 0.2 goes, 0.4 stays
    ]])
    expected = torch.tensor([[
        [[10.0, 0.0], [7.0, 0.0]],
        [[0.0, 0.0], [0.0, 0.0]],
        [[0.5, 0.0], [0.0, 0.4]],
    ]])
    assert torch.equal(PeakAttention(alpha=0.7)(x), expected)


def test_alpha_zero_is_relu_and_alpha_one_keeps_only_the_max():
    x = torch.randn(2, 4, 5, 5)
    assert torch.equal(peak_attention(x, alpha=0.0), torch.relu(x))
    out = peak_attention(x, alpha=1.0)
    kept = out > 0
    assert torch.all(kept.sum((2, 3)) <= 1)
    assert torch.equal(out.amax((2, 3)), torch.relu(x).amax((2, 3)))


def test_pam_has_no_parameters_and_passes_gradient_to_kept_values_only():
    pam = PeakAttention()
    assert pam.alpha == 0.7 and list(pam.parameters()) == []
    x = torch.tensor([[[[1.0, 0.8], [0.5, -1.0]]]], requires_grad=True)
    pam(x).sum().backward()
    assert x.grad.tolist() == [[[[1.0, 1.0], [0.0, 0.0]]]]


def test_alpha_outside_unit_interval_is_rejected():
    with pytest.raises(ValueError):
        PeakAttention(alpha=1.5)
