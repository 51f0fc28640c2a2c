"""Noise level and spatial correlation of a photo, estimated from the noisy image alone.

Method (flat-patch residuals with an exact correction for the detrending):

1. Each channel is cut into non-overlapping ``patch`` x ``patch`` tiles (8x8), and each tile's least-squares
   plane a + b u + c v is removed: residual r = (I - H) p, with H the 64x64 hat matrix of the plane fit.
2. Flat tiles are chosen by a statistic that does not contain the tile's own noise: the largest residual
   energy (summed over channels) of its 4 neighbouring tiles. Texture is spatially coherent, so a tile whose
   neighbours are all flat is almost always flat, while its noise is independent of theirs (up to the
   boundary pixels when the noise is correlated). The ``fraction`` (10%) of unsaturated tiles with the lowest
   statistic are kept (at least ``min_patches``), then tiles with residual energy above 3x the median of the
   kept ones (edges that slipped through) are dropped. Tiles with more than ``max_clipped`` (2%) of their
   values at 0 or 1 (clipped noise), or with a constant channel (noise crushed, e.g. by JPEG), are never used.
3. On the kept tiles the mean residual products m(l) = <r_p r_{p+l}> are measured for all 2-D lags l with
   |dx|, |dy| <= ``max_lag`` (3). Their expectation is linear in the true noise autocovariance gamma(k):
   E[r r^T] = (I - H) Sigma(gamma) (I - H), so with gamma(k) = 0 beyond ``max_lag`` the linear system
   m = A gamma is solved exactly for gamma. This undoes the variance the plane fit absorbs (3/64 of white
   noise, more of correlated noise) and its negative bias on the lag correlations (about -0.05 at lag 1).
4. Level = sqrt(mean over channels of gamma_c(0)); correlation at lag s = mean over channels and over the
   horizontal and vertical directions of gamma_c(s) / mean gamma_c(0).

Bias and limits: signal-dependent noise (shot noise, gamma curve) is measured where the image has flat tiles
(often mid-grey or bright areas: sky, walls), not averaged over all intensities, so it can differ from the
image-wide std either way. Residual texture in the kept tiles biases the level up (mostly on images with no flat
area at all). Noise correlated beyond ``max_lag`` pixels (heavy JPEG, strong blur) breaks the gamma(k) = 0
assumption. Tolerances verified in tests/test_noise.py: i.i.d. Gaussian std 2-15/255 on a flat and on a textured
256x256 photo within 10% relative, |lag-1 correlation| < 0.05; blurred Gaussian noise within 0.05 absolute on the
lag-1/2 correlations and 10% on the level; the demo camera pipeline (amcfd.data.synthetic) within 0.06 on the
correlations and 25% on the level (the level low: signal-dependent noise, the flattest tiles lie in bright, less
noisy areas). On real photos (CC15, noisy - clean) the lag-1/2 correlations agree, but the level and the lag-3
correlation come out low: real noise has low-frequency parts (correlated beyond 3 px) that the 8x8 plane fit
absorbs.

``image_noise_level`` (``channel_noise_levels`` per channel) is the image-wide level a denoiser is given as its
sigma: 12x12 DCT tiles, the noise spectrum's shape from the flattest tiles (the low-frequency part the plane fit
above absorbs included), the level as a function of intensity averaged over the image's own intensities; see its
docstring.

Strides for pixel-shuffle downsampling (PD, AMSNet/AP-BSN): PD with stride s puts pixels s apart next to each
other, so it breaks spatially correlated noise when the correlation at lag s is small. ``suggest_choices`` turns
the measured level and correlation into (pd_train, pd_test, recharge); see its docstring for the rule.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np
import torch

from amcfd.ops.bm3d import dct_matrix

PD_CAP = 5  # largest suggested PD stride
MEASURED_SIDE = 1536    # a larger image's noise is measured on its central square of this side (time and memory)


def measured_region(image: torch.Tensor, side: int = MEASURED_SIDE) -> torch.Tensor:
    """The central ``side`` x ``side`` region of a (..., H, W) image (a shorter side is kept whole)."""
    h, w = image.shape[-2:]
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return image[..., top:top + side, left:left + side]


@functools.lru_cache(maxsize=8)
def _plane_projector(patch: int) -> np.ndarray:
    """(P*P, P*P) residual projector M = I - H of a least-squares plane fit on a P x P tile (row-major)."""
    v, u = np.meshgrid(np.arange(patch, dtype=np.float64), np.arange(patch, dtype=np.float64), indexing="ij")
    design = np.stack([np.ones(patch * patch), u.ravel(), v.ravel()], axis=1)      # (P*P, 3)
    hat = design @ np.linalg.solve(design.T @ design, design.T)                   # (P*P, P*P)
    return np.eye(patch * patch) - hat


def _lags(max_lag: int) -> list[tuple[int, int]]:
    """Half-plane of 2-D lags (dx, dy): dy > 0, or dy == 0 and dx >= 0, with |dx|, |dy| <= max_lag."""
    return [(dx, dy) for dy in range(max_lag + 1) for dx in range(-max_lag, max_lag + 1) if dy > 0 or dx >= 0]


def _pair_indices(patch: int, lag: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices (p, q) of all pixel pairs in a tile with q - p = lag (dx along width, dy along height)."""
    dx, dy = lag
    ys, xs = np.meshgrid(np.arange(patch), np.arange(patch), indexing="ij")
    ok = (ys + dy < patch) & (xs + dx >= 0) & (xs + dx < patch)
    p = (ys * patch + xs)[ok]
    return p, p + dy * patch + dx


