"""Pixel replacement of APR-RD (Kim & Cho, AAAI 2025): the adjacent pixel replacer (APR) and the recharge.

APR: every pixel p gets one ordered pair (o1, o2) of distinct offsets in its size x size window, drawn
uniformly (72 pairs for 3x3), shared over channels; h_o(y)[p] = y[p + o], coordinates clamped to the image.
Recharge: of K distillation targets, one is drawn per pixel and its value there becomes the noisy one.
"""
from __future__ import annotations

from itertools import product

import torch


def window_pairs(size: int = 3, device=None) -> torch.Tensor:
    """All ordered pairs of distinct offsets of a size x size window: int64 (P, 2, 2), pair = (o1, o2),
    offset = (dy, dx); P = size^2 (size^2 - 1). Enumerated as the authors' ``APR._generate_window``
    (nested dx1, dy1, dx2, dy2), so the same ``randint`` draw picks the same pair."""
    if not isinstance(size, int) or size < 3 or size % 2 == 0:
        raise ValueError(f"the APR window must be an odd int >= 3, got {size!r}")
    r = range(-(size // 2), size // 2 + 1)
    pairs = [((dy1, dx1), (dy2, dx2)) for dx1, dy1, dx2, dy2 in product(r, repeat=4) if (dx1, dy1) != (dx2, dy2)]
    return torch.tensor(pairs, dtype=torch.long, device=device)


def sample_pairs(shape, size: int = 3, generator: torch.Generator | None = None,
                 device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """One uniform pair per pixel for (B, C, H, W) ``shape``: offsets o1, o2, each int64 (B, H, W, 2) as (dy, dx)."""
    b, _, h, w = (int(v) for v in shape)
    pairs = window_pairs(size, device)
    chosen = pairs[torch.randint(0, len(pairs), (b, h, w), generator=generator, device=device)]  # (B, H, W, 2, 2)
    return chosen[..., 0, :], chosen[..., 1, :]


def replace_pixels(x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """h_o(x): (B, C, H, W) with every pixel replaced by its neighbour at ``offsets`` (B, H, W, 2) (dy, dx),
    the same for all channels; coordinates clamped to the border."""
    b, c, h, w = x.shape
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + offsets[..., 0]).clamp(0, h - 1)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + offsets[..., 1]).clamp(0, w - 1)
    index = (rows * w + cols).view(b, 1, h * w).expand(b, c, h * w)
    return x.reshape(b, c, h * w).gather(2, index).view(b, c, h, w)


def recharge(targets: torch.Tensor, noisy: torch.Tensor, choice: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """APR-RD's recharged targets (their ``Recharger``, percentage 1): targets (K, B, C, H, W), noisy (B, C, H, W).

    ``choice`` (B, H, W) in [0, K), uniform when None: target k takes the noisy value at the pixels where
    choice == k (all channels), so every pixel is recharged in exactly one target.
    """
    k, b, _, h, w = targets.shape
    if choice is None:
        choice = torch.randint(0, k, (b, h, w), generator=generator, device=noisy.device)
    picked = choice.unsqueeze(1).unsqueeze(0) == torch.arange(k, device=noisy.device).view(k, 1, 1, 1, 1)
    return torch.where(picked, noisy.unsqueeze(0), targets)                # (K, B, C, H, W)
