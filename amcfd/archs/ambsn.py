"""AM-BSN's blind-spot network ``AMBSN`` (wam730/AM-BSN, ``model/AMBSN.py``), state_dict-compatible.

Structure (module and key names are the authors')::

    head        1x1 in_ch->C + ReLU
    branch_local   DC_branchl(stride 2, 'central'): CentralMaskedConv2d 3x3 (centre tap zeroed)
    branch_global  DC_branchl(stride 3, 'x'): XMaskedConv2d 5x5 (both diagonals zeroed, 9 taps)
        each branch: head = masked conv, ReLU, 1x1, ReLU, 1x1, ReLU -> y0
                     conv1_1(y0) -> body (2 DCl of dilation = stride, 1x1, ReLU) -> cat -> conv1_3 (2C->C)
                     conv1_2(y0)
                     returns (conv1_2 out, conv1_3 out)
    conv2_1(local conv1_3 out) -> dc_branchl2_local  (7 DCl, dilation 2, 1x1, ReLU)
    conv2_2(global conv1_3 out) -> dc_branchl2_global (7 DCl, dilation 3, 1x1, ReLU)
    tail  cat[local conv1_2 out, global conv1_2 out, stage-2 global, stage-2 local] (4C)
          -> 1x1 4C->C, ReLU, C->C/2, ReLU, C/2->C/2, ReLU, C/2->out_ch

DCl(d): ``x + conv1x1(ReLU(conv3x3 dilation d, padding d))``.

Shared modules, as in the authors' code: ``conv1_2`` *is* ``conv1_1`` (in each branch) and ``conv2_2``
*is* ``conv2_1``. The state_dict therefore lists both names with the same tensors, while
``parameters()`` yields each tensor once.

Blind spot: the local path only sees offsets (a, b) + 2k with |a|, |b| <= 1 and (a, b) != 0, the global
path offsets (a, b) + 3k with |a|, |b| <= 2 off the diagonals; neither can reach (0, 0), and the two paths
only meet in the 1x1 tail, so the output at a pixel never depends on the input at that pixel.

Masked convolutions: the authors zero the masked taps of the weight *in place* on every forward. Here the
mask (a buffer named ``mask``, in the state_dict as in theirs) multiplies the weight inside forward, and the
parameter is never modified; a checkpoint whose masked taps are non-zero gives the same outputs as theirs
(those taps get zero gradient instead of being overwritten).

The authors' network takes 0-255 inputs (the golden file uses 0-255) and returns values of the order of the
input's noise level; no clamping. Fully convolutional: any input size (the masked convs and DCls pad by
their dilation, so H and W are kept).
"""
from __future__ import annotations

import torch
from torch import nn

from amcfd.archs.blindspot import CentralMaskedConv2d, DCl, XMaskedConv2d
from amcfd.registry import ARCHS, ConfigError


def _conv1x1_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel_size=1), nn.ReLU(inplace=True))


class DC_branchl(nn.Module):  # noqa: N801 - the authors' class name
    """First-stage branch; ``stride`` is the dilation, the masked conv is (2*stride-1)^2."""

    _MASKS = {"central": CentralMaskedConv2d, "x": XMaskedConv2d}

    def __init__(self, stride: int, in_ch: int, mask_type: str, num_module: int):
        super().__init__()
        masked = self._MASKS[mask_type](in_ch, in_ch, kernel_size=2 * stride - 1, padding=stride - 1)
        self.head = nn.Sequential(masked, nn.ReLU(inplace=True),
                                  nn.Conv2d(in_ch, in_ch, kernel_size=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(in_ch, in_ch, kernel_size=1), nn.ReLU(inplace=True))
        self.conv1_1 = _conv1x1_relu(in_ch, in_ch)
        self.conv1_2 = self.conv1_1  # the same module, as in the authors' code
        self.body = nn.Sequential(*[DCl(stride, in_ch) for _ in range(num_module)],
                                  nn.Conv2d(in_ch, in_ch, kernel_size=1), nn.ReLU(inplace=True))
        self.conv1_3 = _conv1x1_relu(2 * in_ch, in_ch)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y0 = self.head(x)
        c11 = self.conv1_1(y0)
        c13 = self.conv1_3(torch.cat([c11, self.body(c11)], dim=1))
        return self.conv1_2(y0), c13


class DC_branchl2(nn.Module):  # noqa: N801 - the authors' class name
    """Second-stage branch: num_module DCls of dilation ``stride``, then 1x1 + ReLU."""

    def __init__(self, stride: int, in_ch: int, num_module: int):
        super().__init__()
        self.body = nn.Sequential(*[DCl(stride, in_ch) for _ in range(num_module)],
                                  nn.Conv2d(in_ch, in_ch, kernel_size=1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@ARCHS.register()
class AMBSN(nn.Module):
    """AM-BSN's two-branch blind-spot network (local 3x3 centre-masked / global 5x5 X-masked).

    Arguments are the authors'. ``DCL1_num``, ``DCL2_num`` and ``mask_type`` are accepted and **ignored**,
    exactly as in the authors' constructor, which hard-codes 2 DCls per first-stage branch, 7 per
    second-stage branch and the 'central' (local) / 'x' (global) masks.

    Presets: ``published`` = the authors' defaults (base_ch 128; 3,837,251 parameters, shared modules
    counted once); ``small`` = base_ch 16 (60,779 parameters, the golden file's size) for CPU demos.
    Input range 0-255 in the authors' pipeline.
    """

    DCL1 = 2  # hard-coded by the authors (DCL1_num is ignored)
    DCL2 = 7  # hard-coded by the authors (DCL2_num is ignored)

    PRESETS = {
        "published": dict(in_ch=3, out_ch=3, base_ch=128),
        "small": dict(in_ch=3, out_ch=3, base_ch=16),
    }

    def __init__(self, in_ch: int = 3, out_ch: int = 3, base_ch: int = 128, DCL1_num: int = 2,  # noqa: N803
                 DCL2_num: int = 7, mask_type: str = "o_x"):  # noqa: N803
        super().__init__()
        if base_ch % 2 != 0 or base_ch < 2:
            raise ConfigError(f"AMBSN base_ch must be a positive even number, got {base_ch}")
        del DCL1_num, DCL2_num, mask_type  # ignored, as in the authors' code
        self.head = _conv1x1_relu(in_ch, base_ch)
        self.branch_local = DC_branchl(2, base_ch, "central", self.DCL1)
        self.branch_global = DC_branchl(3, base_ch, "x", self.DCL1)
        self.conv2_1 = _conv1x1_relu(base_ch, base_ch)
        self.conv2_2 = self.conv2_1  # the same module, as in the authors' code
        self.dc_branchl2_local = DC_branchl2(2, base_ch, self.DCL2)
        self.dc_branchl2_global = DC_branchl2(3, base_ch, self.DCL2)
        half = base_ch // 2
        self.tail = nn.Sequential(
            nn.Conv2d(base_ch * 4, base_ch, kernel_size=1), nn.ReLU(inplace=True),
            nn.Conv2d(base_ch, half, kernel_size=1), nn.ReLU(inplace=True),
            nn.Conv2d(half, half, kernel_size=1), nn.ReLU(inplace=True),
            nn.Conv2d(half, out_ch, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        local_fm, local_cat = self.branch_local(x)
        global_fm, global_cat = self.branch_global(x)
        local2 = self.dc_branchl2_local(self.conv2_1(local_cat))
        global2 = self.dc_branchl2_global(self.conv2_2(global_cat))
        return self.tail(torch.cat([local_fm, global_fm, global2, local2], dim=1))
