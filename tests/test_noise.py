"""Noise estimators of amcfd/noise/estimate.py on synthetic noise with a known level and correlation.

Tolerances (errors measured when written, seeded):
- i.i.d. Gaussian, std 2 / 5 / 15 (8-bit levels), on a flat grey image and on skimage's camera (256x256):
  level within 10% relative (measured <= 3.6%), |lag-1 correlation| < 0.05 (measured <= 0.033).
- Gaussian noise blurred by a 3x3 box / a Gaussian (sigma 0.8): lag-1 and lag-2 correlation within 0.05 of the
  kernel's autocorrelation (measured <= 0.023), level within 10% (measured <= 2.2%).
- The demo camera pipeline (Bayer + Poisson-Gaussian + demosaic + colour matrix + gamma), truth = one
  rendering minus the mean of 12 renderings (clipping bias removed): lag-1/2 correlation within 0.06
  (measured <= 0.024), level within 25% (measured -19% astronaut, -12% coffee: the noise is signal dependent
  and the flattest tiles lie in bright, less noisy areas).
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from conftest import load_script
from scipy.ndimage import convolve, gaussian_filter
from scipy.signal import correlate2d

from amcfd.data.imageio import write_image
from amcfd.data.synthetic import camera_pipeline, load_sample_image
from amcfd.noise.estimate import (
    measure_folder,
    noise_correlation,
    noise_level,
    noise_stats,
    suggest_choices,
    suggest_pd_strides,
)

SIZE = 256


def _tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W, C) -> (C, H, W) float32."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))


def _base(kind: str) -> np.ndarray:
    if kind == "flat":
        return np.full((SIZE, SIZE, 3), 0.5, np.float32)
    import skimage.data

    cam = skimage.data.camera().astype(np.float32) / 255
    return cv2.resize(cam, (SIZE, SIZE), interpolation=cv2.INTER_AREA)[:, :, None]


@pytest.mark.parametrize("kind", ["flat", "textured"])
@pytest.mark.parametrize("std", [2, 5, 15])
def test_white_gaussian_level_and_correlation(kind, std):
    clean = _base(kind)
    rng = np.random.default_rng(std)
    noisy = np.clip(clean + rng.standard_normal(clean.shape) * std / 255, 0, 1)
    stats = noise_stats(_tensor(noisy))
    assert abs(stats["level"] * 255 / std - 1) < 0.10, stats["level"] * 255
    assert abs(stats["corr"][1]) < 0.05, stats["corr"]
    assert noise_level(_tensor(noisy)[None]) == pytest.approx(stats["level"])     # (B, C, H, W) too


def _kernel(name: str) -> np.ndarray:
    if name == "box":
        return np.ones((3, 3)) / 9
    k = np.zeros((9, 9))
    k[4, 4] = 1
    return gaussian_filter(k, 0.8)


@pytest.mark.parametrize("kind", ["flat", "textured"])
@pytest.mark.parametrize("kernel", ["box", "gauss"])
def test_blurred_gaussian_correlation(kind, kernel):
    clean, k = _base(kind), _kernel(kernel)
    auto = np.pad(correlate2d(k, k, mode="full"), 4)
    mid = auto.shape[0] // 2
    true_corr = {s: auto[mid, mid + s] / auto[mid, mid] for s in (1, 2)}        # box: 2/3, 1/3
    rng = np.random.default_rng(7)
    white = rng.standard_normal((SIZE + 20, SIZE + 20, clean.shape[2]))
    noise = np.stack([convolve(white[..., c], k, mode="wrap") for c in range(clean.shape[2])], -1)[10:-10, 10:-10]
    noise *= 10 / 255 / np.sqrt(auto[mid, mid])                                  # std 10 levels
    est = noise_correlation(_tensor(np.clip(clean + noise, 0, 1)), lags=(1, 2))
    for s in (1, 2):
        assert abs(est[s] - true_corr[s]) < 0.05, (s, est, true_corr)
    level = noise_level(_tensor(np.clip(clean + noise, 0, 1)))
    assert abs(level / noise.std() - 1) < 0.10, (level * 255, noise.std() * 255)


def _lag_corr(d: np.ndarray, s: int) -> float:
    return 0.5 * ((d[:, s:] * d[:, :-s]).mean() + (d[s:] * d[:-s]).mean()) / (d * d).mean()


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_camera_pipeline(name):
    img = load_sample_image(name, 0.5)
    renders = np.stack([camera_pipeline(img, 0.008, 3e-4, np.random.default_rng(100 + i)) for i in range(12)])
    noise = (renders[0] - renders.mean(0)).astype(np.float64) * np.sqrt(12 / 11)  # true noise of renders[0]
    stats = noise_stats(_tensor(renders[0]))
    assert abs(stats["level"] / noise.std() - 1) < 0.25, (stats["level"] * 255, noise.std() * 255)
    for s in (1, 2):
        assert abs(stats["corr"][s] - _lag_corr(noise, s)) < 0.06, (s, stats["corr"], _lag_corr(noise, s))
    # heavy noise (~20/255), lag 2 ~ 0.15, lag 3 ~ 0: stride 3 for training, 1 for inference, as measured best
    assert stats["level"] > 8 / 255
    assert suggest_choices(stats["corr"], stats["level"]) == {"pd_train": 3, "pd_test": 1, "recharge": False}


def test_suggest_choices():
    heavy, light = 20 / 255, 3 / 255
    assert suggest_pd_strides({1: 0.02, 2: 0.0}, 10 / 255) == (2, 1)            # white, heavy
    assert suggest_choices({1: 0.02, 2: 0.0}, light) == {"pd_train": 2, "pd_test": 2, "recharge": True}
    assert suggest_pd_strides({1: 0.6, 2: 0.15, 3: 0.01}, heavy) == (3, 1)     # demosaiced: leak 3/255 at 2
    assert suggest_pd_strides({1: 0.69, 2: 0.34, 3: 0.15}, 3.7 / 255) == (2, 2)  # CC15: leak 1.3/255 at 2
    assert suggest_pd_strides({1: 0.9, 2: 0.8, 3: 0.7}, heavy) == (5, 1)       # strongly correlated: capped
    assert suggest_pd_strides({1: 0.8, 2: 0.3}, heavy) == (4, 1)               # extrapolated: lag 3 0.11, 4 0.04
    assert suggest_pd_strides({1: 0.6, 2: 0.15, 3: 0.01}, heavy, max_leak=4 / 255) == (2, 1)
    assert suggest_choices({1: 0.6, 2: 0.15}, 5 / 255, light_noise=4 / 255)["recharge"] is False


def test_errors_on_unusable_images():
    with pytest.raises(ValueError, match="smaller than one"):
        noise_level(torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match="unsaturated"):
        noise_level(torch.ones(3, 64, 64))


def test_measure_folder_and_cli(tmp_path, capsys):

    report = load_script("noise_report")

    rng = np.random.default_rng(1)
    for i in range(2):
        write_image(tmp_path / f"img{i}.png", np.clip(0.5 + rng.standard_normal((96, 96, 3)) * 5 / 255, 0, 1))
    (tmp_path / "notes.txt").write_text("not an image")
    result = measure_folder(tmp_path)
    assert len(result["images"]) == 2 and result["choices"] == {"pd_train": 2, "pd_test": 2, "recharge": True}
    assert abs(result["median_level"] * 255 / 5 - 1) < 0.15

    assert report.main([str(tmp_path), "--json", str(tmp_path / "out" / "r.json")]) == 0
    out, err = capsys.readouterr()
    assert "img0.png" in out and "pd_train 2, pd_test 2, recharge true" in out and "notes.txt" in err
    assert (tmp_path / "out" / "r.json").exists()

    assert report.main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report.main([str(empty)]) == 2
    assert capsys.readouterr().err.startswith("error: no images")