@functools.lru_cache(maxsize=8)
def _bias_matrix(patch: int, max_lag: int) -> np.ndarray:
    """A (L, L) with E[m(l)] = sum_k A[l, k] gamma(k) for plane-detrended tiles (lags from ``_lags``)."""
    proj = _plane_projector(patch)
    lags = _lags(max_lag)
    pairs = [_pair_indices(patch, lag) for lag in lags]
    a = np.zeros((len(lags), len(lags)))
    for k, (p, q) in enumerate(pairs):
        sigma = np.zeros((patch * patch, patch * patch))
        sigma[p, q] = 1.0
        sigma[q, p] = 1.0                                       # symmetric autocovariance basis for lag k
        cov = proj @ sigma @ proj                               # covariance of the residuals
        for l, (pl, ql) in enumerate(pairs):
            a[l, k] = cov[pl, ql].mean()
    return a


def _as_batch(image: torch.Tensor) -> torch.Tensor:
    """(C, H, W) or (B, C, H, W) -> (B, C, H, W) float64."""
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4:
        raise ValueError(f"noise estimation: expected (C, H, W) or (B, C, H, W), got shape {tuple(image.shape)}")
    return image.detach().to("cpu", torch.float64)


@torch.no_grad()
def noise_stats(image: torch.Tensor, max_lag: int = 3, patch: int = 8, fraction: float = 0.1,
                min_patches: int = 16, max_clipped: float = 0.02) -> dict:
    """Noise autocovariance of a (C, H, W) / (B, C, H, W) image in [0, 1] from its flattest tiles.

    Returns ``level`` (std, [0, 1] units), ``corr`` {s: correlation at lag s, mean of horizontal and vertical}
    for s = 1..max_lag, ``gamma`` {(dx, dy): autocovariance averaged over channels} and ``patches`` (tiles
    used). Raises ValueError when the image has fewer than ``min_patches`` usable (unsaturated) tiles.
    """
    if not 1 <= max_lag < patch:
        raise ValueError(f"noise estimation: max_lag must be in 1..{patch - 1}, got {max_lag}")
    x = _as_batch(image)
    b, c, h, w = x.shape
    nh, nw = h // patch, w // patch
    if nh * nw == 0:
        raise ValueError(f"noise estimation: image {h}x{w} is smaller than one {patch}x{patch} tile")
    x = x[:, :, :nh * patch, :nw * patch]
    tiles = x.reshape(b, c, nh, patch, nw, patch).permute(0, 2, 4, 1, 3, 5)       # (B, nh, nw, C, P, P)
    tiles = tiles.reshape(b, nh, nw, c, patch * patch)
    proj = torch.from_numpy(_plane_projector(patch))
    resid = tiles @ proj                                                          # (B, nh, nw, C, P*P)
    energy = resid.pow(2).mean(-1).sum(-1)                                        # (B, nh, nw)

    # Selection statistic: the largest energy of the 4 neighbouring tiles (not the tile's own noise).
    padded = torch.nn.functional.pad(energy, (1, 1, 1, 1), value=-math.inf)      # (B, nh+2, nw+2)
    neigh = torch.stack([padded[:, :-2, 1:-1], padded[:, 2:, 1:-1], padded[:, 1:-1, :-2], padded[:, 1:-1, 2:]])
    stat = neigh.max(dim=0).values                                                # (B, nh, nw)
    stat = torch.where(torch.isinf(stat), energy, stat)
    eps = 0.5 / 65535
    clipped = ((tiles <= eps) | (tiles >= 1 - eps)).flatten(-2).double().mean(-1) > max_clipped  # (B, nh, nw)
    constant = (tiles.amax(-1) - tiles.amin(-1) <= eps).any(-1)                  # crushed (e.g. JPEG-flattened) tiles
    clipped = clipped | constant

    stat, energy, resid = stat.flatten(), energy.flatten(), resid.reshape(-1, c, patch * patch)
    usable = torch.nonzero(~clipped.flatten()).squeeze(1)
    if usable.numel() < min_patches:
        raise ValueError(f"noise estimation: only {usable.numel()} unsaturated {patch}x{patch} tiles "
                         f"(need {min_patches})")
    keep = max(min_patches, math.ceil(fraction * usable.numel()))
    chosen = usable[torch.argsort(stat[usable])[:keep]]
    chosen = chosen[energy[chosen] <= 3 * energy[chosen].median()]               # drop edges that slipped in
    r = resid[chosen].reshape(-1, c, patch, patch)                               # (K, C, P, P)

    lags = _lags(max_lag)
    measured = np.zeros((len(lags), c))
    for i, (dx, dy) in enumerate(lags):
        if dx >= 0:
            prod = r[:, :, dy:, dx:] * r[:, :, :patch - dy, :patch - dx]
        else:
            prod = r[:, :, dy:, :patch + dx] * r[:, :, :patch - dy, -dx:]
        measured[i] = prod.mean(dim=(0, 2, 3)).numpy()                            # (C,)
    gamma_c = np.linalg.solve(_bias_matrix(patch, max_lag), measured)            # (L, C) true autocovariance
    gamma = dict(zip(lags, gamma_c.mean(axis=1).tolist()))
    var = max(gamma[(0, 0)], 1e-20)
    corr = {s: 0.5 * (gamma[(s, 0)] + gamma[(0, s)]) / var for s in range(1, max_lag + 1)}
    return {"level": math.sqrt(var), "corr": corr, "gamma": gamma, "patches": int(chosen.numel())}


