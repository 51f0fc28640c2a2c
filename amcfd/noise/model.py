"""A noise model of photos, measured from the noisy images alone, that can synthesise noise like theirs.

    n(x) = sigma_c(mu(x)) * (k * w_c)(x),    w_c i.i.d. N(0, 1),    sum(k^2) = 1

- ``sigma_c(mu)``: the level per channel c as a function of intensity mu (real sRGB noise depends on the
  signal), piecewise linear over ``BINS`` intensity bins. Each flat 16x16 tile gives one variance sample: its
  plane-fit residual energy divided by what the fit leaves of unit-variance noise of the measured correlation,
  E|r|^2 / P^2 = sum_l A[0, l] rho(l) (estimate.py's bias matrix A). The flattest ``fraction`` of all tiles
  (the lowest energy of their neighbours, as in estimate.py) are binned by intensity and averaged per bin and
  channel (a share per bin instead would take textured tiles in bins that have few flat ones); bins without
  enough tiles take the least-squares line var = a mu + b through the others (Poisson-Gaussian). Each bin's
  level is placed at the mean intensity of the tiles it averages, not at the bin centre (flat tiles may sit
  low or high in a bin).
  Tiles of 16x16 and lags up to 5 (not estimate.py's 8x8 and 3): real camera noise has parts correlated beyond
  3 px, which a plane fit on small tiles absorbs, so smaller tiles underestimate the level of real photos.
- ``k``: the spatial correlation, a (2L+1)^2 kernel whose autocorrelation is the measured normalised
  autocovariance rho(l), |l| <= L: k = F^-1 sqrt(max(F rho, 0)), renormalised to sum(k^2) = 1 (the power
  spectrum's square root; it is exact when the spectrum is non-negative).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from amcfd.noise.estimate import _as_batch, _bias_matrix, _lags, _plane_projector, noise_stats

BINS = 8


@dataclass
class NoiseModel:
    """sigma_c(mu)^2 as ``variance`` (C, K) at ``intensity`` (C, K, increasing per channel), and the correlation
    ``kernel`` ((2L+1, 2L+1), sum of squares 1)."""

    intensity: np.ndarray
    variance: np.ndarray
    kernel: np.ndarray

    def level(self, mu: torch.Tensor) -> torch.Tensor:
        """sigma_c(mu) of a (B, C, H, W) intensity map, interpolated linearly (held flat beyond the bins)."""
        out = torch.empty_like(mu)
        flat = mu.detach().cpu().numpy()
        for c in range(mu.shape[1]):
            row = min(c, len(self.variance) - 1)
            var = np.interp(flat[:, c], self.intensity[row], self.variance[row])
            out[:, c] = torch.from_numpy(np.sqrt(np.maximum(var, 0))).to(mu)
        return out

    def synthesize(self, mu: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noise with this model's statistics for a (B, C, H, W) intensity map ``mu`` (e.g. a clean estimate)."""
        b, c, h, w = mu.shape
        white = torch.randn((b * c, 1, h, w), generator=generator, dtype=torch.float64).to(mu.device)
        k = torch.from_numpy(self.kernel).to(white)[None, None]
        pad = self.kernel.shape[0] // 2
        coloured = torch.nn.functional.conv2d(torch.nn.functional.pad(white, (pad,) * 4, mode="circular"), k)
        return (coloured.reshape(b, c, h, w).to(mu.dtype)) * self.level(mu)


def correlation_kernel(gamma: dict, max_lag: int) -> np.ndarray:
    """k with k * k = rho (normalised autocovariance {(dx, dy): gamma} on a half-plane of lags), sum(k^2) = 1."""
    size = 4 * max_lag + 4
    rho = np.zeros((size, size))
    for (dx, dy), value in gamma.items():
        rho[dy % size, dx % size] = rho[-dy % size, -dx % size] = value / gamma[(0, 0)]
    spectrum = np.maximum(np.fft.fft2(rho).real, 0)
    k = np.fft.fftshift(np.fft.ifft2(np.sqrt(spectrum)).real)
    centre = size // 2
    k = k[centre - max_lag:centre + max_lag + 1, centre - max_lag:centre + max_lag + 1]
    return k / math.sqrt((k ** 2).sum())


