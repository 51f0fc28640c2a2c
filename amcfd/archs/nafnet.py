"""NAFNet (Chen et al., ECCV 2022) and the gate-free baseline AMSNet's configs use (``NAFNetBase``).

Both share one U-Net skeleton (intro conv, encoder levels with 2x2 stride-2 downsampling, middle
blocks, 1x1 conv + pixel-shuffle upsampling with additive skips, ending conv, global residual) and
the authors' ``state_dict`` keys (``intro``, ``encoders.i.j``, ``downs``, ``middle_blks``, ``ups``,
``decoders``, ``ending``). They differ only in the block:

- ``BaselineBlock`` (NAFNet paper Fig. 3c, AMSNet ``codes/arches/NAFNetBase.py``): GELU and a
  squeeze-excitation channel attention (avg-pool, 1x1, ReLU, 1x1, sigmoid);
- ``NAFBlock`` (Fig. 3d, the paper's network): SimpleGate (x1 * x2 over channel halves) instead of
  GELU, and simplified channel attention (avg-pool, 1x1, no nonlinearity).

Sizes: both zero-pad bottom/right to a multiple of 2^levels and crop back, exactly as the authors'
code (the NAFNetBase golden output for a 37x45 input depends on it).
"""
from __future__ import annotations

import itertools
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from amcfd.archs.common import LayerNorm2d, run_blocks
from amcfd.registry import ARCHS