def noise_level(image: torch.Tensor, **kwargs) -> float:
    """Estimated std of the noise of a (C, H, W) / (B, C, H, W) image in [0, 1] ([0, 1] units)."""
    return noise_stats(image, **kwargs)["level"]


def noise_correlation(image: torch.Tensor, lags: Sequence[int] = (1, 2), **kwargs) -> dict[int, float]:
    """Normalised noise autocorrelation {lag: c} at horizontal/vertical lags (mean of both directions)."""
    max_lag = max(3, max(lags))
    corr = noise_stats(image, max_lag=max_lag, **kwargs)["corr"]
    return {int(s): corr[int(s)] for s in lags}


MAX_LEAK = 2 / 255     # largest noise std a PD stride may leave correlated with the hidden pixel, c(s) * sigma
LIGHT_NOISE = 8 / 255  # noise std below which the blind-spot output is recharged (light noise)


def _corr_at(correlation: dict[int, float], s: int) -> float:
    """c(s): measured, or extrapolated geometrically from the last two measured lags (c(m) r^(s-m), r clamped
    to [0, 1]); 0 with no measurement."""
    if s in correlation:
        return correlation[s]
    measured = sorted(t for t in correlation if 1 <= t < s)
    if not measured:
        return 0.0
    m = measured[-1]
    prev = correlation.get(m - 1, 1.0 if m == 1 else None)
    rate = min(max(correlation[m] / prev, 0.0), 1.0) if prev else 0.0
    return correlation[m] * rate ** (s - m)


