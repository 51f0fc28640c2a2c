"""Image quality metrics in torch (any device), one value per image.

All functions take ``pred`` and ``target`` as (B, C, H, W) float tensors in [0, 1] and return a
(B,) float64 tensor (float32 on devices without float64, e.g. Apple MPS).

Conventions (as the denoising papers evaluate; see METHODS.md "two SSIM conventions"):

- ``psnr``: "PSNR". Both images are quantised to uint8 levels first (``round(clip(x, 0, 1) * 255)``),
  then ``10 log10(255^2 / MSE)`` with the MSE over all channels and pixels of an image. With
  ``quantize=False`` it is the float PSNR on the raw values with data range 1.
- ``ssim``: "SSIM (skimage)". Equals ``skimage.metrics.structural_similarity`` with its defaults:
  7x7 uniform window, K1 0.01, K2 0.03, sample covariance (N/(N-1) with N = 49), data range 255
  on the quantised values; the SSIM map is cropped by 3 pixels on each side (which makes the
  filter's border mode irrelevant) and averaged; RGB = mean of the per-channel SSIMs
  (``channel_axis=-1``). The AP-BSN and AMSNet code evaluate with this one.
- ``ssim_matlab``: "SSIM (MATLAB)". Wang et al.'s reference ``ssim_index.m`` convention, also the
  widely copied ``calculate_ssim``: 11x11 Gaussian window (sigma 1.5, normalised), 'valid'
  filtering (map cropped by 5 pixels per side), population covariance, K1 0.01, K2 0.03, data
  range 255 on quantised values, no automatic downsampling; RGB = mean of the per-channel SSIMs.
  Equals skimage's ``structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=255)``. It is *not* MATLAB's newer ``ssim()`` on an RGB
  array (3-D filtering) nor SSIM on the Y channel.
- ``ssim_y``: "SSIM (Y)". The ``ssim_matlab`` window on the luma of the quantised RGB image only, as AT-BSN
  and TM-BSN report: Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 (ITU-R BT.601, R, G, B in 0..255),
  unrounded (BasicSR's ``to_y_channel``). Single-channel images are used as they are.
"""
from __future__ import annotations

import torch

from amcfd.registry import METRICS

METRIC_LABELS = {
    "psnr": "PSNR",
    "psnr_float": "PSNR (float)",
    "ssim": "SSIM (skimage)",
    "ssim_matlab": "SSIM (MATLAB)",
    "ssim_y": "SSIM (Y)",
}
BT601_LUMA = (65.481, 128.553, 24.966)   # Y = 16 + (a R + b G + c B) / 255, R, G, B in 0..255


def _work_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _check_pair(pred: torch.Tensor, target: torch.Tensor, name: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"{name}: pred and target shapes differ: {tuple(pred.shape)} vs "
                         f"{tuple(target.shape)}")
    if pred.ndim != 4:
        raise ValueError(f"{name}: expected (B, C, H, W) tensors, got shape {tuple(pred.shape)}")


def _prepare(x: torch.Tensor, quantize: bool, dtype: torch.dtype) -> torch.Tensor:
    """Quantised images become uint8 levels 0..255 (data range 255); float ones stay in [0, 1]."""
    x = x.detach().to(dtype)
    return torch.round(x.clamp(0, 1) * 255) if quantize else x


