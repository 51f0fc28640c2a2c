"""Classical guides: filters of the noisy image whose strength follows its noise, never a clean image.

* ``bilateral``: ``ops.bilateral.bilateral_filter`` (OpenCV's algorithm in torch; AM-CFD's BF(I_N)).
* ``nlm``: OpenCV's non-local means (Buades et al. 2005; ``fastNlMeansDenoisingColored``, which filters luma and
  colour in Lab), per image on 8 bits, with filtering parameter h = ``strength`` x the image's own noise level in
  0..255 (``noise.estimate.noise_level``, measured on the noisy image) when ``h`` is ``auto``.
* ``nlm2``: the mean of ``nlm`` at full size and ``nlm`` on the four stride-2 sub-images (``ops.pd``: noise less
  correlated there) reassembled, at h = the image-wide level (``noise.estimate.image_noise_level``).
* ``bm3d``: ``ops.bm3d.bm3d`` with thresholds from the image's own noise (``bm3d_sigma``).
* ``classical``: the classical core's filter (``classical_filter``: BM3D, thresholds chosen per image).

``GUIDES`` names them for ``method.guide`` of coarse distillation and for the benchmark's classical rows.
"""
from __future__ import annotations

import numpy as np
import torch

from amcfd.ops.bilateral import bilateral_filter
from amcfd.ops.bm3d import bm3d, patch_noise_std
from amcfd.ops.pd import pd_down, pd_up
from amcfd.ops.tiling import tiled_denoise

AUTO = "auto"


