"""Complementary masks: paper Eq. 5, the authors' draw rule, options."""
from __future__ import annotations

import pytest
import torch

from amcfd.ops.masks import check_masks, complementary_masks


@pytest.mark.parametrize("mode", ["pixel", "element", "checkerboard"])
@pytest.mark.parametrize("k", [2, 3, 4])
def test_masks_are_complementary_everywhere_eq5(mode, k):
    keep = complementary_masks((6, 3, 16, 20), k=k, mode=mode)
    assert keep.dtype == torch.bool and keep.shape[:2] == (k, 6) and keep.shape[-2:] == (16, 20)
    assert torch.all(keep.sum(0) == k - 1)          # sum_i M_i = (k-1) I
    assert torch.all((~keep).sum(0) == 1)           # sum_i (1 - M_i) = I


def test_pixel_masks_are_shared_across_channels_and_element_masks_are_not():
    assert complementary_masks((2, 3, 8, 8), mode="pixel").shape == (2, 2, 1, 8, 8)
    element = complementary_masks((2, 3, 32, 32), mode="element")
    assert element.shape == (2, 2, 3, 32, 32)
    assert not torch.equal(element[:, :, 0], element[:, :, 1])


def test_masks_are_fresh_each_call_and_independent_per_sub_image():
    a = complementary_masks((4, 3, 32, 32))
    b = complementary_masks((4, 3, 32, 32))
    assert not torch.equal(a, b)
    assert not torch.equal(a[:, 0], a[:, 1])
    hidden = (~a[0]).float().mean().item()
    assert 0.4 < hidden < 0.6                       # about half hidden per branch (k=2)


def test_pixel_masks_follow_the_authors_draw_so_the_rng_stream_matches():
    torch.manual_seed(3)
    expected_index = torch.randint(0, 2, (4, 1, 8, 8))
    torch.manual_seed(3)
    keep = complementary_masks((4, 3, 8, 8))
    assert torch.equal(keep[0], expected_index != 0) and torch.equal(keep[1], expected_index != 1)


def test_generator_makes_masks_reproducible():
    draw = lambda: complementary_masks((2, 3, 8, 8), generator=torch.Generator().manual_seed(5))  # noqa: E731
    assert torch.equal(draw(), draw())


def test_checkerboard_is_fixed_and_alternates():
    keep = complementary_masks((2, 1, 4, 4), mode="checkerboard")
    assert torch.equal(keep, complementary_masks((2, 1, 4, 4), mode="checkerboard"))
    assert bool(keep[0, 0, 0, 0, 1]) and not bool(keep[0, 0, 0, 0, 0]) and not bool(keep[0, 0, 0, 1, 1])


def test_per_branch_ratio_sets_the_hidden_fraction():
    keep = complementary_masks((8, 3, 64, 64), k=2, ratio=0.3)
    assert torch.all((~keep).sum(0) == 1)
    assert abs((~keep[0]).float().mean().item() - 0.3) < 0.02
    keep3 = complementary_masks((8, 3, 64, 64), k=3, ratio=[0.2, 0.3, 0.5])
    fractions = [(~keep3[i]).float().mean().item() for i in range(3)]
    assert all(abs(f - p) < 0.02 for f, p in zip(fractions, [0.2, 0.3, 0.5]))


def test_bad_options_raise_clear_errors():
    with pytest.raises(ValueError, match="mask mode"):
        complementary_masks((1, 3, 4, 4), mode="random")
    with pytest.raises(ValueError, match=">= 2"):
        complementary_masks((1, 3, 4, 4), k=1)
    with pytest.raises(ValueError, match="summing to 1"):
        complementary_masks((1, 3, 4, 4), k=2, ratio=[0.2, 0.2])
    with pytest.raises(ValueError, match="do not fit"):
        check_masks(torch.ones(2, 3, 1, 4, 4, dtype=torch.bool), torch.rand(2, 3, 4, 4))
