"""AT-BSN (Chen et al., CVPR 2024; ``codes/models/modules/arch_atbsn.py`` in hnmizuho/AT-BSN) and its
distilled student ``N_BSN`` (``ATBSNStudent`` here). APR-RD (AAAI 2025) uses the same ``ATBSN`` class as
its teacher; ``ATBSN.forward_holes`` also gives APR-RD's six distillation targets (``Inf_T_elements``).

The U-Net (``unet``): an intro 3x3 conv, five levels of (3x3 conv, 2x2 max-pool), a 3x3 conv at 1/32,
then five decoder stages (nearest 2x upsampling, concatenate the skip, two 3x3 convs); the input itself
is the last skip. LeakyReLU 0.1 after every conv, the last one included; no residual.

Blind mode (``ATBSN``): the image and its 90/180/270 degree rotations are stacked on the batch; every
conv is shifted (zero-pad one row on top, conv, drop the last row) and every pool first shifts the map
down one row, so an output row sees only its own row and the rows above. A final shift of
``(h + 1) // 2`` rows, the rotations undone and concatenated on channels (8 * mid), and the 1x1 heads
nin_A, nin_B (LeakyReLU 0.1) and nin_C make the blind spot an h x h square (h = 0: none). The hole size
is chosen per call; the authors train with 9 and validate with 3.

State-dict keys are the authors' (``unet.intro.conv``, ``unet.enc1.conv1.conv``, ``unet.dec5.conv2.conv``,
``nin_A``...), so their plain state_dicts load strictly.

Sizes: the authors need square inputs with a side divisible by 32. Here ``ATBSN`` zero-pads bottom/right
to such a square (zeros never leak a pixel's value into its blind spot) and crops back; the student
reflect-pads bottom/right to multiples of 32. Inputs of the right size are computed exactly as theirs.

Value range: the networks are range-agnostic. AT-BSN's released weights expect [0, 255], APR-RD's [0, 1].
``value_range`` (default 1) multiplies the input by that factor and divides the output by it, so
AT-BSN weights applied to our [0, 1] images give the authors' outputs / 255.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from amcfd.archs.unet import _rotate, _shift_down
from amcfd.ops.pd import pad_to_multiple
from amcfd.registry import ARCHS, ConfigError

SIZE_MULTIPLE = 32  # five 2x poolings


class Conv(nn.Module):
    """3x3 conv (padding 1) + LeakyReLU 0.1; ``blind``: the output row sees only its row and those above."""

    def __init__(self, in_ch: int, out_ch: int, bias: bool = True, blind: bool = False):
        super().__init__()
        self.blind = blind
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.blind:  # one more zero row on top, the extra last output row dropped
            return F.leaky_relu(self.conv(F.pad(x, (0, 0, 1, 0)))[..., : x.shape[-2], :], 0.1)
        return F.leaky_relu(self.conv(x), 0.1)


def upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


class BlindUNet(nn.Module):
    """The authors' ``Blind_UNet`` (see the module docstring); ``n_output`` channels out."""

    def __init__(self, n_channels: int, mid_channels: int, n_output: int, bias: bool, blind: bool):
        super().__init__()
        m = mid_channels
        self.blind = blind
        self.intro = Conv(n_channels, m, bias, blind)
        for i in range(1, 7):
            self.add_module(f"enc{i}", nn.Sequential(OrderedDict(conv1=Conv(m, m, bias, blind))))
        for i in range(5, 0, -1):
            in_ch = 2 * m if i == 5 else 2 * m + n_channels if i == 1 else 3 * m
            out_ch = n_output if i == 1 else 2 * m
            self.add_module(f"dec{i}", nn.Sequential(OrderedDict(
                conv1=Conv(in_ch, 2 * m, bias, blind), conv2=Conv(2 * m, out_ch, bias, blind))))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = self.intro(inp)
        skips = [inp]
        for i in range(1, 6):  # 1/2 ... 1/32
            x = getattr(self, f"enc{i}")(x)
            x = F.max_pool2d(_shift_down(x) if self.blind else x, 2)
            skips.append(x)
        x = self.enc6(skips.pop())
        for i in range(5, 0, -1):
            x = getattr(self, f"dec{i}")(torch.cat([upsample(x), skips.pop()], dim=1))
        return x


def _check(mid_channels: int, value_range: float) -> None:
    if mid_channels < 1:
        raise ConfigError(f"mid_channels must be >= 1, got {mid_channels}")
    if value_range <= 0:
        raise ConfigError(f"value_range must be > 0, got {value_range}")


