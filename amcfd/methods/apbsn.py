"""AP-BSN (Lee et al., CVPR 2022) and AM-BSN: asymmetric pixel-shuffle downsampling around a blind-spot net.

Training: P_a (a = 5) in the mosaic layout (every sub-image zero-padded by ``pd_pad`` = 2, tiled into
one image), the blind-spot network on the whole mosaic, P_a^-1, L1 to the noisy input.
Inference: pad bottom/right to a multiple of b (zeros, as the authors), P_b (b = 2), BSN, P_b^-1;
then R^3: T = 8 copies in which a fraction p = 0.16 of the elements (per channel) is replaced by the
noisy values, each reflect-padded by ``pd_pad``, the BSN at full resolution (no PD), cropped, mean.
AM-BSN's wrapper blends 0.8 * (P_2 path) + 0.2 * (P_5 path) before R^3 ("TTA").

Value range: the authors' networks see images in [0, 255]; ours are in [0, 1]. The input is multiplied
by ``value_range`` before the network and the output divided by it, so imported weights give the
authors' outputs (``value_range: 1`` for networks trained on [0, 1]).

Differences to the authors' code (documented, not silent):
  * Their R^3 output is not cropped back for sizes not divisible by b (37x45 -> 38x46); here R^3 runs on
    the same padded image (so the values agree) and the result is cropped to the input size.
  * Their TTA raises on odd sizes; here the P_2 path is padded and cropped like the P_5 path. On even
    sizes this is exactly their computation.
  * Training crops not divisible by a are cut at the bottom/right (the authors require divisible crops).

The pipeline pieces are module functions taking optional R^3 replacement masks, so the authors' stored
random draws can be injected (tests/test_apbsn_methods.py); masks are random only when not given.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from amcfd.losses.basic import l1
from amcfd.methods.amsnet import _is_int, _require, crop_to_multiple
from amcfd.methods.base import Method
from amcfd.ops.batching import resolve_chunk
from amcfd.ops.pd import PAD_MODES, pad_to_multiple, pd_mosaic_down, pd_mosaic_up
from amcfd.ops.refine import random_replacement_refine
from amcfd.registry import METHODS


def bsn_pd_forward(bsn: nn.Module, x: torch.Tensor, stride: int = 5, pad: int = 2) -> torch.Tensor:
    """The authors' ``APBSN.forward(img, pd)``: mosaic P_s with ``pad``, BSN, inverse (B, C, H, W).

    H and W must be multiples of ``stride``. Stride 1: zero-pad by ``pad``, BSN, crop.
    """
    if stride > 1:
        return pd_mosaic_up(bsn(pd_mosaic_down(x, stride, pad)), stride, pad)
    if pad:
        h, w = x.shape[-2:]
        return bsn(F.pad(x, (pad, pad, pad, pad)))[..., pad:pad + h, pad:pad + w]
    return bsn(x)


def bsn_r3(bsn: nn.Module, denoised: torch.Tensor, noisy: torch.Tensor, copies: int = 8,
           ratio: float = 0.16, pad: int = 2, replace_masks: torch.Tensor | None = None,
           chunk_size: int | None = None) -> torch.Tensor:
    """AP-BSN's R^3: per-element replacement, reflect-pad ``pad``, BSN at full resolution, crop, mean.

    ``replace_masks``: optional bool (T, B, 1|C, H, W) (or (T, 1|C, H, W) for B = 1), True where the
    noisy value replaces the denoised one; drawn (``rand_like < ratio`` per copy, the authors' order)
    when None. ``chunk_size``: at most this many copies per BSN forward (None = automatic, 0 = all).
    """
    chunk = resolve_chunk(chunk_size, F.pad(noisy[:1], (pad, pad, pad, pad)) if pad else noisy[:1])
    return random_replacement_refine(denoised, noisy, bsn, copies, ratio, "element", replace_masks,
                                     chunk=chunk, pad=pad, pad_mode="reflect")


def bsn_denoise(bsn: nn.Module, x: torch.Tensor, strides: Sequence[int] = (2,),
                weights: Sequence[float] = (1.0,), pd_pad: int = 2, r3: bool = True, copies: int = 8,
                ratio: float = 0.16, replace_masks: torch.Tensor | None = None,
                pad_mode: str = "zero", chunk_size: int | None = None) -> torch.Tensor:
    """Inference in the network's value range, (B, C, H, W) -> (B, C, H, W).

    The image is padded (``pad_mode``, bottom/right) to a multiple of ``strides[0]``; every stride s runs
    ``bsn_pd_forward`` on that image padded further to a multiple of s and cropped back; the results are
    blended with ``weights`` (AP-BSN: one stride; AM-BSN TTA: (2, 5) with (0.8, 0.2)); R^3 (if ``r3``)
    runs on the padded image with the padded noisy input; the result is cropped to H x W.
    ``replace_masks`` must then have the padded size (T, B, 1|C, H', W').
    """
    if len(strides) != len(weights) or not strides:
        raise ValueError(f"bsn_denoise needs one weight per stride, got strides {list(strides)} and "
                         f"weights {list(weights)}")
    h, w = x.shape[-2:]
    xp = pad_to_multiple(x, strides[0], pad_mode)
    hp, wp = xp.shape[-2:]
    out = None
    for stride, weight in zip(strides, weights):
        part = bsn_pd_forward(bsn, pad_to_multiple(xp, stride, pad_mode), stride, pd_pad)[..., :hp, :wp]
        out = weight * part if out is None else out + weight * part
    if r3:
        out = bsn_r3(bsn, out, xp, copies, ratio, pd_pad, replace_masks, chunk_size)
    return out[..., :h, :w]


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@METHODS.register()
class APBSN(Method):
    """AP-BSN around a blind-spot network ``net`` (DBSNl; any net whose output pixel never sees its input).

    Options (defaults = the paper's / authors' APBSN_SIDD.yaml):
      pd_a: PD stride for training (5).   pd_b: PD stride for inference (2).
      pd_pad: zero padding around every PD sub-image, and the reflect padding of R^3 (2).
      r3: apply R^3 at inference (True).   r3_copies: T (8).   r3_ratio: p (0.16), replaced per element.
      value_range: the network's input scale: images are multiplied by it before the network and the
        output divided by it (255.0, the authors' [0, 255]; 1.0 for networks trained on [0, 1]).
      loss_in_value_range: the training L1 is taken in the network's range, as the authors' (True: their loss,
        gradients and Adam steps, which the scale changes through Adam's eps); False: on [0, 1], 1/value_range
        of theirs.
      pad_mode: padding of sizes not divisible by the strides ('zero', the authors' | 'reflect' | 'replicate').
      chunk_size: at most this many R^3 copies per network forward (None = automatic: all on GPU,
        ~128x128 pixels per forward on CPU; 0 = all).
    """

    def __init__(self, net: nn.Module, pd_a: int = 5, pd_b: int = 2, pd_pad: int = 2, r3: bool = True,
                 r3_copies: int = 8, r3_ratio: float = 0.16, value_range: float = 255.0,
                 pad_mode: str = "zero", chunk_size=None, loss_in_value_range: bool = True):
        super().__init__(net)
        for name, value in (("pd_a", pd_a), ("pd_b", pd_b), ("r3_copies", r3_copies)):
            _require(_is_int(value) and value >= 1, name, value, "an int >= 1")
        _require(_is_int(pd_pad) and pd_pad >= 0, "pd_pad", pd_pad, "an int >= 0")
        _require(isinstance(r3, bool), "r3", r3, "true or false")
        _require(_is_number(r3_ratio) and 0.0 <= r3_ratio <= 1.0, "r3_ratio", r3_ratio, "in [0, 1]")
        _require(_is_number(value_range) and value_range > 0, "value_range", value_range, "a number > 0")
        _require(pad_mode in PAD_MODES, "pad_mode", pad_mode, f"one of {PAD_MODES}")
        _require(isinstance(loss_in_value_range, bool), "loss_in_value_range", loss_in_value_range, "true or false")
        _require(chunk_size is None or (_is_int(chunk_size) and chunk_size >= 0), "chunk_size", chunk_size,
                 "null or an int >= 0")
        self.pd_a, self.pd_b, self.pd_pad = pd_a, pd_b, pd_pad
        self.r3, self.r3_copies, self.r3_ratio = r3, r3_copies, float(r3_ratio)
        self.value_range, self.pad_mode, self.chunk_size = float(value_range), pad_mode, chunk_size
        self.loss_in_value_range = loss_in_value_range

    # -- pieces (inputs and outputs in [0, 1]) ---------------------------------------------------
    def pd_forward(self, noisy: torch.Tensor, stride: int | None = None) -> torch.Tensor:
        """The authors' ``forward(img, pd)`` (default pd_a) in our range; H, W multiples of the stride."""
        stride = self.pd_a if stride is None else stride
        return bsn_pd_forward(self.net, noisy * self.value_range, stride, self.pd_pad) / self.value_range

    def inference_strides(self) -> tuple[tuple[int, ...], tuple[float, ...]]:
        """The PD strides of inference and their blend weights (AP-BSN: P_b alone)."""
        return (self.pd_b,), (1.0,)

    def denoise_with(self, noisy: torch.Tensor, r3: bool | None = None,
                     replace_masks: torch.Tensor | None = None) -> torch.Tensor:
        """``denoise`` with R^3 switched (None = the option) and optional R^3 replacement masks
        (T, B, 1|C, H', W') at the size padded to a multiple of the first inference stride."""
        strides, weights = self.inference_strides()
        out = bsn_denoise(self.net, noisy * self.value_range, strides, weights, self.pd_pad,
                          self.r3 if r3 is None else r3, self.r3_copies, self.r3_ratio, replace_masks,
                          self.pad_mode, self.chunk_size)
        return out / self.value_range

    # -- Method contract ------------------------------------------------------------------------
    def forward(self, batch: dict) -> dict:
        noisy = crop_to_multiple(batch["noisy"], self.pd_a)
        if self.loss_in_value_range:
            scaled = noisy * self.value_range
            return {"l_l1": l1(bsn_pd_forward(self.net, scaled, self.pd_a, self.pd_pad), scaled)}
        return {"l_l1": l1(self.pd_forward(noisy), noisy)}

    @torch.no_grad()
    def denoise(self, noisy: torch.Tensor) -> torch.Tensor:
        return self.denoise_with(noisy)


@METHODS.register()
class AMBSN(APBSN):
    """AM-BSN's wrapper: training as AP-BSN; inference blends P_2 and P_5 ("TTA") before R^3.

    Options: those of APBSN (same defaults) plus
      tta: blend several strides at inference (True, the authors' SIDD config); False = AP-BSN's P_b.
      tta_strides: the strides blended ([2, 5]).   tta_weights: their weights ([0.8, 0.2]).
    Each stride's input is zero-padded to a multiple of it and its output cropped back.
    """

    def __init__(self, net: nn.Module, pd_a: int = 5, pd_b: int = 2, pd_pad: int = 2, r3: bool = True,
                 r3_copies: int = 8, r3_ratio: float = 0.16, value_range: float = 255.0,
                 pad_mode: str = "zero", chunk_size=None, tta: bool = True,
                 tta_strides: Sequence[int] = (2, 5), tta_weights: Sequence[float] = (0.8, 0.2),
                 loss_in_value_range: bool = True):
        super().__init__(net, pd_a, pd_b, pd_pad, r3, r3_copies, r3_ratio, value_range, pad_mode, chunk_size,
                         loss_in_value_range)
        _require(isinstance(tta, bool), "tta", tta, "true or false")
        _require(isinstance(tta_strides, (list, tuple)) and len(tta_strides) >= 1
                 and all(_is_int(s) and s >= 1 for s in tta_strides), "tta_strides", tta_strides,
                 "a list of ints >= 1")
        _require(isinstance(tta_weights, (list, tuple)) and len(tta_weights) == len(tta_strides)
                 and all(_is_number(v) for v in tta_weights), "tta_weights", tta_weights,
                 f"a list of {len(tta_strides)} numbers (one per tta_strides entry)")
        self.tta, self.tta_strides = tta, tuple(tta_strides)
        self.tta_weights = tuple(float(v) for v in tta_weights)

    def inference_strides(self) -> tuple[tuple[int, ...], tuple[float, ...]]:
        return (self.tta_strides, self.tta_weights) if self.tta else super().inference_strides()
