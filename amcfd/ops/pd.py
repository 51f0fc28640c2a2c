"""Pixel-shuffle downsampling P_s and its exact inverse, in the two layouts of the literature.

* batch-stacked (AMSNet): (B, C, H, W) -> (B*s*s, C, H/s, W/s); batch index ``b*s*s + i*s + j``
  holds ``x[b, :, i::s, j::s]`` (``pd_down`` / ``pd_up``).
* mosaic (AP-BSN): the s*s sub-images, each zero-padded by ``pad``, tiled into one image of
  (B, C, s*(H/s + 2*pad), s*(W/s + 2*pad)); tile (i, j) holds ``x[..., i::s, j::s]``
  (``pd_mosaic_down`` / ``pd_mosaic_up``).

Sizes not divisible by s: with ``pad_mode=None`` (the default, the authors' behaviour) the
functions raise; with ``pad_mode='reflect' | 'replicate' | 'zero'`` the image is padded at the
bottom/right to a multiple of s, and the inverse crops back when given ``size=(H, W)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

PAD_MODES = ("reflect", "replicate", "zero")


def _check_stride(s: int) -> int:
    if not isinstance(s, int) or isinstance(s, bool) or s < 1:
        raise ValueError(f"pixel-shuffle stride must be a positive int, got {s!r}")
    return s


def pad_to_multiple(x: torch.Tensor, s: int, pad_mode: str = "reflect") -> torch.Tensor:
    """Pad the last two dims at the bottom/right up to a multiple of ``s``.

    ``reflect`` falls back to ``replicate`` where the image is too small to mirror.
    """
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES} or None, got {pad_mode!r}")
    h, w = x.shape[-2:]
    ph, pw = (-h) % s, (-w) % s
    if ph == 0 and pw == 0:
        return x
    if pad_mode == "zero":
        return F.pad(x, (0, pw, 0, ph))
    mode = pad_mode if (pad_mode == "replicate" or (ph < h and pw < w)) else "replicate"
    squeeze = x.dim() == 3
    x4 = x.unsqueeze(0) if squeeze else x  # F.pad's reflect/replicate want a batch dim
    out = F.pad(x4, (0, pw, 0, ph), mode=mode)
    return out.squeeze(0) if squeeze else out


def _prepare(x: torch.Tensor, s: int, pad_mode: str | None, name: str) -> torch.Tensor:
    _check_stride(s)
    if x.dim() not in (3, 4):
        raise ValueError(f"{name} expects (B, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if pad_mode is None:
        if h % s or w % s:
            raise RuntimeError(f"{name}: image size {h}x{w} is not divisible by stride {s} "
                               f"(pass pad_mode='reflect' to pad and crop back)")
        return x
    return pad_to_multiple(x, s, pad_mode)


def _crop(x: torch.Tensor, size) -> torch.Tensor:
    if size is None:
        return x
    h, w = int(size[0]), int(size[1])
    if h > x.shape[-2] or w > x.shape[-1]:
        raise ValueError(f"crop size {h}x{w} is larger than the image {x.shape[-2]}x{x.shape[-1]}")
    return x[..., :h, :w]


def pd_down(x: torch.Tensor, s: int, pad_mode: str | None = None) -> torch.Tensor:
    """P_s, batch-stacked: (B, C, H, W) -> (B*s*s, C, H/s, W/s) (AMSNet layout)."""
    x = _prepare(x, s, pad_mode, "pd_down")
    if x.dim() == 3:
        return pd_down(x.unsqueeze(0), s)
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // s, s, w // s, s)                   # (B, C, h, i, w, j)
    x = x.permute(0, 3, 5, 1, 2, 4)                             # (B, i, j, C, h, w)
    return x.reshape(b * s * s, c, h // s, w // s)              # (B*s*s, C, H/s, W/s)


def pd_up(x: torch.Tensor, s: int, size=None) -> torch.Tensor:
    """P_s^-1, batch-stacked: (B*s*s, C, h, w) -> (B, C, h*s, w*s), cropped to ``size`` if given."""
    _check_stride(s)
    if x.dim() != 4 or x.shape[0] % (s * s):
        raise ValueError(f"pd_up expects (B*{s}*{s}, C, h, w), got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    b = n // (s * s)
    x = x.reshape(b, s, s, c, h, w).permute(0, 3, 4, 1, 5, 2)   # (B, C, h, i, w, j)
    return _crop(x.reshape(b, c, h * s, w * s), size)


def pd_mosaic_down(x: torch.Tensor, s: int, pad: int = 0, pad_mode: str | None = None) -> torch.Tensor:
    """P_s, mosaic: sub-image (i, j) zero-padded by ``pad`` sits at tile (i, j) (AP-BSN layout).

    (B, C, H, W) -> (B, C, s*(H/s + 2*pad), s*(W/s + 2*pad)); (C, H, W) inputs work too.
    """
    x = _prepare(x, s, pad_mode, "pd_mosaic_down")
    if x.dim() == 3:
        return pd_mosaic_down(x.unsqueeze(0), s, pad).squeeze(0)
    b, c, h, w = x.shape
    h, w = h // s, w // s
    sub = x.reshape(b, c, h, s, w, s).permute(0, 1, 3, 5, 2, 4)  # (B, C, i, j, h, w)
    if pad:
        sub = F.pad(sub, (pad, pad, pad, pad))                    # (B, C, i, j, h+2p, w+2p)
    hp, wp = h + 2 * pad, w + 2 * pad
    return sub.permute(0, 1, 2, 4, 3, 5).reshape(b, c, s * hp, s * wp)


def pd_mosaic_up(x: torch.Tensor, s: int, pad: int = 0, size=None) -> torch.Tensor:
    """P_s^-1, mosaic: drop each tile's padding and interleave back; crop to ``size`` if given."""
    _check_stride(s)
    if x.dim() == 3:
        return pd_mosaic_up(x.unsqueeze(0), s, pad, size).squeeze(0)
    if x.dim() != 4 or x.shape[-2] % s or x.shape[-1] % s:
        raise ValueError(f"pd_mosaic_up expects (B, C, H, W) with H, W divisible by {s}, "
                         f"got shape {tuple(x.shape)}")
    b, c, hs, ws = x.shape
    hp, wp = hs // s, ws // s
    h, w = hp - 2 * pad, wp - 2 * pad
    if h <= 0 or w <= 0:
        raise ValueError(f"pd_mosaic_up: tiles of {hp}x{wp} are too small for pad {pad}")
    tiles = x.reshape(b, c, s, hp, s, wp)[:, :, :, pad:pad + h, :, pad:pad + w]  # (B, C, i, h, j, w)
    out = tiles.permute(0, 1, 3, 2, 5, 4).reshape(b, c, h * s, w * s)          # (B, C, h, i, w, j)
    return _crop(out, size)
