"""BM3D-class collaborative filtering in torch (batched; CPU and CUDA), for white or correlated noise.

y = x + n. Each channel's noise is stationary with a known std per coefficient of the 2-D DCT of a P x P patch,
``sigma[c, u, v]`` (``patch_noise_std``: from the noise autocovariance; white noise of std s gives s everywhere).
Dabov et al. (TIP 2007) with the colour grouping of CBM3D (ICIP 2007) and per-frequency thresholds for
correlated noise (Mäkinen, Azzari and Foi, TIP 2020):

1. Hard thresholding. Reference patches on a grid of step ``step``; for each, the ``group`` nearest patches within
   ``radius`` pixels by the mean squared distance on the first (luma) channel, kept when below ``tau_hard``; group
   sizes are powers of 2. The 3-D transform is the 2-D DCT of each patch and a 1-D Haar transform across the
   group (orthonormal, so a coefficient's noise std is sigma[c, u, v]); coefficients with
   |T| < ``lam`` * sigma[c, u, v] are set to 0 (the group's DC never). Estimates are aggregated with a Kaiser
   window and weights 1 / sum of the kept coefficients' noise variances.
2. Wiener filtering. Grouping on the basic estimate (``tau_wiener``, ``group_wiener``); the noisy group's
   coefficients are shrunk by W = B^2 / (B^2 + sigma^2), B the basic estimate's, weights 1 / sum(W^2 sigma^2).

Colour images go through the orthonormal opponent transform (luma, two colour differences) before and back after.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

OPPONENT = np.array([[1, 1, 1], [1, 0, -1], [1, -2, 1]], dtype=np.float64) / \
    np.sqrt([[3.0], [2.0], [6.0]])          # orthonormal: white i.i.d. noise keeps its std in every channel


@functools.lru_cache(maxsize=8)
def dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix (n, n): row u is the u-th basis vector."""
    k = np.arange(n)
    m = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


@functools.lru_cache(maxsize=8)
def dct2_matrix(n: int) -> np.ndarray:
    """(n*n, n*n) orthonormal 2-D DCT of a row-major n x n patch: row (u, v) is the basis d_u d_v^T."""
    return np.kron(dct_matrix(n), dct_matrix(n))


