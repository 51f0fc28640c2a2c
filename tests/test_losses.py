"""Losses: masked L1 (Eq. 4), smoothness prior (Eq. 9), plain L1, registry entries."""
from __future__ import annotations

import pytest
import torch

from amcfd.losses.basic import l1, masked_l1, smoothness_tv
from amcfd.registry import LOSSES


def test_masked_l1_counts_hidden_elements_only():
    out, target = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    hidden = torch.rand(2, 1, 4, 4) < 0.5
    expected = (out - target).abs()[hidden.expand(2, 3, 4, 4)].mean()
    torch.testing.assert_close(masked_l1(out, target, hidden), expected)
    changed = torch.where(hidden, out, out + 5.0)          # visible positions do not matter
    torch.testing.assert_close(masked_l1(changed, target, hidden), expected)


def test_masked_l1_without_hidden_pixels_is_zero_and_differentiable():
    out = torch.rand(1, 3, 4, 4, requires_grad=True)
    loss = masked_l1(out, torch.rand(1, 3, 4, 4), torch.zeros(1, 1, 4, 4, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(out.grad == 0)


def test_smoothness_matches_the_isotropic_formula_and_is_zero_gradient_on_flat_images():
    img = torch.rand(1, 2, 5, 6)
    dy = img[..., 1:, :-1] - img[..., :-1, :-1]
    dx = img[..., :-1, 1:] - img[..., :-1, :-1]
    torch.testing.assert_close(smoothness_tv(img, eps=1e-12), torch.sqrt(dy**2 + dx**2 + 1e-12).mean())
    flat = torch.full((1, 3, 8, 8), 0.5, requires_grad=True)
    smoothness_tv(flat).backward()
    assert torch.isfinite(flat.grad).all() and torch.all(flat.grad == 0)
    assert smoothness_tv(flat).item() == pytest.approx(1e-3, rel=1e-3)   # sqrt(eps)


def test_smoothness_prefers_smooth_images():
    ramp = torch.linspace(0, 1, 16).view(1, 1, 1, 16).expand(1, 3, 16, 16)
    noisy = ramp + 0.1 * torch.randn_like(ramp)
    assert smoothness_tv(ramp) < smoothness_tv(noisy)


def test_registered_losses_apply_their_weight():
    a, b = torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4)
    assert {"MaskedL1Loss", "SmoothnessLoss", "L1Loss"} <= set(LOSSES.names())
    torch.testing.assert_close(LOSSES.build({"type": "L1Loss", "loss_weight": 2.0})(a, b), 2 * l1(a, b))
    tv = LOSSES.build({"type": "SmoothnessLoss", "loss_weight": 0.01})
    torch.testing.assert_close(tv(a), 0.01 * smoothness_tv(a))
    hidden = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    torch.testing.assert_close(LOSSES.build({"type": "MaskedL1Loss"})(a, b, hidden), l1(a, b))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="H>=2"):
        smoothness_tv(torch.rand(1, 3, 1, 5))
    with pytest.raises(ValueError, match="eps"):
        smoothness_tv(torch.rand(1, 3, 4, 4), eps=0)
