"""AM-CFD's "non-flat find": a frozen operator mapping a (teacher-denoised) image to a texture map alpha.

alpha is near 1 on edges and texture and near 0 on flat areas; AM-CFD's coarse loss copies the bilateral-
filtered input where alpha is high and the teacher where it is low. The paper publishes no formula
(METHODS.md): this is a local-contrast measure with a soft threshold,

    luma -> g = |grad luma| (Sobel or central differences) or the local std -> max-pool dilation
         -> alpha = smoothstep((g - low) / (high - low)),  smoothstep(t) = 3t^2 - 2t^3 on t clamped to [0, 1].

Units: g is an intensity change per pixel of [0, 1] images. A step edge of height h gives h / 2 at the two
pixels beside it (both gradients; about 0.47 h for the std); i.i.d. noise of std s gives a Sobel magnitude
with Rayleigh scale 0.43 s (central differences: 0.71 s). Defaults ``low=0.02``, ``high=0.08``: residual
noise up to s ~ 0.005 (Sobel max ~0.012 over a megapixel) stays below ``low`` (alpha = 0), and any step of
height >= 0.16 (here: 0.2 -> g = 0.1) reaches alpha = 1.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

MEASURES = ("sobel", "central", "std")
LUMAS = ("mean", "rec601")
REC601 = (0.299, 0.587, 0.114)


def _luma(image: torch.Tensor, luma: str) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1, H, W): mean over channels, or Rec.601 weights for RGB."""
    if luma == "mean" or image.shape[1] == 1:
        return image.mean(dim=1, keepdim=True)
    if image.shape[1] != 3:
        raise ValueError(f"texture_map: luma='rec601' needs 1 or 3 channels, got {image.shape[1]}")
    weights = torch.tensor(REC601, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    return (image * weights).sum(dim=1, keepdim=True)


def local_contrast(y: torch.Tensor, measure: str = "sobel") -> torch.Tensor:
    """Per-pixel contrast of a (B, 1, H, W) luma in intensity per pixel, replicate borders (3x3 support)."""
    padded = F.pad(y, (1, 1, 1, 1), mode="replicate")                      # (B, 1, H+2, W+2)
    if measure == "std":
        mean = F.avg_pool2d(padded, 3, stride=1)
        mean_sq = F.avg_pool2d(padded * padded, 3, stride=1)
        return (mean_sq - mean * mean).clamp_min(0).sqrt()                  # (B, 1, H, W)
    if measure == "sobel":
        kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
    else:                                                                   # central differences
        kx = torch.tensor([[0.0, 0.0, 0.0], [-0.5, 0.0, 0.5], [0.0, 0.0, 0.0]])
    kernels = torch.stack([kx, kx.t()]).unsqueeze(1).to(y)                  # (2, 1, 3, 3): d/dx, d/dy
    grad = F.conv2d(padded, kernels)                                        # (B, 2, H, W)
    return grad.pow(2).sum(dim=1, keepdim=True).sqrt()                      # (B, 1, H, W)


@torch.no_grad()
def texture_map(image: torch.Tensor,
                measure: str = "sobel",   # "sobel" | "central" (gradient magnitude) | "std" (3x3 local std)
                luma: str = "mean",       # channels -> luma: "mean", or "rec601" weights (RGB only)
                radius: int = 1,          # max-pool dilation radius so alpha covers both sides of an edge; 0: none
                low: float = 0.02,        # contrast (per pixel, [0, 1] images) at and below which alpha = 0
                high: float = 0.08,       # contrast at and above which alpha = 1; smoothstep in between
                ) -> torch.Tensor:
    """Texture map alpha (B, 1, H, W) in [0, 1] of a (B, C, H, W) image in [0, 1] (AM-CFD "non-flat find").

    Frozen: no parameters, no gradient (runs under ``torch.no_grad``); same dtype and device as the image.
    """
    if not isinstance(image, torch.Tensor) or image.dim() != 4 or not image.is_floating_point():
        raise ValueError("texture_map expects a floating-point (B, C, H, W) tensor, got "
                         f"{tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__}")
    if measure not in MEASURES:
        raise ValueError(f"texture_map: measure must be one of {MEASURES}, got {measure!r}")
    if luma not in LUMAS:
        raise ValueError(f"texture_map: luma must be one of {LUMAS}, got {luma!r}")
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
        raise ValueError(f"texture_map: radius must be an int >= 0, got {radius!r}")
    if not 0 <= low < high:
        raise ValueError(f"texture_map: thresholds need 0 <= low < high, got low={low!r}, high={high!r}")
    contrast = local_contrast(_luma(image.detach(), luma), measure)        # (B, 1, H, W)
    if radius > 0:
        contrast = F.max_pool2d(contrast, 2 * radius + 1, stride=1, padding=radius)
    t = ((contrast - low) / (high - low)).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)                                          # smoothstep, (B, 1, H, W)