@functools.lru_cache(maxsize=8)
def haar_matrix(n: int) -> np.ndarray:
    """Orthonormal Haar matrix (n, n) for n a power of 2 (row 0: the mean)."""
    if n == 1:
        return np.ones((1, 1))
    h = haar_matrix(n // 2)
    return np.concatenate([np.kron(h, [1, 1]), np.kron(np.eye(n // 2), [1, -1])]) / np.sqrt(2.0)


def patch_noise_std(gamma: dict, patch: int = 8) -> np.ndarray:
    """(patch, patch) noise std of each 2-D DCT coefficient of a patch, for stationary noise of autocovariance
    ``gamma`` {(dx, dy): value} (a half-plane of lags, 0 beyond): var(u, v) = d_uv^T Sigma d_uv."""
    ys, xs = np.meshgrid(np.arange(patch), np.arange(patch), indexing="ij")
    dy = ys.ravel()[:, None] - ys.ravel()[None, :]
    dx = xs.ravel()[:, None] - xs.ravel()[None, :]
    cov = np.zeros((patch * patch, patch * patch))
    for (lx, ly), value in gamma.items():
        cov[(dx == lx) & (dy == ly)] = value
        cov[(dx == -lx) & (dy == -ly)] = value
    basis = dct2_matrix(patch)                                    # (P*P, P*P): rows are the 2-D DCT bases
    var = np.einsum("fi,ij,fj->f", basis, cov, basis)
    return np.sqrt(np.maximum(var, 0)).reshape(patch, patch)


def _kaiser(patch: int, beta: float = 2.0) -> torch.Tensor:
    w = np.kaiser(patch, beta)
    return torch.from_numpy(np.outer(w, w).ravel())


def _pad_to_grid(x: torch.Tensor, patch: int, step: int) -> torch.Tensor:
    """Reflect-pad the bottom and right so that patches on a ``step`` grid end exactly at the border."""
    h, w = x.shape[-2:]
    ph = (-(h - patch)) % step if h > patch else patch - h
    pw = (-(w - patch)) % step if w > patch else patch - w
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x


def match_blocks(guide: torch.Tensor, patch: int, step: int, radius: int, group: int,
                 chunk: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """For each reference patch on the ``step`` grid of a (H, W) ``guide`` ((H - patch) divisible by ``step``):
    the ``group`` nearest patches within ``radius`` by mean squared distance. Returns (distances (R, group),
    flat positions into the (H - patch + 1) x (W - patch + 1) grid of patch corners (R, group)), nearest first;
    the reference itself comes first."""
    h, w = guide.shape
    gh, gw = h - patch + 1, w - patch + 1
    rows = torch.arange(0, gh, step, device=guide.device)
    cols = torch.arange(0, gw, step, device=guide.device)
    padded = F.pad(guide[None, None], (radius,) * 4, mode="replicate")[0, 0]
    offsets = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]
    n_ref = len(rows) * len(cols)
    best = torch.full((0, n_ref), math.inf, device=guide.device)                    # (K, R): candidates first
    best_idx = torch.zeros((0, n_ref), dtype=torch.long, device=guide.device)
    ry, rx = rows[:, None].expand(-1, len(cols)).reshape(-1), cols[None, :].expand(len(rows), -1).reshape(-1)
    for start in range(0, len(offsets), chunk):
        part = offsets[start:start + chunk]
        shifted = torch.stack([padded[radius + dy:radius + dy + h, radius + dx:radius + dx + w] for dy, dx in part])
        d2 = (shifted - guide).square_()[:, None]                                        # (m, 1, H, W)
        d2 = F.avg_pool2d(d2, (patch, 1), stride=(step, 1))
        d2 = F.avg_pool2d(d2, (1, patch), stride=(1, step)).reshape(len(part), -1)     # (m, R)
        dy = torch.tensor([o[0] for o in part], device=guide.device)[:, None]
        dx = torch.tensor([o[1] for o in part], device=guide.device)[:, None]
        ty, tx = ry + dy, rx + dx                                                         # (m, R)
        inside = (ty >= 0) & (ty < gh) & (tx >= 0) & (tx < gw)
        d2 = d2.masked_fill_(~inside, math.inf).masked_fill_((dy == 0) & (dx == 0), -1.0)   # the reference first
        d2, idx = torch.cat([best, d2]), torch.cat([best_idx, ty.clamp(0, gh - 1) * gw + tx.clamp(0, gw - 1)])
        best, order = d2.topk(min(group, d2.shape[0]), dim=0, largest=False)
        best_idx = idx.gather(0, order)
    best, best_idx = best.T.contiguous(), best_idx.T.contiguous()
    return best.clamp_min(0), best_idx


def _group_sizes(distances: torch.Tensor, tau: float) -> torch.Tensor:
    """Per reference: the largest power of 2 not above the number of matches with distance <= tau."""
    count = (distances <= tau).sum(1).clamp_min(1)
    return 2 ** torch.floor(torch.log2(count.double())).long()


def _collaborative(noisy_t: torch.Tensor, basic_t: torch.Tensor | None, positions: torch.Tensor,
                   sizes: torch.Tensor, sigma: torch.Tensor, lam: float, window: torch.Tensor,
                   idct: torch.Tensor, mu2: float = 1.0, chunk: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """Filter the groups and accumulate their weighted, windowed estimates per patch corner.

    noisy_t / basic_t: (L, C, P*P) 2-D DCT of every patch (rows: patch corners); positions (R, K); sizes (R,);
    sigma (C, P*P). Hard thresholding when ``basic_t`` is None, else Wiener.
    Returns (numerator (L, C, P*P) in pixels, weights (L, C))."""
    n_pos, c, pp = noisy_t.shape
    numerator = torch.zeros_like(noisy_t)
    weights = torch.zeros((n_pos, c), dtype=noisy_t.dtype, device=noisy_t.device)
    var = sigma.square().clamp_min(1e-12)                                              # (C, P*P)
    threshold = lam * var.sqrt()
    for n in sizes.unique().tolist():
        haar = torch.from_numpy(haar_matrix(n)).to(noisy_t)
        refs = torch.nonzero(sizes == n).squeeze(1)
        step = max(1, chunk // n)
        for start in range(0, len(refs), step):
            pos = positions[refs[start:start + step], :n]                                  # (r, n)
            group = torch.einsum("kn,rncf->rkcf", haar, noisy_t[pos])                    # (r, n, C, P*P)
            if basic_t is None:
                keep = group.abs() >= threshold
                keep[:, 0, :, 0] = True                                                   # the group's DC
                group = group * keep
                weight = 1.0 / (keep * var).sum(dim=(1, 3)).clamp_min(1e-12)             # (r, C)
            else:
                b2 = torch.einsum("kn,rncf->rkcf", haar, basic_t[pos]).square_()
                shrink = b2.div_(b2 + mu2 * var)
                group = group * shrink
                weight = 1.0 / (shrink.square_() * var).sum(dim=(1, 3)).clamp_min(1e-12)
            est = torch.einsum("kn,rkcf->rncf", haar, group)                             # (r, n, C, P*P)
            pixels = (est @ idct) * window                                                # DCT -> pixels, windowed
            pixels = pixels * weight[:, None, :, None]
            flat = pos.reshape(-1)
            numerator.index_add_(0, flat, pixels.reshape(-1, c, pp))
            weights.index_add_(0, flat, weight[:, None, :].expand(-1, n, -1).reshape(-1, c))
    return numerator, weights


def _aggregate(numerator: torch.Tensor, weights: torch.Tensor, window: torch.Tensor, size: tuple,
               patch: int) -> torch.Tensor:
    """(C, H, W): the windowed patch estimates summed over the image, divided by the summed weights."""
    num = F.fold(numerator.permute(1, 2, 0), size, patch)                                # (C, 1, H, W)
    den = F.fold(window[None, :, None] * weights.T[:, None, :], size, patch)
    return (num / den.clamp_min(1e-12))[:, 0]


def _patch_dct(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(C, H, W) -> (L, C, P*P): the 2-D DCT of every P x P patch (L = (H-P+1)(W-P+1) corners, row-major)."""
    d = torch.from_numpy(dct2_matrix(patch)).to(x)                                  # (P*P, P*P)
    return F.conv2d(x[:, None], d.reshape(-1, 1, patch, patch)).flatten(2).permute(2, 0, 1).contiguous()


@torch.no_grad()
def bm3d(x: torch.Tensor, sigma: torch.Tensor | np.ndarray | float, patch: int = 8, step: int = 3,
         radius: int = 12, group: int = 16, group_wiener: int = 32, lam: float = 2.7, tau_hard: float = 0.04,
         tau_wiener: float = 0.006, mu2: float = 1.0, wiener: bool = True,
         colour_transform: bool = True) -> torch.Tensor:
    """BM3D of one image (C, H, W) in [0, 1] (C = 1 or 3). ``sigma``: the noise std ([0, 1] units) per channel
    of the filter's colour space (the opponent space for 3 channels) and DCT coefficient, (C, P, P) or (C,) or
    a number (white noise). ``tau_*``: grouping thresholds on the mean squared patch distance. Returns the
    estimate (C, H, W), not clamped."""
    if x.dim() != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"bm3d: expected a (C, H, W) image with C = 1 or 3, got {tuple(x.shape)}")
    c, h, w = x.shape
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    sigma = torch.as_tensor(np.asarray(sigma, dtype=np.float64)).to(x.device, dtype)
    sigma = sigma.reshape(-1, 1, 1) if sigma.dim() <= 1 else sigma
    sigma = sigma.expand(c, patch, patch).reshape(c, patch * patch)
    colour = torch.from_numpy(OPPONENT).to(x.device, dtype) if (colour_transform and c == 3) else None
    y = x.to(dtype)
    if colour is not None:
        y = torch.einsum("dc,chw->dhw", colour, y)
    y = _pad_to_grid(y, patch, step)
    size = tuple(y.shape[-2:])
    window = _kaiser(patch).to(y)
    idct = torch.from_numpy(dct2_matrix(patch)).to(y)                               # rows: bases (f, p)
    noisy_t = _patch_dct(y, patch)

    dist, pos = match_blocks(y[0].float(), patch, step, radius, group)
    num, wts = _collaborative(noisy_t, None, pos, _group_sizes(dist, tau_hard), sigma, lam, window, idct)
    est = _aggregate(num, wts, window, size, patch)
    if wiener:
        dist, pos = match_blocks(est[0].float(), patch, step, radius, group_wiener)
        num, wts = _collaborative(noisy_t, _patch_dct(est, patch), pos, _group_sizes(dist, tau_wiener), sigma,
                                  lam, window, idct, mu2)
        est = _aggregate(num, wts, window, size, patch)
    est = est[:, :h, :w]
    if colour is not None:
        est = torch.einsum("dc,dhw->chw", colour, est)                 # orthonormal: the inverse is the transpose
    return est.to(x.dtype)
