"""Detail recharge: give back the part of the noisy input that a blind-spot denoiser removed but was not noise.

A blind-spot estimate D (AMSNet's multi-mask output, a BSN) never sees the noise n at its own pixel, so its
residual r = I_N - D = n + (x - D) has local energy v = E[r^2] ~ s2 + e2: the noise variance s2 plus D's own
error e2, which is large where D has to interpolate texture from neighbours (light noise on detailed photos).
The least-squares combination of the two estimates I_N (error s2) and D (error e2) is the local Wiener blend

    I_R = D + w (I_N - D),   w = e2 / (e2 + s2) = max(0, 1 - s2 / v)                                   (LMMSE)

v is the mean of r^2 over a ``window`` x ``window`` neighbourhood and the channels. s2 is the noise floor of v:
its ``quantile`` over the image, because in the flattest windows D is accurate and v is (nearly) the noise
alone. Everything is measured on the image itself: no clean image, no noise model, no user setting. Where D
is good (flat areas, heavy noise) w ~ 0 and I_R = D; where D erased texture, w ~ 1 and the photo comes back.

With spatially correlated noise D picks up part of n from its neighbours, so v = s2 + e2 - 2 cov(n, D - x);
the floor is then measured on exactly that combination, which is the right one for the blend.
Scores with and without it on CC15, PolyU and the synthetic demo: docs/results.md ("Benchmark: photos_cc15",
"photos_polyu30", "photos_synthetic").
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_FLOOR_SAMPLES = 1 << 18   # torch.quantile's input limit is 2^24; a strided subsample is plenty


def local_residual_energy(noisy: torch.Tensor, denoised: torch.Tensor, window: int = 9) -> torch.Tensor:
    """v: mean of (I_N - D)^2 over the channels and a window x window box (reflect padded), (B, 1, H, W)."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"recharge window must be an odd int >= 1, got {window!r}")
    energy = (noisy - denoised).square().mean(1, keepdim=True)
    pad = min(window // 2, energy.shape[-2] - 1, energy.shape[-1] - 1)
    if pad < window // 2:      # tiny image: the box shrinks to what reflect padding allows
        window = 2 * pad + 1
    padded = F.pad(energy, (pad,) * 4, mode="reflect") if pad else energy
    return F.avg_pool2d(padded, window, stride=1)


def noise_floor(energy: torch.Tensor, quantile: float = 0.05) -> torch.Tensor:
    """s2 per image: the ``quantile`` of the local residual energy (B, 1, H, W) -> (B, 1, 1, 1)."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"recharge quantile must be in (0, 1), got {quantile!r}")
    flat = energy.flatten(1)
    step = max(1, flat.shape[1] // _FLOOR_SAMPLES)
    return torch.quantile(flat[:, ::step].float(), quantile, dim=1).to(energy.dtype).view(-1, 1, 1, 1)


def detail_recharge(noisy: torch.Tensor, denoised: torch.Tensor, window: int = 9,
                    quantile: float = 0.05) -> torch.Tensor:
    """I_R = D + max(0, 1 - s2 / v) (I_N - D) (module docstring), (B, C, H, W) -> (B, C, H, W)."""
    energy = local_residual_energy(noisy, denoised, window)
    floor = noise_floor(energy, quantile)
    weight = (1 - floor / energy.clamp_min(torch.finfo(energy.dtype).tiny)).clamp(0, 1)
    return denoised + weight * (noisy - denoised)
