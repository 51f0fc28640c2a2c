"""Building blocks of the pixel-shuffle blind-spot networks (AP-BSN's DBSNl, AM-BSN's AMBSN).

Masked convolutions: the authors zero the masked taps of the weight *in place* on every forward. Here a
``mask`` buffer (the weight's shape, in the state_dict as in theirs) multiplies the weight inside forward;
the parameter is never modified, and a checkpoint whose masked taps are non-zero gives the authors'
outputs (those taps get zero gradient instead of being overwritten).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MaskedConv2d(nn.Conv2d):
    """Conv2d whose weight is multiplied by the ``mask`` buffer in forward; subclasses give the taps."""

    @staticmethod
    def mask_taps(k: int) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        taps = self.mask_taps(self.weight.shape[-1])                       # (k, k), 0 = masked
        self.register_buffer("mask", taps.expand_as(self.weight).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)


class CentralMaskedConv2d(MaskedConv2d):
    """Centre tap zeroed (AP-BSN; AM-BSN's local branch)."""

    @staticmethod
    def mask_taps(k: int) -> torch.Tensor:
        taps = torch.ones(k, k)
        taps[k // 2, k // 2] = 0
        return taps


class XMaskedConv2d(MaskedConv2d):
    """Both diagonals zeroed, an 'X' (2k-1 taps for odd k; AM-BSN's global branch)."""

    @staticmethod
    def mask_taps(k: int) -> torch.Tensor:
        taps = torch.ones(k, k)
        idx = torch.arange(k)
        taps[idx, idx] = 0
        taps[k - 1 - idx, idx] = 0
        return taps


class DCl(nn.Module):
    """Dilated residual block: ``x + conv1x1(ReLU(conv3x3(x, dilation=stride, padding=stride)))``."""

    def __init__(self, stride: int, in_ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, in_ch, kernel_size=3, stride=1, padding=stride, dilation=stride),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_ch, in_ch, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)
