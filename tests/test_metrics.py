"""Metrics: equality with scikit-image, both SSIM conventions, and real-pair sanity values."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import shared_path
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from amcfd.data.imageio import list_images, read_image, to_tensor
from amcfd.metrics import METRIC_LABELS, metric_label, psnr, psnr_float, ssim, ssim_matlab, ssim_y
from amcfd.registry import METRICS


def noisy_pair(b=2, c=3, h=40, w=52, sigma=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(b, 1, h, w, generator=g).expand(b, c, h, w) * 0.6 + 0.2
    clean = clean + 0.05 * torch.rand(b, c, h, w, generator=g)      # correlated structure
    noisy = (clean + sigma * torch.randn(b, c, h, w, generator=g)).clamp(0, 1)
    return noisy, clean


def as_uint8(t):                                 # (C,H,W) -> HxWxC uint8, the quantisation we claim
    return np.round(t.clamp(0, 1).permute(1, 2, 0).double().numpy() * 255).astype(np.uint8)


def skimage_scores(pred, target):
    a, b = as_uint8(pred), as_uint8(target)
    return (peak_signal_noise_ratio(b, a, data_range=255),
            structural_similarity(a, b, channel_axis=-1, data_range=255),
            structural_similarity(a, b, channel_axis=-1, data_range=255, gaussian_weights=True,
                                  sigma=1.5, use_sample_covariance=False))


@pytest.mark.parametrize("c", [1, 3])
def test_quantised_metrics_equal_skimage(c):
    noisy, clean = noisy_pair(c=c)
    ours = psnr(noisy, clean), ssim(noisy, clean), ssim_matlab(noisy, clean)
    for i in range(noisy.shape[0]):
        for value, expected in zip(ours, skimage_scores(noisy[i], clean[i])):
            assert abs(value[i].item() - expected) < 1e-4


def test_float_metrics_equal_skimage():
    noisy, clean = noisy_pair(b=1)
    a, b = noisy[0].permute(1, 2, 0).double().numpy(), clean[0].permute(1, 2, 0).double().numpy()
    assert abs(psnr(noisy, clean, quantize=False).item() - peak_signal_noise_ratio(b, a, data_range=1)) < 1e-4
    assert abs(psnr_float(noisy, clean).item() - psnr(noisy, clean, quantize=False).item()) == 0
    assert abs(ssim(noisy, clean, quantize=False).item()
               - structural_similarity(a, b, channel_axis=-1, data_range=1)) < 1e-4
    # quantisation matters: float PSNR differs from the uint8 convention
    assert psnr(noisy, clean, quantize=False).item() != pytest.approx(psnr(noisy, clean).item(), abs=1e-3)


def test_ssim_y_is_the_gaussian_ssim_of_bt601_luma():
    """AT-BSN / TM-BSN's SSIM: skimage's BT.601 luma (rgb2ycbcr, Y in 16..235) of the uint8 images, unrounded,
    then the 11x11 Gaussian SSIM with data range 255; grey images are used as they are."""
    from skimage.color import rgb2ycbcr

    noisy, clean = noisy_pair(b=2, sigma=0.15)
    ours = ssim_y(noisy, clean)
    for i in range(2):
        a, b = (rgb2ycbcr(as_uint8(t[i]))[..., 0] for t in (noisy, clean))
        expected = structural_similarity(a, b, data_range=255, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False)
        assert abs(ours[i].item() - expected) < 1e-4
    assert abs(ours[0].item() - ssim_matlab(noisy, clean)[0].item()) > 1e-3        # not the RGB mean
    grey_noisy, grey_clean = noisy_pair(b=1, c=1)
    torch.testing.assert_close(ssim_y(grey_noisy, grey_clean), ssim_matlab(grey_noisy, grey_clean))
    assert metric_label("ssim_y") == "SSIM (Y)" and "ssim_y" in METRICS


def test_quantisation_rounds_half_levels_like_uint8():
    clean = torch.full((1, 3, 16, 16), 100 / 255)
    pred = clean + 0.4 / 255                                       # rounds back to level 100
    assert torch.isinf(psnr(pred, clean)).all()
    assert ssim(pred, clean).item() == pytest.approx(1.0)
    assert ssim_matlab(pred, clean).item() == pytest.approx(1.0)


def test_per_image_values_do_not_depend_on_the_batch():
    noisy, clean = noisy_pair(b=3)
    for fn in (psnr, ssim, ssim_matlab):
        batch = fn(noisy, clean)
        assert batch.shape == (3,)
        single = torch.cat([fn(noisy[i:i + 1], clean[i:i + 1]) for i in range(3)])
        torch.testing.assert_close(batch, single)


def test_conventions_differ_and_are_labelled():
    noisy, clean = noisy_pair(b=1, sigma=0.2)
    assert abs(ssim(noisy, clean).item() - ssim_matlab(noisy, clean).item()) > 1e-3
    assert metric_label("ssim") == "SSIM (skimage)" and metric_label("ssim_matlab") == "SSIM (MATLAB)"
    for name in ("psnr", "ssim", "ssim_matlab"):
        assert name in METRICS and METRICS.get(name).label == METRIC_LABELS[name]


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))
    with pytest.raises(ValueError, match="11x11"):
        ssim_matlab(torch.rand(1, 3, 10, 30), torch.rand(1, 3, 10, 30))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        ssim(torch.rand(3, 8, 8), torch.rand(3, 8, 8))


@pytest.mark.parametrize("name", ["cc15", "polyu"])
def test_real_pairs_equal_skimage(name):
    """Full-size real photos (the dataset means are checked through the loader in test_data_folders)."""
    root = shared_path("data", name)
    for noisy_path in list_images(root / "noisy")[:1]:
        noisy = to_tensor(read_image(noisy_path)[0])[None]
        clean = to_tensor(read_image(root / "clean" / noisy_path.name)[0])[None]
        ours = (psnr(noisy, clean).item(), ssim(noisy, clean).item(), ssim_matlab(noisy, clean).item())
        for value, expected in zip(ours, skimage_scores(noisy[0], clean[0])):
            assert abs(value - expected) < 1e-4
        assert 28 < ours[0] < 42 and 0.5 < ours[1] < 1 and 0.5 < ours[2] < 1