class SimpleGate(nn.Module):
    """(B, 2C, H, W) -> (B, C, H, W): product of the two channel halves (NAFNet Eq. 2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return x1 * x2


class BaselineBlock(nn.Module):
    """LN -> 1x1 -> dw3x3 -> GELU -> SE -> 1x1, y = x + out*beta; then y + FFN(LN(y))*gamma (GELU FFN)."""

    def __init__(self, c: int, dw_expand: int = 1, ffn_expand: int = 2):
        super().__init__()
        dw = c * dw_expand
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.conv3 = nn.Conv2d(dw, c, 1)
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw, dw // 2, 1), nn.ReLU(inplace=True),
                                nn.Conv2d(dw // 2, dw, 1), nn.Sigmoid())
        self.gelu = nn.GELU()
        self.conv4 = nn.Conv2d(c, ffn_expand * c, 1)
        self.conv5 = nn.Conv2d(ffn_expand * c, c, 1)
        self.norm1 = LayerNorm2d(c)
        self.norm2 = LayerNorm2d(c)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = self.gelu(self.conv2(self.conv1(self.norm1(inp))))
        x = self.conv3(x * self.se(x))
        y = torch.addcmul(inp, x, self.beta)
        x = self.conv5(self.gelu(self.conv4(self.norm2(y))))
        return torch.addcmul(y, x, self.gamma)


class NAFBlock(nn.Module):
    """LN -> 1x1 -> dw3x3 -> SimpleGate -> SCA -> 1x1, y = x + out*beta; then y + FFN(LN(y))*gamma
    with a SimpleGate FFN. ``dw_expand``/``ffn_expand`` are the widths before the gate halves them."""

    def __init__(self, c: int, dw_expand: int = 2, ffn_expand: int = 2):
        super().__init__()
        dw, ffn = c * dw_expand, c * ffn_expand
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.conv3 = nn.Conv2d(dw // 2, c, 1)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))
        self.sg = SimpleGate()
        self.conv4 = nn.Conv2d(c, ffn, 1)
        self.conv5 = nn.Conv2d(ffn // 2, c, 1)
        self.norm1 = LayerNorm2d(c)
        self.norm2 = LayerNorm2d(c)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = self.sg(self.conv2(self.conv1(self.norm1(inp))))  # (B, dw/2, H, W)
        x = self.conv3(x * self.sca(x))
        y = torch.addcmul(inp, x, self.beta)
        x = self.conv5(self.sg(self.conv4(self.norm2(y))))
        return torch.addcmul(y, x, self.gamma)


class _NAFUNet(nn.Module):
    """The shared U-Net skeleton; ``make_block(channels)`` builds one block."""

    def __init__(self, img_channel: int, width: int, middle_blk_num: int, enc_blk_nums: Sequence[int],
                 dec_blk_nums: Sequence[int], make_block: Callable[[int], nn.Module], checkpointing: bool):
        super().__init__()
        if len(enc_blk_nums) != len(dec_blk_nums):
            raise ValueError(f"{type(self).__name__}: enc_blk_nums {list(enc_blk_nums)} and dec_blk_nums "
                             f"{list(dec_blk_nums)} must have the same length")
        self.checkpointing = checkpointing
        self.intro = nn.Conv2d(img_channel, width, 3, padding=1)
        self.ending = nn.Conv2d(width, img_channel, 3, padding=1)
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        chan = width
        for num in enc_blk_nums:
            self.encoders.append(nn.Sequential(*[make_block(chan) for _ in range(num)]))
            self.downs.append(nn.Conv2d(chan, 2 * chan, 2, 2))
            chan *= 2
        self.middle_blks = nn.Sequential(*[make_block(chan) for _ in range(middle_blk_num)])
        for num in dec_blk_nums:
            self.ups.append(nn.Sequential(nn.Conv2d(chan, chan * 2, 1, bias=False), nn.PixelShuffle(2)))
            chan //= 2
            self.decoders.append(nn.Sequential(*[make_block(chan) for _ in range(num)]))
        self.padder_size = 2 ** len(self.encoders)

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        h, w = inp.shape[-2:]
        pad_h, pad_w = (-h) % self.padder_size, (-w) % self.padder_size
        inp = F.pad(inp, (0, pad_w, 0, pad_h))  # zeros bottom/right, as the authors' check_image_size
        ckpt = self.checkpointing and self.training

        x = self.intro(inp)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            x = run_blocks(encoder, x, ckpt)
            skips.append(x)
            x = down(x)  # (B, 2C, H/2, W/2)
        x = run_blocks(self.middle_blks, x, ckpt)
        for decoder, up, skip in zip(self.decoders, self.ups, reversed(skips)):
            x = run_blocks(decoder, up(x) + skip, ckpt)  # (B, C/2, 2H, 2W)
        x = self.ending(x) + inp
        return x[..., :h, :w]


# A few-ms-per-step size for CPU demos and tests.
_SMALL = dict(width=8, enc_blk_nums=[1, 1, 1, 1], middle_blk_num=1, dec_blk_nums=[1, 1, 1, 1])


@ARCHS.register()
class NAFNetBase(_NAFUNet):
    """AMSNet's NAFNet baseline (``BaselineBlock``: GELU + squeeze-excitation, no SimpleGate).

    Presets: ``published`` = AMSNet configs/nafnet.yaml (width 32, enc [2,2,4,8], middle 12,
    dec [2,2,2,2]; 29,056,227 parameters); ``small`` for CPU demos.
    """

    PRESETS = {
        "published": dict(img_channel=3, width=32, enc_blk_nums=[2, 2, 4, 8], middle_blk_num=12,
                          dec_blk_nums=[2, 2, 2, 2], dw_expand=1, ffn_expand=2),
        "small": _SMALL,
    }

    def __init__(self, img_channel: int = 3, width: int = 16, middle_blk_num: int = 1,
                 enc_blk_nums: Sequence[int] = (), dec_blk_nums: Sequence[int] = (), dw_expand: int = 1,
                 ffn_expand: int = 2, checkpointing: bool = False):
        super().__init__(img_channel, width, middle_blk_num, enc_blk_nums, dec_blk_nums,
                         lambda c: BaselineBlock(c, dw_expand, ffn_expand), checkpointing)


# The NAFNet repository's options/test/SIDD/NAFNet-width{32,64}.yml (width aside).
_NAFNET_SIDD = dict(img_channel=3, enc_blk_nums=[2, 2, 4, 8], middle_blk_num=12, dec_blk_nums=[2, 2, 2, 2])


@ARCHS.register()
class NAFNet(_NAFUNet):
    """The NAFNet paper's network (``NAFBlock``: SimpleGate + simplified channel attention).

    Arguments are the NAFNet repository's (img_channel, width, middle_blk_num, enc_blk_nums,
    dec_blk_nums); ``dw_expand``/``ffn_expand`` (default 2, the repository's NAFBlock) are exposed too.
    Presets, from the NAFNet repository's SIDD options (enc [2,2,4,8], middle 12, dec [2,2,2,2]):
    ``sidd_width32`` (= ``published``; 29,159,715 parameters with this code) and ``sidd_width64``
    (115,982,915 parameters); ``small`` for CPU demos. Students of AM-CFD (sizes below, 1x3x256x256):
    ``amcfd_student`` (width 32, enc [2,2,2,5], middle 8, dec [2,2,2,2]; 20,112,675 parameters,
    12.38 GMACs: a reduced SIDD-width-32 NAFNet matching the paper's 20.2M / 12.46 "GFLOPs" within 1%;
    the paper does not publish its configuration) and ``cpu_student`` (width 8, enc [0,1,1,1],
    middle 1, dec [1,1,1,0]; 289,291 parameters, 0.29 GMACs: ``small`` without its two
    full-resolution blocks, faster on CPU). ``nafnet_cost`` gives both numbers exactly.
    """

    PRESETS = {
        "published": dict(width=32, **_NAFNET_SIDD),
        "sidd_width32": dict(width=32, **_NAFNET_SIDD),
        "sidd_width64": dict(width=64, **_NAFNET_SIDD),
        "small": _SMALL,
        # AM-CFD's NAFNet student: the paper gives its size (20.2M parameters, 12.46 GMACs at 256x256), not its
        # configuration; this one matches both within 1% (``nafnet_cost``), as many others would.
        "amcfd_student": dict(img_channel=3, width=32, enc_blk_nums=[2, 2, 2, 5], middle_blk_num=8,
                              dec_blk_nums=[2, 2, 2, 2]),
        # A fast CPU student: ``small`` without its two full-resolution blocks, which cost far more CPU time
        # than their share of MACs (memory-bound norms and element-wise ops). Times: docs/results.md, "Speed:
        # AMSNet teacher vs single-pass student (cpu pair)".
        "cpu_student": dict(img_channel=3, width=8, enc_blk_nums=[0, 1, 1, 1], middle_blk_num=1,
                            dec_blk_nums=[1, 1, 1, 0]),
    }

    def __init__(self, img_channel: int = 3, width: int = 16, middle_blk_num: int = 1,
                 enc_blk_nums: Sequence[int] = (), dec_blk_nums: Sequence[int] = (), dw_expand: int = 2,
                 ffn_expand: int = 2, checkpointing: bool = False):
        super().__init__(img_channel, width, middle_blk_num, enc_blk_nums, dec_blk_nums,
                         lambda c: NAFBlock(c, dw_expand, ffn_expand), checkpointing)


def nafnet_cost(width: int, enc_blk_nums: Sequence[int], middle_blk_num: int, dec_blk_nums: Sequence[int],
                dw_expand: int = 2, ffn_expand: int = 2, img_channel: int = 3, size: int = 256) -> tuple[int, int]:
    """(parameters, MACs) of ``NAFNet`` for one size x size image, in closed form.

    Equal to the parameter count and to FlopCounterMode's total / 2 (convolutions only, as
    amcfd/analysis/cost.py counts) for sizes divisible by 2^levels; tests/test_students.py checks it.
    """
    hw, c = size * size, width

    def block(c: int, hw: int) -> tuple[int, int]:
        dw, ffn = c * dw_expand, c * ffn_expand
        convs = [(c, dw, 1), (dw // 2, c, 1), (c, ffn, 1), (ffn // 2, c, 1)]  # (in, out, kernel) 1x1s
        params = sum(i * o + o for i, o, _ in convs) + 10 * dw + (dw // 2) ** 2 + dw // 2 + 6 * c
        macs = hw * (sum(i * o for i, o, _ in convs) + 9 * dw) + (dw // 2) ** 2  # + SCA on the pooled vector
        return params, macs

    params = 2 * (9 * img_channel * width) + width + img_channel        # intro, ending
    macs = 2 * 9 * img_channel * width * hw

    def add(p: int, m: int) -> None:
        nonlocal params, macs
        params, macs = params + p, macs + m

    for num in enc_blk_nums:
        for _ in range(num):
            add(*block(c, hw))
        add(8 * c * c + 2 * c, 2 * c * c * hw)                           # 2x2 stride-2 conv c -> 2c
        c, hw = 2 * c, hw // 4
    for _ in range(middle_blk_num):
        add(*block(c, hw))
    for num in dec_blk_nums:
        add(2 * c * c, 2 * c * c * hw)                                   # 1x1 c -> 2c, no bias
        c, hw = c // 2, hw * 4
        for _ in range(num):
            add(*block(c, hw))
    return params, macs


def search_nafnet_configs(params: float, macs: float, widths: Sequence[int] = (32,), max_blocks: int = 12,
                          max_middle: int = 28, dec_options: Sequence[Sequence[int]] = ((2, 2, 2, 2), (1, 1, 1, 1)),
                          tolerance: float = 0.05, size: int = 256) -> list[tuple[float, dict, int, int]]:
    """4-level NAFNet configurations within ``tolerance`` of both ``params`` and ``macs``, best first.

    Searched: each width, non-decreasing enc_blk_nums (0..max_blocks), middle 0..max_middle, the
    decoders in ``dec_options``. Returns (worst relative error, config, params, MACs) tuples.
    ``search_nafnet_configs(20.226e6, 12.46e9)`` is how ``amcfd_student`` was picked (see its comment).
    """
    found = []
    for width in widths:
        for enc in itertools.combinations_with_replacement(range(max_blocks + 1), 4):  # sorted tuples
            for middle in range(max_middle + 1):
                for dec in dec_options:
                    p, m = nafnet_cost(width, enc, middle, dec, size=size)
                    err = max(abs(p / params - 1), abs(m / macs - 1))
                    if err <= tolerance:
                        cfg = dict(width=width, enc_blk_nums=list(enc), middle_blk_num=middle, dec_blk_nums=list(dec))
                        found.append((err, cfg, p, m))
    return sorted(found, key=lambda r: r[0])
