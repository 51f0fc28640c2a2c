"""NBSN, APR-RD's 1.02M plain U-Net student (``NBSN_1.02M/codes/network/baseline_network.py:N_BSN`` in
HYK2017/APRRD, "the 1.02M version as described in the AT-BSN paper"). TM-BSN (parkjun210/TM-BSN)
distils into the same network: its ``ckpt/NBSN_SIDD.pth`` / ``NBSN_DND.pth`` have exactly these keys.

Six 3x3 convs of ``mid_channels`` (48) with a 2x2 max-pool between them (1/32 at the bottom), then five
decoder stages (nearest 2x upsampling, concatenate the encoder output of that scale, two 3x3 convs of
2 * mid); LeakyReLU 0.1 after every conv but the last (``dec1_1``); no residual, the input is not a skip.
Keys are the authors' (``enc1.conv``, ..., ``dec5_2.conv``, ``dec5_1.conv``, ..., ``dec1_2.conv``, ``dec1_1``).

Sizes: the authors need H, W divisible by 32; here the input is reflect-padded bottom/right and cropped
back. Range-agnostic; the released weights expect [0, 1], our range, so no scaling is needed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from amcfd.archs.atbsn import SIZE_MULTIPLE, Conv, upsample
from amcfd.ops.pd import pad_to_multiple
from amcfd.registry import ARCHS, ConfigError


@ARCHS.register()
class NBSN(nn.Module):
    """APR-RD's / TM-BSN's single-pass student. Presets: ``published`` (the authors' hard-coded widths,
    1,021,107 parameters), ``small`` (mid 16) for CPU demos and tests."""

    PRESETS = {
        "published": dict(in_nc=3, out_nc=3, mid_channels=48),
        "small": dict(in_nc=3, out_nc=3, mid_channels=16),
    }

    def __init__(self, in_nc: int = 3, out_nc: int = 3, mid_channels: int = 48):
        super().__init__()
        if mid_channels < 1:
            raise ConfigError(f"NBSN mid_channels must be >= 1, got {mid_channels}")
        m = mid_channels
        for i in range(1, 7):
            self.add_module(f"enc{i}", Conv(in_nc if i == 1 else m, m))
        for i in range(5, 1, -1):
            self.add_module(f"dec{i}_2", Conv(2 * m if i == 5 else 3 * m, 2 * m))
            self.add_module(f"dec{i}_1", Conv(2 * m, 2 * m))
        self.dec1_2 = Conv(3 * m, 2 * m)
        self.dec1_1 = nn.Conv2d(2 * m, out_nc, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, SIZE_MULTIPLE)
        skips = []
        for i in range(1, 6):
            skips.append(getattr(self, f"enc{i}")(x))
            x = F.max_pool2d(skips[-1], 2)
        x = self.enc6(x)
        for i in range(5, 0, -1):
            x = torch.cat([upsample(x), skips.pop()], dim=1)
            x = getattr(self, f"dec{i}_1")(getattr(self, f"dec{i}_2")(x))
        return x[..., :h, :w]


__all__ = ["NBSN"]
