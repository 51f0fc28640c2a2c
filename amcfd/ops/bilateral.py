"""Bilateral filter in torch with OpenCV's parameters and algorithm (AM-CFD's frozen I_B = BF(I_N)).

``bilateral_filter(x, d, sigma_color, sigma_space)`` on x in [0, 1] reproduces
``cv2.bilateralFilter(round(255 * x).astype(uint8), d, sigma_color, sigma_space) / 255`` (default border):

* window: radius ``d // 2`` (``d <= 0``: ``round(1.5 * sigma_space)``), at least 1; only the offsets
  (i, j) with i^2 + j^2 <= radius^2 (a disc);
* weight of a neighbour q of p: ``exp(-(i^2 + j^2) / (2 sigma_space^2)) * exp(-dist^2 / (2 sigma_color^2))``,
  ``dist`` = sum over channels of |x_q - x_p| in 8-bit units (255 * x): L1 over RGB, |difference| for gray;
  one weight per pixel pair, shared by all channels;
* reflect-101 borders (OpenCV's BORDER_DEFAULT: ``dcb|abcd|cba``), any image size;
* sigma values <= 0 become 1 (before the radius is derived from sigma_space), as in OpenCV's own source up to 4.x.
  (The OpenCV 5.0 wheel instead returns the input unchanged for a sigma <= 0; pass positive sigmas.)

The output is not quantised. Compared with OpenCV's implementation (cv2 5.0 with ``cv2.ipp.setUseIPP(False)``) on
uint8 images given as img / 255, after rounding 255 * output, for settings of d / sigmas (d <= 0, even and odd d,
small and large radii), gray and RGB, random and noisy-smooth images: max |difference| 1 level, on the rare values
at a .5 tie that float rounding decides. With Intel IPP on (the pip default), 3-channel results are the same, but
IPP computes 1-channel images with radius <= 2 itself and truncates instead of rounding: there about half the
values are 1 level lower than here (still max 1 level). See tests/test_bilateral.py.

Large inputs are filtered in bands of rows (``BAND_PIXELS`` output pixels each, padded with the window's radius of
rows above and below, reflect-101 at the image's own borders only), so the working memory beyond the input and the
output stays about 100 MB whatever the image size; every output pixel is computed as without bands.
"""
from __future__ import annotations

import math

import torch

BAND_PIXELS = 1 << 20   # output pixels (all images of the batch) per band of rows: bounds the working memory


def bilateral_radius(d: int, sigma_space: float) -> int:
    """Window radius as OpenCV derives it: ``d // 2``, or ``round(1.5 * sigma_space)`` when d <= 0; >= 1."""
    sigma_space = sigma_space if sigma_space > 0 else 1.0
    radius = d // 2 if d > 0 else round(1.5 * sigma_space)       # Python and cvRound both round half to even
    return max(int(radius), 1)


def _reflect101_index(n: int, radius: int, device) -> torch.Tensor:
    """Source indices of a 1-D line of length n padded by ``radius`` on both sides (OpenCV reflect-101)."""
    out = []
    for p in range(-radius, n + radius):
        while n > 1 and not 0 <= p < n:                           # reflects again while out of range
            p = -p if p < 0 else 2 * n - 2 - p
        out.append(p if n > 1 else 0)
    return torch.tensor(out, dtype=torch.long, device=device)


def _check_args(x: torch.Tensor, d, sigma_color, sigma_space) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"bilateral_filter expects a (B, C, H, W) tensor, got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"bilateral_filter expects a floating-point tensor with values in [0, 1], got {x.dtype}")
    if isinstance(d, bool) or not isinstance(d, int):
        raise ValueError(f"bilateral_filter: d (the window diameter) must be an int, got {d!r}")
    for name, value in (("sigma_color", sigma_color), ("sigma_space", sigma_space)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"bilateral_filter: {name} must be a finite number, got {value!r}")


def bilateral_filter(x: torch.Tensor, d: int = 9, sigma_color: float = 75.0,
                     sigma_space: float = 75.0) -> torch.Tensor:
    """OpenCV's bilateral filter (``cv2.bilateralFilter`` on 8-bit images) on (B, C, H, W) floats in [0, 1].

    ``sigma_color`` is in 8-bit levels (0..255), ``sigma_space`` in pixels, ``d`` the window diameter
    (<= 0: from sigma_space). Returns the same shape, dtype and device; differentiable in x.
    """
    _check_args(x, d, sigma_color, sigma_space)
    sigma_color = float(sigma_color) if sigma_color > 0 else 1.0
    sigma_space = float(sigma_space) if sigma_space > 0 else 1.0
    radius = bilateral_radius(d, sigma_space)
    color_coeff = -0.5 / (sigma_color * sigma_color)
    space_coeff = -0.5 / (sigma_space * sigma_space)
    b, c, h, w = x.shape
    rows = _reflect101_index(h, radius, x.device)
    cols = _reflect101_index(w, radius, x.device)
    band = max(1, BAND_PIXELS // (b * w))
    if band >= h:
        return _filter_rows(x, x.index_select(-2, rows).index_select(-1, cols), radius, color_coeff, space_coeff)
    out = torch.empty_like(x)
    for top in range(0, h, band):                                   # row bands, each with its radius of context
        bottom = min(top + band, h)
        padded = x.index_select(-2, rows[top:bottom + 2 * radius]).index_select(-1, cols)
        out[..., top:bottom, :] = _filter_rows(x[..., top:bottom, :], padded, radius, color_coeff, space_coeff)
    return out


def _filter_rows(x: torch.Tensor, padded: torch.Tensor, radius: int, color_coeff: float,
                 space_coeff: float) -> torch.Tensor:
    """The filter of ``x`` (B, C, h, W), given ``padded``: the same rows with ``radius`` more on every side
    (B, C, h+2r, W+2r)."""
    h, w = x.shape[-2:]
    padded_levels = padded * 255.0                                  # colour distances in 8-bit units
    centre_levels = x * 255.0                                       # (B, C, h, W)
    numerator = torch.zeros_like(x)                                 # (B, C, h, W)
    denominator = torch.zeros_like(x[:, :1])                        # (B, 1, h, W)
    for i in range(-radius, radius + 1):
        for j in range(-radius, radius + 1):
            if i * i + j * j > radius * radius:                     # disc-shaped window
                continue
            window = (..., slice(radius + i, radius + i + h), slice(radius + j, radius + j + w))
            shifted = padded[window]                                                    # (B, C, h, W)
            dist = (padded_levels[window] - centre_levels).abs().sum(dim=1, keepdim=True)  # (B, 1, h, W)
            weight = torch.exp(dist * dist * color_coeff) * math.exp((i * i + j * j) * space_coeff)
            numerator += weight * shifted
            denominator += weight
    return numerator / denominator                                  # the centre's weight is 1: never 0
