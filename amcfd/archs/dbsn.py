"""DBSNl, AP-BSN's blind-spot network (Lee et al., CVPR 2022; ``src/model/DBSNl.py`` in wooseoklee4/AP-BSN).

A 1x1 head, then two parallel branches that see the input through a centre-masked conv (3x3 for the
dilation-2 branch, 5x5 for the dilation-3 branch) followed by 1x1 convs and ``num_module`` dilated
residual blocks (DCl). The branch outputs are concatenated and reduced by a 1x1 tail
(2*base -> base -> base/2 -> base/2 -> out). Only 1x1 convs and dilated 3x3 convs follow the masked
conv, so the receptive field of an output pixel never includes the same input pixel: the blind spot.

The module structure and key names are the authors' (``head.0``, ``branch1.body.0`` (masked conv, with
its ``mask`` buffer), ``branch1.body.6.body.0`` (first DCl), ``tail.6``...), so their checkpoints load
strictly. The authors' masked conv multiplies ``weight.data`` by the mask in place at each forward;
here the weight is multiplied by the mask out of place, so the parameter is never mutated but the
outputs are the same, including for checkpoints whose saved weights have non-zero centre taps.

Fully convolutional and range-agnostic: any input size (zero padding keeps H, W); AP-BSN feeds it
images in [0, 255].
"""
from __future__ import annotations

import torch
from torch import nn

from amcfd.archs.blindspot import CentralMaskedConv2d, DCl
from amcfd.registry import ARCHS, ConfigError


class DC_branchl(nn.Module):  # noqa: N801 (the authors' class name)
    """Masked conv (kernel 2*stride-1), 2 x 1x1, ``num_module`` DCl(stride), 1x1; ReLU after each conv."""

    def __init__(self, stride: int, in_ch: int, num_module: int):
        super().__init__()
        layers: list[nn.Module] = [
            CentralMaskedConv2d(in_ch, in_ch, kernel_size=2 * stride - 1, stride=1, padding=stride - 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_ch, in_ch, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_ch, in_ch, kernel_size=1),
            nn.ReLU(inplace=True),
        ]
        layers += [DCl(stride, in_ch) for _ in range(num_module)]
        layers += [nn.Conv2d(in_ch, in_ch, kernel_size=1), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@ARCHS.register()
class DBSNl(nn.Module):
    """AP-BSN's dilated blind-spot network (light version); output pixel (i, j) never sees input (i, j).

    Presets: ``published`` = the authors' defaults (base_ch 128, num_module 9; 3,656,131 parameters,
    the mask buffers not counted); ``small`` for CPU demos and tests (base_ch 16, num_module 2).
    """

    PRESETS = {
        "published": dict(in_ch=3, out_ch=3, base_ch=128, num_module=9),
        "small": dict(in_ch=3, out_ch=3, base_ch=16, num_module=2),
    }

    def __init__(self, in_ch: int = 3, out_ch: int = 3, base_ch: int = 128, num_module: int = 9):
        super().__init__()
        if base_ch < 2 or base_ch % 2:
            raise ConfigError(f"DBSNl base_ch must be a positive even number, got {base_ch}")
        if num_module < 0:
            raise ConfigError(f"DBSNl num_module must be >= 0, got {num_module}")
        self.head = nn.Sequential(nn.Conv2d(in_ch, base_ch, kernel_size=1), nn.ReLU(inplace=True))
        self.branch1 = DC_branchl(2, base_ch, num_module)
        self.branch2 = DC_branchl(3, base_ch, num_module)
        self.tail = nn.Sequential(
            nn.Conv2d(base_ch * 2, base_ch, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(base_ch, base_ch // 2, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(base_ch // 2, base_ch // 2, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(base_ch // 2, out_ch, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        return self.tail(torch.cat([self.branch1(x), self.branch2(x)], dim=1))


__all__ = ["DBSNl", "DC_branchl", "DCl", "CentralMaskedConv2d"]
