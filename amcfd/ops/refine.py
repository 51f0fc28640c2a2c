"""Random-replacement refinement R^3 (AP-BSN; AMSNet's "-E" variants).

Start from a denoised image D; make T copies in which a random fraction p of the pixels is
replaced by the noisy input's values; denoise every copy at full resolution; average.
All T copies go through ``denoise_fn`` together (in chunks of at most ``chunk`` images),
never as a Python loop of single forwards.

* AMSNet: per-pixel replacement (shared across RGB), the multi-mask pipeline at stride 1
  with fresh masks, no padding.
* AP-BSN: per-element replacement, reflect-pad 2 around the blind-spot network.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from amcfd.ops.batching import run_in_chunks

REPLACE_MODES = ("pixel", "element")


def replacement_masks(shape, copies: int = 8, ratio: float = 0.16, mode: str = "pixel",
                      generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Bool (T, B, 1|C, H, W), True where the noisy value replaces the denoised one.

    One ``rand(B, 1|C, H, W) < ratio`` draw per copy, in copy order (for B = 1 this is the
    authors' draw sequence, so a seeded run reproduces their random stream).
    """
    if mode not in REPLACE_MODES:
        raise ValueError(f"R3 replacement mode must be one of {REPLACE_MODES}, got {mode!r}")
    if not isinstance(copies, int) or copies < 1:
        raise ValueError(f"R3 needs a positive int number of copies, got {copies!r}")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"R3 replacement ratio must be in [0, 1], got {ratio!r}")
    b, c, h, w = (int(v) for v in shape)
    size = (b, 1 if mode == "pixel" else c, h, w)
    draws = [torch.rand(size, generator=generator, device=device) < ratio for _ in range(copies)]
    return torch.stack(draws)                                           # (T, B, 1|C, H, W)


def random_replacement_refine(denoised: torch.Tensor, noisy: torch.Tensor,
                              denoise_fn: Callable[[torch.Tensor], torch.Tensor],
                              copies: int = 8, ratio: float = 0.16, mode: str = "pixel",
                              replace_masks: torch.Tensor | None = None, chunk: int | None = None,
                              pad: int = 0, pad_mode: str = "reflect",
                              generator: torch.Generator | None = None) -> torch.Tensor:
    """R^3: mean over T copies of ``denoise_fn(where(mask_t, noisy, denoised))`` (B, C, H, W).

    ``replace_masks``: optional bool (T, B, 1|C, H, W), or (T, 1|C, H, W) for B = 1 (the
    authors' stored layout); drawn with ``replacement_masks`` when not given.
    ``denoise_fn`` receives (n, C, H+2*pad, W+2*pad) images, copy-major (copy t of image b is
    at index t*B + b), in chunks of at most ``chunk`` images, in order.
    """
    if denoised.shape != noisy.shape or denoised.dim() != 4:
        raise ValueError(f"R3 needs denoised and noisy of the same (B, C, H, W) shape, got "
                         f"{tuple(denoised.shape)} and {tuple(noisy.shape)}")
    b, c, h, w = noisy.shape
    if replace_masks is None:
        replace_masks = replacement_masks(noisy.shape, copies, ratio, mode, generator, noisy.device)
    elif replace_masks.dim() == 4 and b == 1:
        replace_masks = replace_masks.unsqueeze(1)                      # (T, 1, 1|C, H, W)
    if replace_masks.dim() != 5 or replace_masks.shape[1] != b or replace_masks.shape[-2:] != (h, w) \
            or replace_masks.shape[2] not in (1, c):
        raise ValueError(f"R3 replace_masks of shape {tuple(replace_masks.shape)} do not fit images "
                         f"of shape {tuple(noisy.shape)}; expected (T, {b}, 1|{c}, {h}, {w})")
    copies = replace_masks.shape[0]
    mixed = torch.where(replace_masks.to(noisy.device, torch.bool), noisy.unsqueeze(0),
                        denoised.unsqueeze(0))                          # (T, B, C, H, W)
    batch = mixed.reshape(copies * b, c, h, w)
    if pad:
        batch = F.pad(batch, (pad, pad, pad, pad), mode="constant" if pad_mode == "zero" else pad_mode)
    out = run_in_chunks(denoise_fn, batch, chunk)
    if pad:
        out = out[..., pad:pad + h, pad:pad + w]
    return out.reshape(copies, b, c, h, w).mean(0)                      # (B, C, H, W)
