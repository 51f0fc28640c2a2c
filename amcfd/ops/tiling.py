"""Whole-image denoising in overlapping tiles blended with linear ramps (bounded memory for big photos)."""
from __future__ import annotations

from typing import Callable

import torch

from amcfd.registry import ConfigError


def _blend_window(tile_h: int, tile_w: int, overlap: int, device) -> torch.Tensor:
    """Weights rising linearly over ``overlap`` pixels from each tile edge (never zero)."""

    def ramp(n: int) -> torch.Tensor:
        d = torch.arange(n, device=device, dtype=torch.float32)
        edge = torch.minimum(d, n - 1 - d) + 1
        return (edge / (overlap + 1)).clamp(max=1.0)  # overlap 0: all ones

    return ramp(tile_h)[:, None] * ramp(tile_w)[None, :]


def _starts(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


def tiled_denoise(denoise: Callable, x: torch.Tensor, tile: int = 0, overlap: int = 32,
                  tile_batch: int = 1) -> torch.Tensor:
    """Denoise (B,C,H,W) in overlapping tiles blended with linear ramps; whole image if tile <= 0.
    ``tile_batch`` tiles go through ``denoise`` together (stacked on the batch).

    Memory: the input, the output and an HxW weight map, plus the forward of ``tile_batch`` tiles (no autograd
    graph), however many tiles (scripts/bench_tiled_memory.py measures it). More than 8 tiles: a progress bar
    on stderr (on a terminal only; removed when done)."""
    from amcfd.progress import progress_bar

    _, _, h, w = x.shape
    if tile <= 0 or (h <= tile and w <= tile):
        return denoise(x)
    if overlap >= tile:
        raise ConfigError(f"tile_overlap ({overlap}) must be smaller than tile ({tile})")
    th, tw = min(tile, h), min(tile, w)
    stride = tile - overlap
    out = torch.zeros_like(x)
    weight = torch.zeros((1, 1, h, w), device=x.device, dtype=x.dtype)
    window = _blend_window(th, tw, overlap, x.device).to(x.dtype)
    corners = [(top, left) for top in _starts(h, th, stride) for left in _starts(w, tw, stride)]
    groups = [corners[i:i + max(1, tile_batch)] for i in range(0, len(corners), max(1, tile_batch))]
    with progress_bar(total=len(corners), desc="tiles", unit="tile", leave=False,
              disable=True if len(corners) <= 8 else None) as bar:
        for group in groups:
            patches = denoise(torch.cat([x[..., top:top + th, left:left + tw] for top, left in group]))
            for (top, left), patch in zip(group, patches.split(x.shape[0])):
                out[..., top:top + th, left:left + tw].addcmul_(patch, window)
                weight[..., top:top + th, left:left + tw] += window
            bar.update(len(group))
    return out.div_(weight)
