"""The torch bilateral filter reproduces cv2.bilateralFilter on 8-bit images (see amcfd/ops/bilateral.py)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from amcfd.ops.bilateral import bilateral_filter, bilateral_radius

# (d, sigmaColor, sigmaSpace): the AM-CFD default, small/large/even diameters, d <= 0 (radius from sigmaSpace)
PARAMS = [(9, 75.0, 75.0), (5, 30.0, 10.0), (4, 25.0, 3.0), (1, 40.0, 5.0), (15, 100.0, 4.0),
          (0, 20.0, 2.0), (-1, 50.0, 1.0), (0, 30.0, 3.0), (3, 200.0, 200.0)]


@pytest.fixture
def opencv_reference():
    """OpenCV's own implementation: Intel IPP (on by default in pip builds) truncates for small gray windows."""
    used = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(False)
    yield
    cv2.ipp.setUseIPP(used)


def random_image(h: int, w: int, c: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def smooth_image_with_edges(h: int, w: int, c: int, seed: int) -> np.ndarray:
    """Slow waves, a vertical step, a dark disc, Gaussian noise of std 12 levels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(xx / 7.0) * np.cos(yy / 5.0) + 50 * (xx > w // 2)
    base = base - 40 * ((yy - h / 2) ** 2 + (xx - w / 3) ** 2 < (h / 4) ** 2)
    noisy = base[..., None] + np.array([0, 10, -10][:c]) + rng.normal(0, 12, (h, w, c))
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def to_tensor(img: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].to(dtype) / 255          # (1, C, H, W)


def cv2_filter(img: np.ndarray, d: int, sc: float, ss: float) -> np.ndarray:
    out = cv2.bilateralFilter(img if img.shape[2] == 3 else img[..., 0], d, sc, ss)
    return out.reshape(img.shape).astype(np.int64)


def torch_filter_levels(img: np.ndarray, d: int, sc: float, ss: float, dtype=torch.float32) -> np.ndarray:
    out = bilateral_filter(to_tensor(img, dtype), d, sc, ss)
    return torch.round(out * 255)[0].permute(1, 2, 0).numpy().astype(np.int64)


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("make", [random_image, smooth_image_with_edges])
@pytest.mark.parametrize("d, sigma_color, sigma_space", PARAMS)
def test_matches_opencv_within_one_level(opencv_reference, d, sigma_color, sigma_space, make, channels):
    img = make(37, 53, channels, seed=d + 100 * channels)
    diff = np.abs(torch_filter_levels(img, d, sigma_color, sigma_space) - cv2_filter(img, d, sigma_color, sigma_space))
    assert diff.max() <= 1
    assert (diff > 0).mean() <= 1e-3                                    # .5 ties only


@pytest.mark.parametrize("h, w", [(1, 7), (7, 1), (2, 3), (5, 9)])
def test_matches_opencv_on_images_smaller_than_the_window(opencv_reference, h, w):
    img = random_image(h, w, 3, seed=h * w)
    for d in (3, 9, 0):
        assert np.array_equal(torch_filter_levels(img, d, 60.0, 3.0), cv2_filter(img, d, 60.0, 3.0))


def test_float64_matches_opencv_and_float32(opencv_reference):
    img = smooth_image_with_edges(31, 29, 3, seed=7)
    y64 = bilateral_filter(to_tensor(img, torch.float64), 9, 75.0, 75.0)
    assert y64.dtype == torch.float64
    y32 = bilateral_filter(to_tensor(img), 9, 75.0, 75.0)
    assert torch.allclose(y64.float(), y32, atol=1e-5)
    diff = np.abs(torch_filter_levels(img, 9, 75.0, 75.0, torch.float64) - cv2_filter(img, 9, 75.0, 75.0))
    assert diff.max() <= 1 and (diff > 0).mean() <= 1e-3


def test_default_opencv_build_differs_by_at_most_one_level():
    """With IPP on (pip builds), 1-channel images with radius <= 2 are truncated, not rounded: still <= 1 level."""
    for channels in (1, 3):
        img = random_image(32, 32, channels, seed=channels)
        for d in (3, 5, 9):
            assert np.abs(torch_filter_levels(img, d, 30.0, 3.0) - cv2_filter(img, d, 30.0, 3.0)).max() <= 1


def test_batch_gives_the_same_as_each_image():
    x = torch.rand(3, 3, 20, 24)
    batched = bilateral_filter(x, 7, 40.0, 3.0)
    assert batched.shape == x.shape and batched.dtype == x.dtype
    for i in range(3):
        assert torch.allclose(batched[i:i + 1], bilateral_filter(x[i:i + 1], 7, 40.0, 3.0), atol=1e-6)


def test_constant_image_is_unchanged_and_range_is_kept():
    x = torch.full((2, 3, 10, 11), 0.37, dtype=torch.float64)
    assert torch.allclose(bilateral_filter(x), x, atol=1e-12)
    y = bilateral_filter(torch.rand(1, 1, 16, 16), 5, 1000.0, 1000.0)
    assert y.min() >= 0 and y.max() <= 1


def test_radius_and_sigma_rules_follow_opencv():
    assert bilateral_radius(9, 75.0) == 4 and bilateral_radius(4, 1.0) == 2 and bilateral_radius(1, 1.0) == 1
    assert bilateral_radius(0, 3.0) == 4                                 # round(4.5), half to even
    assert bilateral_radius(-1, 2.5) == 4 and bilateral_radius(0, 1.0) == 2 and bilateral_radius(0, 0.2) == 1
    assert bilateral_radius(0, 0.0) == 2                                 # sigma_space <= 0 counts as 1
    x = torch.rand(1, 3, 12, 12)
    assert torch.equal(bilateral_filter(x, 5, 0.0, -2.0), bilateral_filter(x, 5, 1.0, 1.0))


def test_rejects_bad_arguments():
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="B, C, H, W"):
        bilateral_filter(x[0])
    with pytest.raises(ValueError, match="floating-point"):
        bilateral_filter((x * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="must be an int"):
        bilateral_filter(x, 5.0)
    with pytest.raises(ValueError, match="sigma_color"):
        bilateral_filter(x, 5, float("nan"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_input_device():
    x = torch.rand(2, 3, 16, 16)
    y = bilateral_filter(x.cuda(), 9, 75.0, 75.0)
    assert y.device.type == "cuda"
    assert torch.allclose(y.cpu(), bilateral_filter(x, 9, 75.0, 75.0), atol=1e-5)