def suggest_choices(correlation: dict[int, float], level: float, max_leak: float = MAX_LEAK,
                    light_noise: float = LIGHT_NOISE) -> dict:
    """AMSNet's noise-adaptive choices {pd_train, pd_test, recharge} from the noise std ``level`` ([0, 1] units)
    and its lag correlations ``correlation`` {s: c(s)}.

    * pd_train: the smallest stride s >= 2 (at most 5) whose leak c(s) * level is at most ``max_leak`` (2/255):
      the part of the noise the network can still predict from pixels s apart is below 2 levels of 8 bits.
      Heavy noise needs strides that break the correlation; light noise is better served by the nearer context,
      because there the interpolation error of a wide stride exceeds the noise itself.
    * Light noise (level < ``light_noise``, 8/255): pd_test = pd_train, recharge on (ops/recharge.py gives back
      the texture the blind-spot output could not interpolate). Heavy noise: pd_test 1 (the most context),
      recharge off (the blind-spot output is better than the photo nearly everywhere).
    The rule follows what denoised best in the benchmarks: light real noise (CC15, PolyU) with
    pd_train 2 / pd_test 2 + recharge, the heavy synthetic demo noise with 3 / 1 and no recharge (what ``auto``
    chose and the scores: docs/results.md, "Benchmark: photos_cc15", "photos_polyu30", "photos_synthetic").
    """
    pd_train = PD_CAP
    for s in range(2, PD_CAP + 1):
        if _corr_at(correlation, s) * level <= max_leak:
            pd_train = s
            break
    light = level < light_noise
    return {"pd_train": pd_train, "pd_test": pd_train if light else 1, "recharge": light}


def suggest_pd_strides(correlation: dict[int, float], level: float, **kwargs) -> tuple[int, int]:
    """(pd_train, pd_test) of ``suggest_choices``."""
    choices = suggest_choices(correlation, level, **kwargs)
    return choices["pd_train"], choices["pd_test"]


def measure_folder(items: Union[str, Path, Iterable], lags: Sequence[int] = (1, 2, 3),
                   max_images: int | None = None, on_skip=None) -> dict:
    """Noise level and correlation of each image and their medians, plus the suggested PD strides.

    ``items``: a folder (or image file), or an iterable of paths or (C, H, W) tensors in [0, 1]. Unreadable images
    and images too small / too saturated to measure are skipped (``on_skip(name, reason)`` is called).
    Returns {"images": [{"name", "level", "corr", "patches"}], "median_level", "median_corr", "choices"
    (``suggest_choices`` of the medians, or None), "skipped": [(name, reason)]}; levels are the image-wide std
    (``image_noise_level``, the level the classical core uses too) in [0, 1] units, correlations ``noise_stats``'.
    """
    from amcfd.data.imageio import ImageReadError, list_images, read_image, to_tensor

    if isinstance(items, (str, Path)):
        items = list_images(items)
    items = list(items)[:max_images] if max_images else list(items)
    rows, skipped = [], []
    for i, item in enumerate(items):
        name = Path(item).name if isinstance(item, (str, Path)) else f"image {i}"
        try:
            image = to_tensor(read_image(item)[0]) if isinstance(item, (str, Path)) else item
            stats = noise_stats(image, max_lag=max(3, max(lags)))
            level = image_noise_level(image)          # the image-wide level (what a denoiser is given)
        except (ImageReadError, ValueError) as exc:
            skipped.append((name, str(exc)))
            if on_skip is not None:
                on_skip(name, str(exc))
            continue
        rows.append({"name": name, "level": level, "corr": {s: stats["corr"][s] for s in lags},
                     "patches": stats["patches"]})
    result = {"images": rows, "skipped": skipped, "median_level": float("nan"),
              "median_corr": {s: float("nan") for s in lags}, "choices": None}
    if rows:
        result["median_level"] = float(np.median([r["level"] for r in rows]))
        result["median_corr"] = {s: float(np.median([r["corr"][s] for r in rows])) for s in lags}
        result["choices"] = suggest_choices(result["median_corr"], result["median_level"])
    return result