@ARCHS.register()
class ATBSN(nn.Module):
    """AT-BSN's tunable blind-spot network: output (i, j) never sees the h x h input square at (i, j).

    ``forward(x, hole_size=None)`` uses the constructor's ``hole_size`` when None (1, the authors'
    default; they validate with 3). ``forward_holes`` gives several hole sizes from one U-Net pass.
    The centred h x h square is always hidden; for h >= 5 a few more pixels are (h = 5, 7, 9: 1, 5, 9 more),
    in an (h+1) x (h+1) box that extends above/left of the square for even rows/columns and below/right for odd
    ones (measured, tests/test_atbsn.py). Presets: ``published`` (mid 48; 1,268,547 parameters),
    ``small`` (mid 16, the reference file's reduced size).
    """

    PRESETS = {
        "published": dict(n_channels=3, mid_channels=48, n_output=3, bias=True, blind=True),
        "small": dict(n_channels=3, mid_channels=16, n_output=3, bias=True, blind=True),
    }

    def __init__(self, n_channels: int = 3, mid_channels: int = 48, n_output: int = 3, bias: bool = True,
                 blind: bool = True, hole_size: int = 1, value_range: float = 1.0):
        super().__init__()
        _check(mid_channels, value_range)
        self.blind, self.hole_size, self.value_range = blind, hole_size, float(value_range)
        self.unet = BlindUNet(n_channels, mid_channels, 2 * mid_channels, bias, blind)
        self.nin_A = nn.Conv2d(8 * mid_channels, 8 * mid_channels, 1, bias=bias)  # noqa: N815 (authors' names)
        self.nin_B = nn.Conv2d(8 * mid_channels, 2 * mid_channels, 1, bias=bias)  # noqa: N815
        self.nin_C = nn.Conv2d(2 * mid_channels, n_output, 1, bias=bias)  # noqa: N815

    def forward(self, x: torch.Tensor, hole_size: int | None = None) -> torch.Tensor:
        return self.forward_holes(x, [self.hole_size if hole_size is None else hole_size])[0]

    def forward_holes(self, x: torch.Tensor, hole_sizes: Sequence[int], pad: int = 0) -> list[torch.Tensor]:
        """One U-Net pass, then the shift, unrotation and heads for each hole size: a list of outputs.

        Hole sizes h >= -1 shift by (h + 1) // 2 rows (-1 and 0: no blind spot). ``pad`` reflect-pads the
        input first and crops it off the outputs, as APR-RD's ``Inf_T_elements`` (pad 16, holes
        -1, 1, 3, 5, 7, 9) and its inference (pad 16, hole 1); mirrored pixels near the border then
        leak into the blind spot, as in their code.
        """
        if any(h < -1 for h in hole_sizes):
            raise ValueError(f"hole sizes must be >= -1, got {list(hole_sizes)}")
        height, width = x.shape[-2:]
        if pad:
            x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        side = -(-max(x.shape[-2:]) // SIZE_MULTIPLE) * SIZE_MULTIPLE
        x = F.pad(x, (0, side - x.shape[-1], 0, side - x.shape[-2]))  # zeros: (B, C, S, S)
        feats = self.unet(torch.cat([_rotate(x, k) for k in range(4)], dim=0) * self.value_range)
        outs = []
        for hole in hole_sizes:
            y = _shift_down(feats, (hole + 1) // 2) if self.blind else feats
            y = torch.cat([_rotate(part, -k % 4) for k, part in enumerate(y.chunk(4, dim=0))], dim=1)
            y = self.nin_C(F.leaky_relu(self.nin_B(F.leaky_relu(self.nin_A(y), 0.1)), 0.1))
            outs.append(y[..., pad: pad + height, pad: pad + width] / self.value_range)
        return outs


@ARCHS.register()
class ATBSNStudent(nn.Module):
    """AT-BSN's distilled student ``N_BSN`` (student c): the U-Net with plain convs, no rotation or shift.

    Presets: ``published`` (mid 48; 1,003,011 parameters), ``small`` (mid 16). ``blind`` is the authors'
    constructor flag (False for the student). ``value_range``: see the module docstring (255 for the
    authors' released weights on our [0, 1] images).
    """

    PRESETS = {
        "published": dict(n_channels=3, mid_channels=48, n_output=3, bias=True, blind=False),
        "small": dict(n_channels=3, mid_channels=16, n_output=3, bias=True, blind=False),
    }

    def __init__(self, n_channels: int = 3, mid_channels: int = 48, n_output: int = 3, bias: bool = True,
                 blind: bool = False, value_range: float = 1.0):
        super().__init__()
        _check(mid_channels, value_range)
        self.value_range = float(value_range)
        self.unet = BlindUNet(n_channels, mid_channels, n_output, bias, blind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        out = self.unet(pad_to_multiple(x, SIZE_MULTIPLE) * self.value_range)
        return out[..., :h, :w] / self.value_range


__all__ = ["ATBSN", "ATBSNStudent", "BlindUNet", "Conv"]
