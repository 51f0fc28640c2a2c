"""The noise model (amcfd/noise/model.py) recovers a known intensity-dependent level and correlation kernel from
noisy images alone, and synthesises noise with the statistics it measured.

Tolerances: the variance per intensity bin within 15% relative (between 0.1 and 0.9, where the synthetic ramp
has enough tiles), the lag-1/lag-2 correlation within 0.05 absolute, the kernel's autocorrelation within 0.05.
"""
from __future__ import annotations

import numpy as np
import torch

from amcfd.noise.estimate import noise_stats
from amcfd.noise.model import NoiseModel, correlation_kernel, fit_noise_model

GAIN = torch.tensor([0.0015, 0.0010, 0.0020])[None, :, None, None]     # var = gain * mu + floor, per channel
FLOOR = torch.tensor([2e-5, 4e-5, 1e-5])[None, :, None, None]
BLUR = torch.tensor([1.0, 2.0, 1.0])


def _ramp(h: int = 256, w: int = 512) -> torch.Tensor:
    """A clean image whose intensity rises from 0.05 to 0.95 across its width (flat everywhere locally)."""
    x = torch.linspace(0.05, 0.95, w, dtype=torch.float64)
    return x.expand(1, 3, h, w).clone()


def _known_kernel() -> np.ndarray:
    k = torch.outer(BLUR, BLUR).double()
    return (k / k.pow(2).sum().sqrt()).numpy()


def _noisy(clean: torch.Tensor, seed: int) -> torch.Tensor:
    truth = NoiseModel(np.tile(np.linspace(0, 1, 11), (3, 1)), (GAIN * torch.linspace(0, 1, 11)[None, None, None, :]
                                               + FLOOR).reshape(3, 11).numpy(), _known_kernel())
    return clean + truth.synthesize(clean, torch.Generator().manual_seed(seed))


def test_recovers_intensity_dependent_level_per_channel():
    clean = _ramp()
    model = fit_noise_model([_noisy(clean, seed) for seed in range(2)])
    inside = (model.intensity > 0.1) & (model.intensity < 0.9)
    true_var = (GAIN.flatten()[:, None] * torch.from_numpy(model.intensity) + FLOOR.flatten()[:, None]).numpy()
    rel = np.abs(model.variance[inside] / true_var[inside] - 1)
    assert rel.max() < 0.15, rel


def test_recovers_the_correlation_kernel():
    model = fit_noise_model([_noisy(_ramp(), 0)])
    k = model.kernel
    auto = np.array([np.sum(k[:, s:] * k[:, :k.shape[1] - s]) for s in (1, 2)])
    true = _known_kernel()
    true_auto = np.array([np.sum(true[:, s:] * true[:, :true.shape[1] - s]) for s in (1, 2)])
    assert np.abs(auto - true_auto).max() < 0.05, (auto, true_auto)
    assert abs((k ** 2).sum() - 1) < 1e-9


def test_white_noise_gives_a_delta_kernel():
    gamma = {(dx, dy): float(dx == 0 and dy == 0) for dy in range(4) for dx in range(-3, 4) if dy > 0 or dx >= 0}
    k = correlation_kernel(gamma, 3)
    assert abs(k[3, 3] - 1) < 1e-9 and np.abs(k).sum() - 1 < 1e-9


def test_synthesised_noise_has_the_measured_statistics():
    clean = _ramp()
    noisy = _noisy(clean, 3)
    model = fit_noise_model([noisy])
    again = clean + model.synthesize(clean, torch.Generator().manual_seed(9))
    measured, resynth = noise_stats(noisy), noise_stats(again)
    assert abs(resynth["level"] / measured["level"] - 1) < 0.1
    assert all(abs(resynth["corr"][s] - measured["corr"][s]) < 0.05 for s in (1, 2))
    refit = fit_noise_model([again])
    mu = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64).expand(1, 3, 1, 3)
    assert torch.allclose(refit.level(mu), model.level(mu), rtol=0.08)
