"""R^3 random-replacement refinement: masks, batching, chunking, padding."""
from __future__ import annotations

import pytest
import torch

from amcfd.ops.refine import random_replacement_refine, replacement_masks


def test_replacement_masks_have_the_requested_fraction_and_layout():
    pixel = replacement_masks((2, 3, 64, 64), copies=8, ratio=0.16, mode="pixel")
    assert pixel.shape == (8, 2, 1, 64, 64) and pixel.dtype == torch.bool
    assert abs(pixel.float().mean().item() - 0.16) < 0.01
    element = replacement_masks((2, 3, 64, 64), copies=8, ratio=0.16, mode="element")
    assert element.shape == (8, 2, 3, 64, 64)
    assert not torch.equal(element[:, :, 0], element[:, :, 1])
    assert not torch.equal(pixel[0], pixel[1])          # fresh per copy


def test_with_identity_denoiser_output_is_the_mix_of_the_given_masks():
    denoised, noisy = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    masks = replacement_masks(noisy.shape, copies=4, ratio=0.5)
    out = random_replacement_refine(denoised, noisy, lambda x: x, replace_masks=masks)
    share = masks.float().mean(0)                       # fraction of copies taking the noisy value
    torch.testing.assert_close(out, share * noisy + (1 - share) * denoised)


def test_all_copies_are_batched_and_chunking_keeps_the_result():
    denoised, noisy = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    masks = replacement_masks(noisy.shape, copies=8)
    calls = []
    net = torch.nn.Conv2d(3, 3, 3, padding=1)

    def fn(x):
        calls.append(x.shape[0])
        return net(x)

    with torch.no_grad():
        whole = random_replacement_refine(denoised, noisy, fn, replace_masks=masks)
        assert calls == [16]
        chunked = random_replacement_refine(denoised, noisy, fn, replace_masks=masks, chunk=5)
    assert calls[1:] == [5, 5, 5, 1]
    torch.testing.assert_close(whole, chunked, atol=1e-6, rtol=0)


def test_padding_is_added_around_the_network_and_cropped():
    denoised, noisy = torch.rand(1, 3, 6, 7), torch.rand(1, 3, 6, 7)
    seen = []

    def fn(x):
        seen.append(tuple(x.shape[-2:]))
        return x

    out = random_replacement_refine(denoised, noisy, fn, copies=2, ratio=0.0, pad=2, mode="element")
    assert seen == [(10, 11)] and out.shape == (1, 3, 6, 7)
    torch.testing.assert_close(out, denoised)


def test_authors_layout_of_stored_masks_is_accepted_for_one_image():
    denoised, noisy = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    masks = torch.rand(8, 3, 8, 8) < 0.16                  # (T, C, H, W) as in the reference file
    out = random_replacement_refine(denoised, noisy, lambda x: x, replace_masks=masks)
    torch.testing.assert_close(out[0], torch.where(masks, noisy, denoised).mean(0))


def test_bad_inputs_raise_clear_errors():
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="mode"):
        random_replacement_refine(x, x, lambda t: t, mode="row")
    with pytest.raises(ValueError, match="do not fit"):
        wrong_batch = torch.ones(8, 2, 1, 8, 8, dtype=torch.bool)
        random_replacement_refine(x, x, lambda t: t, replace_masks=wrong_batch)
    with pytest.raises(ValueError, match="same"):
        random_replacement_refine(x, torch.rand(1, 3, 8, 9), lambda t: t)