def per_image_uint8(x: torch.Tensor, filter_image, measure: bool) -> torch.Tensor:
    """``filter_image(u8, sigma)`` on each image of (B, C, H, W) in [0, 1] as an HxWxC uint8 array, with
    ``sigma`` its noise level in 0..255 (noise/estimate.py, measured on the noisy image itself; 0 for an image
    too small or saturated to measure) when ``measure``, else None."""
    from amcfd.noise.estimate import noise_level

    out = []
    for image in x:
        u8 = np.round(image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
        sigma = None
        if measure:
            try:
                sigma = float(noise_level(torch.from_numpy(u8).permute(2, 0, 1).float()[None] / 255)) * 255
            except ValueError:      # too small or too saturated to measure (estimate.py): no noise seen
                sigma = 0.0
        filtered = np.ascontiguousarray(filter_image(u8, sigma)).reshape(u8.shape)
        out.append(torch.from_numpy(filtered).permute(2, 0, 1).float() / 255)
    return torch.stack(out).to(x.device)


def nlm_filter(x: torch.Tensor, h: float | str = AUTO, strength: float = 1.0, template: int = 7,
               search: int = 21) -> torch.Tensor:
    """OpenCV non-local means per image of (B, C, H, W) in [0, 1]; ``h: auto`` = ``strength`` x the image's own
    noise level in 0..255, for luma and colour alike; a number is used as it is."""
    import cv2

    if h != AUTO and (isinstance(h, str) or h <= 0):
        raise ValueError(f"h must be 'auto' or > 0, got {h!r}")
    if strength <= 0 or template < 1 or search < template:
        raise ValueError(f"need strength > 0 and 1 <= template <= search, got {strength}, {template}, {search}")

    def one(u8: np.ndarray, sigma: float | None) -> np.ndarray:
        level = strength * sigma if h == AUTO else float(h)
        if level <= 0:                        # no noise measured (too small or flat to measure): left as it is
            return u8
        if u8.shape[-1] == 3:
            return cv2.fastNlMeansDenoisingColored(u8[..., ::-1].copy(), None, level, level, template,
                                                   search)[..., ::-1]
        return cv2.fastNlMeansDenoising(u8[..., 0], None, level, template, search)

    return per_image_uint8(x, one, measure=h == AUTO)


def nlm_two_scale(x: torch.Tensor, h: float | str = AUTO, strength: float = 1.0, template: int = 7,
                  search: int = 21) -> torch.Tensor:
    """(NLM(x) + P_2^-1 NLM(P_2 x)) / 2 per image: non-local means at full size and on the four stride-2
    sub-images (reassembled exactly), both at h = ``strength`` x the whole image's level (``auto``) or ``h``."""
    out = []
    for image in x.split(1):
        level = strength * image_level(image) * 255 if h == AUTO else h
        if level <= 0:                       # no noise measured: nothing to filter
            out.append(image)
            continue
        subs = pd_up(nlm_filter(pd_down(image, 2, pad_mode="reflect"), level, 1.0, template, search), 2,
                     image.shape[-2:])
        out.append(0.5 * (nlm_filter(image, level, 1.0, template, search) + subs))
    return torch.cat(out)


def image_level(image: torch.Tensor) -> float:
    """The image-wide noise std ([0, 1] units) of a (1, C, H, W) / (C, H, W) image
    (``noise.estimate.image_noise_level``); 0 for an image too small to measure."""
    from amcfd.noise.estimate import image_noise_level

    try:
        return float(image_noise_level(image))
    except ValueError:
        return 0.0


THRESHOLDS = ("auto", "white", "spectrum")
WHITE_STRENGTH = 4.0      # 'white': thresholds at this multiple of the flat-tile level (noise.estimate.noise_level)
CORRELATED = 0.3          # 'auto': lag-1 noise correlation from which the noise counts as spatially correlated


def bm3d_sigma(image: torch.Tensor, thresholds: str = "auto", strength: float | None = None):
    """The noise std ``ops.bm3d.bm3d`` thresholds at, for one (C, H, W) image in [0, 1], measured on the image:

    * white: a number, ``strength`` (4) x the flat-tile level ``noise_level``: a threshold for white noise that
      covers the low frequencies of correlated noise (the crude form of the correlated-noise thresholds: real
      camera noise is correlated 0.4-0.8 at 1 px, so an 8x8 patch's lowest DCT frequencies hold 2.5-4x the pixel
      std, and the flat-tile level reads low on JPEG photos);
    * spectrum: (8, 8) per DCT frequency, ``strength`` (1) x the image-wide level ``image_noise_level`` x the
      shape of the measured normalised autocovariance (lags <= 3, ``bm3d.patch_noise_std``): BM3D for white or
      mildly correlated noise;
    * auto: 'white' when the measured lag-1 correlation is at least ``CORRELATED`` (0.3), else 'spectrum'.
    Unmeasurable (too small, or flat): 0, no filtering."""
    from amcfd.noise.estimate import measured_region, noise_stats

    if thresholds not in THRESHOLDS:
        raise ValueError(f"thresholds must be one of {THRESHOLDS}, got {thresholds!r}")
    if strength is not None and strength <= 0:
        raise ValueError(f"strength must be > 0, got {strength}")
    region = measured_region(image)
    try:
        stats = noise_stats(region)
    except ValueError:
        return 0.0
    if thresholds == "auto":
        thresholds = "white" if stats["corr"][1] >= CORRELATED else "spectrum"
    if thresholds == "white":
        return (WHITE_STRENGTH if strength is None else strength) * stats["level"]
    shape = patch_noise_std({lag: g / max(stats["gamma"][(0, 0)], 1e-20) for lag, g in stats["gamma"].items()})
    return (1.0 if strength is None else strength) * image_level(region) * shape


def bm3d_filter(x: torch.Tensor, thresholds: str = "auto", strength: float | None = None,
                sigma: float | str = AUTO, tile: int = 512, overlap: int = 32, **options) -> torch.Tensor:
    """``ops.bm3d.bm3d`` per image of (B, C, H, W) in [0, 1] at the image's own noise (``bm3d_sigma``:
    ``thresholds`` auto | white | spectrum, ``strength``), or for white noise of std ``sigma`` (0..255) as given;
    big images in tiles of ``tile`` pixels (``ops.tiling``: memory grows with the tile, not the photo).
    ``options``: ``bm3d``'s (radius, step, lam, ...)."""
    if sigma != AUTO and (isinstance(sigma, str) or sigma < 0):
        raise ValueError(f"sigma must be 'auto' or >= 0, got {sigma!r}")
    out = []
    for image in x:
        noise = bm3d_sigma(image, thresholds, strength) if sigma == AUTO else float(sigma) / 255

        def filter_tiles(tiles: torch.Tensor, noise=noise) -> torch.Tensor:
            return torch.stack([bm3d(t, noise, **options) for t in tiles])

        out.append(tiled_denoise(filter_tiles, image[None].float(), tile, overlap)[0].clamp(0, 1))
    return torch.stack(out).to(x.dtype)


def classical_filter(x: torch.Tensor, **options) -> torch.Tensor:
    """The classical core's filter: ``bm3d_filter`` with ``thresholds: auto``: per image, thresholds for
    correlated noise (light or heavy: real camera noise) or for white noise, from the measured correlation.
    NLM, at one or two scales, scored below it on every set, light and heavy (docs/results.md, "Benchmark:
    classical_*"), so the choice is between BM3D's thresholds, not between filters."""
    return bm3d_filter(x, **options)


GUIDES = {"bilateral": bilateral_filter, "nlm": nlm_filter, "nlm2": nlm_two_scale, "bm3d": bm3d_filter,
          "classical": classical_filter}