# --- Image-wide noise level (the sigma a denoiser is given) -------------------------------------------------------

LEVEL_TILE = 12         # tile side of the DCT analysis (not a multiple of the 8-px JPEG grid)
LEVEL_FRACTION = 0.2    # flattest share of the usable tiles that is measured
LEVEL_MIN_TILES = 8     # ... but at least this many tiles
LEVEL_BINS = 8          # intensity bins of the level-versus-intensity curve
BAND_START = 3          # DCT frequencies k1 + k2 >= BAND_START (>= 1/8 cycle/px) measure a tile's noise energy
CLIP_EPS = 0.5 / 255    # values this close to 0 or 1 count as clipped
MAX_CLIPPED = 0.25      # tiles with a larger clipped share are used only where at least half the tiles have one
CHI2_1_MEDIAN = 0.454936423119572   # median of a chi-square variable with 1 degree of freedom


def _neighbour_max(stat: np.ndarray) -> np.ndarray:
    """Largest value of the 8 neighbours of each entry of a 2-D map (-inf where there are none)."""
    h, w = stat.shape
    pad = np.pad(stat, 1, constant_values=-np.inf)
    return np.max([pad[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx],
                  axis=0)


@torch.no_grad()
def channel_noise_levels(image: torch.Tensor) -> list:
    """Image-wide noise std of each channel of a (C, H, W) / (1, C, H, W) image in [0, 1] ([0, 1] units).

    The per-channel terms of ``image_noise_level`` (see there for the method). Raises ValueError for a batch of
    several images or an image smaller than 24 x 24; a constant image gives 0.
    """
    if image.dim() == 4 and image.shape[0] != 1:
        raise ValueError(f"noise estimation: expected one image, got a batch of {image.shape[0]}")
    h, w = image.shape[-2:]
    x = _as_batch(measured_region(image))[0].numpy()
    c = x.shape[0]
    p = LEVEL_TILE
    nh, nw = x.shape[1] // p, x.shape[2] // p
    if nh < 2 or nw < 2:
        raise ValueError(f"noise estimation: image {h}x{w} is smaller than {2 * p}x{2 * p}")
    tiles = x[:, :nh * p, :nw * p].reshape(c, nh, p, nw, p).transpose(1, 3, 0, 2, 4).reshape(nh * nw, c, p, p)
    dct = dct_matrix(p)
    coef = dct @ tiles @ dct.T                                                   # (N, C, P, P)
    k1, k2 = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    ring = k1 + k2
    band = (coef[..., ring >= BAND_START] ** 2).mean(-1)                        # (N, C) E_t,c

    clipped = ((tiles <= CLIP_EPS) | (tiles >= 1 - CLIP_EPS)).mean((-1, -2)).max(-1)   # worst channel
    alive = (band > 1e-20).all(-1)                                               # no constant (crushed) channel
    if not alive.any():
        return [0.0] * c
    usable = np.nonzero(alive & (clipped <= max(MAX_CLIPPED, np.median(clipped[alive]))))[0]
    stat = _neighbour_max(band.sum(-1).reshape(nh, nw)).ravel()
    keep = max(LEVEL_MIN_TILES, math.ceil(LEVEL_FRACTION * len(usable)))
    flat = usable[np.argsort(stat[usable], kind="stable")[:keep]]

    # Spectral shape: s_c(k) = median_t(d_t,c(k)^2 / E_t,c) / median(chi2_1); the lowest frequencies (shading)
    # take the value of the next ring. gain_c = total variance / band energy = mean_k s_c(k).
    shape = np.median(coef[flat] ** 2 / band[flat][..., None, None], axis=0) / CHI2_1_MEDIAN   # (C, P, P)
    shape[:, ring <= 1] = np.median(shape[:, ring == 2], axis=-1)[:, None]
    var = band[flat] * shape.mean((-1, -2))                                     # (K, C) variance of each flat tile

    # Variance versus intensity v_c(mu) on the flat tiles, averaged over the intensities of all usable tiles.
    mean = tiles.mean((-1, -2))                                                  # (N, C)
    edges = np.linspace(0, 1, LEVEL_BINS + 1)[1:-1]
    levels = []
    for ch in range(c):
        bins = np.digitize(mean[flat, ch], edges)
        curve = np.array([var[bins == b, ch].mean() if (bins == b).sum() >= 3 else np.nan for b in range(LEVEL_BINS)])
        known = np.nonzero(np.isfinite(curve))[0]
        if len(known):
            curve = np.interp(np.arange(LEVEL_BINS), known, curve[known])
        else:                                                                    # too few flat tiles to bin
            curve[:] = var[:, ch].mean()
        levels.append(math.sqrt(curve[np.digitize(mean[usable, ch], edges)].mean()))
    return levels


def image_noise_level(image: torch.Tensor) -> float:
    """The image-wide std of the noise of a (C, H, W) / (1, C, H, W) image in [0, 1] ([0, 1] units), from the
    noisy image alone: the sigma to give a denoiser (BM3D, NLM).

    Method (per channel c, on the central 1536 x 1536 region at most):

    1. Cut into 12 x 12 tiles t (12: JPEG's 8 x 8 block steps fall inside tiles) with orthonormal 2-D DCT
       coefficients d_t(k), k = (k1, k2). Band energy E_t = mean of d_t(k)^2 over k1 + k2 >= 3 (>= 1/8 cycle/px,
       where shading and most texture are weak).
    2. Usable tiles: no constant channel, at most 25% clipped values (0 or 1) in every channel, or, where more than
       half the tiles have more, the less clipped half. Flat tiles: the 20% of them (at least 8) whose 8
       neighbours have the lowest largest band energy (a statistic that excludes the tile's own noise).
    3. Spectral shape from the flat tiles, ratio by ratio so that the local noise level cancels:
       s(k) = median_t(d_t(k)^2 / E_t) / 0.4549 (the median of chi2 with 1 dof); s(k) of the shading frequencies
       k1 + k2 <= 1 = median of s on k1 + k2 = 2 (the noise spectrum taken as flat below 1/12 cycle/px).
       A tile's noise variance is v_t = E_t * mean_k s(k): this restores the low-frequency part of spatially
       correlated noise, which a plane fit absorbs.
    4. Signal-dependent noise: v(mu) = mean of v_t over the flat tiles in each of 8 intensity bins (bins with
       fewer than 3 tiles interpolated, held at the ends), and var_c = mean of v(mu_t) over the tile means mu_t
       of all usable tiles (the image's own intensity histogram, not the flat tiles' intensities).
    5. level = sqrt(mean_c var_c).

    Limits (measured: scripts/noise_report.py --clean): noise that is weaker in flat areas than in texture (JPEG
    quantisation, in-camera noise reduction) and differences to the clean image that follow the content
    (misalignment, tone) are not seen, so the level is low there (PolyU); on images with no flat area at all,
    texture reads as noise at low noise levels (level high). Clipped noise is measured as it is in the file.
    Raises ValueError only for a batch of several images or an image smaller than 24 x 24.
    """
    levels = channel_noise_levels(image)
    return math.sqrt(sum(v * v for v in levels) / len(levels))