@torch.no_grad()
def fit_noise_model(images, max_lag: int = 5, patch: int = 16, fraction: float = 0.2, bins: int = BINS,
                    min_tiles: int = 8) -> NoiseModel:
    """The NoiseModel of an iterable of (C, H, W) / (B, C, H, W) noisy images in [0, 1]."""
    images = [_as_batch(x) for x in images]
    gammas = [noise_stats(x, max_lag=max_lag, patch=patch)["gamma"] for x in images]
    gamma = {lag: float(np.mean([g[lag] for g in gammas])) for lag in gammas[0]}
    rho = np.array([gamma[lag] / gamma[(0, 0)] for lag in _lags(max_lag)])
    leaves = float(_bias_matrix(patch, max_lag)[0] @ rho)        # E|r|^2 / P^2 for unit-variance noise
    proj = torch.from_numpy(_plane_projector(patch))
    means, samples, flatness = [], [], []
    for x in images:
        b, c, h, w = x.shape
        nh, nw = h // patch, w // patch
        tiles = x[:, :, :nh * patch, :nw * patch].reshape(b, c, nh, patch, nw, patch).permute(0, 2, 4, 1, 3, 5)
        tiles = tiles.reshape(b, nh, nw, c, patch * patch)
        energy = (tiles @ proj).pow(2).mean(-1)                                  # (B, nh, nw, C)
        total = torch.nn.functional.pad(energy.sum(-1), (1, 1, 1, 1), value=math.inf)
        neigh = torch.stack([total[:, :-2, 1:-1], total[:, 2:, 1:-1], total[:, 1:-1, :-2], total[:, 1:-1, 2:]])
        clipped = ((tiles <= 0.5 / 255) | (tiles >= 1 - 0.5 / 255)).double().mean(-1).amax(-1) > 0.02
        stat = torch.where(clipped, torch.full_like(clipped, math.inf, dtype=torch.float64),
                           neigh.amax(0).clamp_max(1e9))
        means.append(tiles.mean(-1).reshape(-1, c))
        samples.append(energy.reshape(-1, c) / leaves)
        flatness.append(stat.reshape(-1))
    means, samples, flatness = torch.cat(means).numpy(), torch.cat(samples).numpy(), torch.cat(flatness).numpy()
    edges = np.linspace(0, 1, bins + 1)
    centres = 0.5 * (edges[:-1] + edges[1:])
    intensity = np.tile(centres, (means.shape[1], 1))
    variance = np.full((means.shape[1], bins), np.nan)
    usable = np.nonzero(np.isfinite(flatness))[0]
    flat = usable[np.argsort(flatness[usable])[:max(min_tiles, int(fraction * len(usable)))]]
    for ch in range(means.shape[1]):
        which = np.clip(np.digitize(means[flat, ch], edges) - 1, 0, bins - 1)
        for k in range(bins):
            flattest = flat[which == k]
            if len(flattest) >= min_tiles:
                # the samples' own mean intensity, not the bin centre: flat tiles may sit low or high in a bin
                intensity[ch, k], variance[ch, k] = means[flattest, ch].mean(), samples[flattest, ch].mean()
        known = np.isfinite(variance[ch])
        if known.sum() >= 2:
            slope, offset = np.polyfit(intensity[ch, known], variance[ch, known], 1)
        else:
            slope, offset = 0.0, variance[ch, known].mean() if known.any() else gamma[(0, 0)]
        variance[ch, ~known] = np.maximum(slope * intensity[ch, ~known] + offset, 0)
    return NoiseModel(intensity, variance, correlation_kernel(gamma, max_lag))
