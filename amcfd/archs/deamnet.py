"""DeamNet (Ren et al., CVPR 2021, "Adaptive consistency prior based deep network for image
denoising"), as AMSNet ships it (``codes/arches/DeamNet.py``, class ``Deam``).

Structure (with the authors' module names, so their ``state_dict`` loads strictly):

- ``transform_function``: 3x3 conv to 64 channels plus a 2-conv residual branch;
- four iterations k = 1..4 of: ``x_k = net2(x_{k-1})`` (the NLO sub-network, a 4-level U-Net with
  attention-gated skips and a global residual, **one module with shared weights, applied 4 times**),
  then the DEAM fusion ``x_k = (1 - d_k) * x_k + d_k * y`` with ``d_k = lineKK(x_k, y)`` a per-pixel,
  per-channel weight computed from ``x_k`` and the transformed input ``y`` (paper Eq. 9-10);
- ``inverse_transform_function``: residual 2-conv branch, then a 3x3 conv back to 3 channels.

Quirk kept for checkpoint compatibility: ``net2.conv_dila1/2/3`` and ``net2.cat1`` (352,512 parameters
at 64 channels) exist in the authors' module but are never used in forward.

Sizes: the NLO U-Net halves the size 4 times; inputs are reflect-padded to a multiple of 16 and
cropped back (the authors' code has no padding; divisible inputs give identical outputs).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from amcfd.ops.pd import pad_to_multiple
from amcfd.registry import ARCHS, ConfigError


class ConvLayer1(nn.Module):
    """'Same'-padded conv, no activation (weights under ``conv2d``), Xavier-normal init."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__()
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=(kernel_size - 1) // 2)
        nn.init.xavier_normal_(self.conv2d.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(x)


class ConvLayer(nn.Module):
    """'Same'-padded conv + ReLU (weights under ``block.0``), Xavier-normal init."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                                             padding=(kernel_size - 1) // 2), nn.ReLU())
        nn.init.xavier_normal_(self.block[0].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class UpsampleConvLayer(nn.Module):
    """Nearest 2x upsampling, then conv + ReLU: (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv2d = ConvLayer(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"))


def _squeeze_weights(channels: int, reduction: int) -> nn.Sequential:
    """3x3 conv down to C/r, ReLU, 3x3 conv back to C, sigmoid: a per-pixel weight in (0, 1)."""
    return nn.Sequential(ConvLayer1(channels, channels // reduction, 3), nn.ReLU(inplace=True),
                         ConvLayer1(channels // reduction, channels, 3), nn.Sigmoid())


class SCA(nn.Module):
    """Weight branch of the DEAM module (keys ``conv_du.0``, ``conv_du.2``)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.conv_du = _squeeze_weights(channels, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_du(x)


class Weight(nn.Module):
    """DEAM weight: d = SCA(1x1([C(y), x])), the adaptive-consistency blend factor."""

    def __init__(self, channels: int):
        super().__init__()
        self.cat = ConvLayer1(channels * 2, channels, 1)
        self.C = ConvLayer1(channels, channels, 3)
        self.weight = SCA(channels)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.weight(self.cat(torch.cat([self.C(y), x], 1)))


class EncodingBlock(nn.Module):
    """(n-1) conv+ReLU at full size (returned as the skip), then one stride-2 conv+ReLU."""

    def __init__(self, channels: int, n_convblock: int):
        super().__init__()
        self.body = nn.Sequential(*[ConvLayer(channels, channels, 3) for _ in range(n_convblock - 1)],
                                  ConvLayer(channels, channels, 3, stride=2))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.body[:-1](x)
        return skip, self.body[-1](skip)  # (B, C, H, W), (B, C, H/2, W/2)


class AttentionGate(nn.Module):
    """Attention-gated skip of the NLO U-Net: w = sigmoid-branch(1x1([C(x), up(g)])),
    out = (1 - w) * up(g) + w * x."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.conv_du = _squeeze_weights(channels, reduction)
        self.cat = ConvLayer1(channels * 2, channels, 1)
        self.C = ConvLayer1(channels, channels, 3)
        self.ConvTranspose = UpsampleConvLayer(channels)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        up_g = self.ConvTranspose(g)
        weight = self.conv_du(self.cat(torch.cat([self.C(x), up_g], 1)))
        return (1 - weight) * up_g + weight * x


class UpsampleFuse(nn.Module):
    """1x1([conv(x), up(y)]): fuse a skip with the upsampled coarser map."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, 3)
        self.ConvTranspose = UpsampleConvLayer(channels)
        self.cat = ConvLayer1(channels * 2, channels, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.cat(torch.cat([self.conv1(x), self.ConvTranspose(y)], 1))


class DecodingBlock(nn.Module):
    """UpsampleFuse, then ``n_convblock`` conv+ReLU."""

    def __init__(self, channels: int, n_convblock: int):
        super().__init__()
        self.upsample = UpsampleFuse(channels)
        self.body = nn.Sequential(*[ConvLayer(channels, channels, 3) for _ in range(n_convblock)])

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.body(self.upsample(x, y))


class NLOSubnet(nn.Module):
    """The non-linear filtering (NLO) sub-network: 4-level U-Net, attention-gated skips, x + U(x)."""

    def __init__(self, channels: int, n_convblock_in: int = 3, n_convblock_out: int = 2):
        super().__init__()
        c = channels
        # Never used in forward; kept so that the authors' checkpoints load strictly.
        self.conv_dila1 = ConvLayer1(c, c, 3)
        self.conv_dila2 = ConvLayer1(c, c, 5)
        self.conv_dila3 = ConvLayer1(c, c, 7)
        self.cat1 = nn.Conv2d(c * 3, c, 1)
        nn.init.xavier_normal_(self.cat1.weight)
        self.e3 = EncodingBlock(c, n_convblock_in)
        self.e2 = EncodingBlock(c, n_convblock_in)
        self.e1 = EncodingBlock(c, n_convblock_in)
        self.e0 = EncodingBlock(c, n_convblock_in)
        self.attention3 = AttentionGate(c)
        self.attention2 = AttentionGate(c)
        self.attention1 = AttentionGate(c)
        self.attention0 = AttentionGate(c)
        self.mid = nn.Sequential(ConvLayer(c, c, 3), ConvLayer(c, c, 3))
        self.de3 = DecodingBlock(c, n_convblock_out)
        self.de2 = DecodingBlock(c, n_convblock_out)
        self.de1 = DecodingBlock(c, n_convblock_out)
        self.de0 = DecodingBlock(c, n_convblock_out)
        self.final = ConvLayer1(c, c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip0, down = self.e0(x)
        skip1, down = self.e1(down)
        skip2, down = self.e2(down)
        skip3, down = self.e3(down)  # (B, C, H/16, W/16)
        up = self.mid(down)
        for skip, gate, decode in ((skip3, self.attention3, self.de3), (skip2, self.attention2, self.de2),
                                   (skip1, self.attention1, self.de1), (skip0, self.attention0, self.de0)):
            up = decode(gate(skip, up), up)  # one level up
        return x + self.final(up)


def _conv_relu_conv(channels: int) -> nn.Sequential:
    """The residual branch of both transforms (keys ``pre.0``, ``pre.2`` as in the authors' code)."""
    return nn.Sequential(ConvLayer1(channels, channels, 3), nn.ReLU(inplace=True), ConvLayer1(channels, channels, 3))


class TransformFunction(nn.Module):
    """y = conv(x); y + conv(ReLU(conv(y))): image -> feature space."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.ext = ConvLayer1(in_channels, channels, 3)
        self.pre = _conv_relu_conv(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ext(x)
        return y + self.pre(y)


class InverseTransformFunction(nn.Module):
    """x + conv(ReLU(conv(x))), then conv: feature space -> image."""

    def __init__(self, channels: int, out_channels: int):
        super().__init__()
        self.ext = ConvLayer1(channels, out_channels, 3)
        self.pre = _conv_relu_conv(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ext(x + self.pre(x))


@ARCHS.register("Deam")
@ARCHS.register()
class DeamNet(nn.Module):
    """DeamNet; ``Isreal`` (the authors' argument) selects RGB (True) or grey (False) images.

    ``channels`` (default 64, hard-coded in the authors' code) is an addition for small demo models.
    Presets: ``published`` = ``Isreal: True`` (2,228,131 parameters); ``small`` = 16 channels.
    """

    PRESETS = {"published": dict(Isreal=True), "small": dict(Isreal=True, channels=16)}
    size_multiple = 16  # four stride-2 convs in the NLO sub-network

    def __init__(self, Isreal: bool = True, channels: int = 64):  # the authors' argument name
        super().__init__()
        if channels < 16:
            raise ConfigError(f"DeamNet channels must be at least 16 (attention reduction 16), got {channels}")
        image_channels = 3 if Isreal else 1
        self.transform_function = TransformFunction(image_channels, channels)
        self.inverse_transform_function = InverseTransformFunction(channels, image_channels)
        self.line11 = Weight(channels)
        self.line22 = Weight(channels)
        self.line33 = Weight(channels)
        self.line44 = Weight(channels)
        self.net2 = NLOSubnet(channels, 3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = self.transform_function(pad_to_multiple(x, self.size_multiple))  # (B, 64, H16, W16)
        out = y
        for line in (self.line11, self.line22, self.line33, self.line44):
            out = self.net2(out)  # the same NLO weights at every iteration
            delta = line(out, y)
            out = (1 - delta) * out + delta * y
        return self.inverse_transform_function(out)[..., :h, :w]