def psnr(pred: torch.Tensor, target: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """PSNR per image (B,), in dB; inf for identical images. See the module docstring."""
    _check_pair(pred, target, "psnr")
    dtype = _work_dtype(pred.device)
    x, y = _prepare(pred, quantize, dtype), _prepare(target, quantize, dtype)
    peak = 255.0 if quantize else 1.0
    mse = (x - y).pow(2).flatten(1).mean(dim=1)                 # (B,)
    return 10 * torch.log10(peak**2 / mse)


def _gaussian_1d(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    weights = torch.exp(-(coords**2) / (2 * sigma**2))
    return weights / weights.sum()


def _filter_valid(t: torch.Tensor, weights: torch.Tensor, dim: int) -> torch.Tensor:
    """'valid' 1-D correlation along ``dim`` as a weighted sum of shifted views (exact, fast in float64)."""
    size = weights.numel()
    length = t.shape[dim] - size + 1
    out = t.narrow(dim, 0, length) * weights[0]
    for i in range(1, size):
        out = out + t.narrow(dim, i, length) * weights[i]
    return out


def _ssim_map_mean(x: torch.Tensor, y: torch.Tensor, window_1d: torch.Tensor, data_range: float,
                   sample_covariance: bool) -> torch.Tensor:
    """Mean SSIM over the 'valid' map, per channel: (B, C, H, W) x2 -> (B,) (Wang et al., eq. 13)."""
    b, c, h, w = x.shape
    size = window_1d.numel()
    if h < size or w < size:
        raise ValueError(f"SSIM needs images of at least {size}x{size} pixels, got {h}x{w}")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def local_mean(t: torch.Tensor) -> torch.Tensor:            # (N, H, W) -> (N, H-s+1, W-s+1)
        return _filter_valid(_filter_valid(t, window_1d, dim=-2), window_1d, dim=-1)

    scores = []
    for ch in range(c):                                          # one channel at a time bounds memory
        xc, yc = x[:, ch], y[:, ch]                              # (B, H, W)
        stats = local_mean(torch.cat([xc, yc, xc * xc, yc * yc, xc * yc]))   # (5B, h', w')
        mu_x, mu_y, e_xx, e_yy, e_xy = stats.split(b)
        norm = size * size / (size * size - 1) if sample_covariance else 1.0
        var_x = norm * (e_xx - mu_x * mu_x)
        var_y = norm * (e_yy - mu_y * mu_y)
        cov_xy = norm * (e_xy - mu_x * mu_y)
        ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / (
            (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
        scores.append(ssim_map.flatten(1).mean(dim=1))          # (B,)
    return torch.stack(scores, dim=1).mean(dim=1)


def ssim(pred: torch.Tensor, target: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """SSIM (skimage): 7x7 uniform window, sample covariance, border crop 3; per image (B,)."""
    _check_pair(pred, target, "ssim")
    dtype = _work_dtype(pred.device)
    x, y = _prepare(pred, quantize, dtype), _prepare(target, quantize, dtype)
    window = torch.full((7,), 1 / 7, dtype=dtype, device=x.device)
    return _ssim_map_mean(x, y, window, 255.0 if quantize else 1.0, sample_covariance=True)


def ssim_matlab(pred: torch.Tensor, target: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """SSIM (MATLAB): 11x11 Gaussian window sigma 1.5, 'valid', population covariance; per image (B,)."""
    _check_pair(pred, target, "ssim_matlab")
    dtype = _work_dtype(pred.device)
    x, y = _prepare(pred, quantize, dtype), _prepare(target, quantize, dtype)
    window = _gaussian_1d(11, 1.5, dtype, x.device)
    return _ssim_map_mean(x, y, window, 255.0 if quantize else 1.0, sample_covariance=False)


def ssim_y(pred: torch.Tensor, target: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """SSIM (Y): the MATLAB-style SSIM on the BT.601 luma of the quantised RGB images; per image (B,)."""
    _check_pair(pred, target, "ssim_y")
    dtype = _work_dtype(pred.device)
    x, y = _prepare(pred, quantize, dtype), _prepare(target, quantize, dtype)
    if x.shape[1] == 3:
        weights = torch.tensor(BT601_LUMA, dtype=dtype, device=x.device).view(1, 3, 1, 1) / 255
        scale = 1.0 if quantize else 255.0            # float images: the luma of their 0..255 values, back to 0..1
        x, y = ((16 + (t * scale * weights).sum(1, keepdim=True)) / scale for t in (x, y))
    window = _gaussian_1d(11, 1.5, dtype, x.device)
    return _ssim_map_mean(x, y, window, 255.0 if quantize else 1.0, sample_covariance=False)


def psnr_float(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR (float): no quantisation, data range 1."""
    return psnr(pred, target, quantize=False)


for _name, _fn in (("psnr", psnr), ("psnr_float", psnr_float), ("ssim", ssim), ("ssim_matlab", ssim_matlab),
                   ("ssim_y", ssim_y)):
    _fn.label = METRIC_LABELS[_name]
    METRICS.register(_name)(_fn)


def report_key(name: str) -> str:
    """The key of a metric in metrics.json and the benchmark reports: 'ssim' is written 'ssim_skimage'."""
    return "ssim_skimage" if name == "ssim" else name


def metric_label(name: str) -> str:
    """Human label for a metric name, e.g. 'ssim' -> 'SSIM (skimage)'."""
    return METRIC_LABELS.get(name, name)

