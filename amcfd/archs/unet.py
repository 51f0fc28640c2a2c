"""The Noise2Noise-style U-Net AMSNet ships (``codes/arches/Unet.py``), after Laine et al. 2019.

Five max-pool levels of ``n_feature`` channels, transposed-conv (2x2, stride 2) upsampling with
concatenated skips, the input itself concatenated before ``dec_conv1a``, 96-channel output stage
(hard-coded, as in the authors' code) and 1x1 "nin" heads; LeakyReLU 0.2; no global residual.

``blindspot=True`` is Laine et al.'s blind-spot variant: the input is stacked with its 90/180/270
degree rotations on the batch, every conv only looks upwards (pad one row on top, drop the last),
pooling shifts down by one row, a final one-row shift hides the centre, and the four rotations are
undone and concatenated on channels (384) before the heads. The output at a pixel never depends on
that pixel's input value.

Sizes: the authors need H, W multiples of 32. Here the input is padded and cropped back: reflect
padding in the normal mode; in blind-spot mode zero padding to a square (the rotations are stacked
on the batch), since mirrored copies of a pixel would leak its value into the blind spot.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from amcfd.ops.pd import pad_to_multiple
from amcfd.registry import ARCHS


def _shift_down(x: torch.Tensor, rows: int = 1) -> torch.Tensor:
    """Move the map down by ``rows`` (zeros enter at the top, the last rows leave)."""
    return F.pad(x[..., : x.shape[-2] - rows, :], (0, 0, rows, 0))


def _rotate(x: torch.Tensor, quarter_turns: int) -> torch.Tensor:
    """Rotate (B, C, H, W) clockwise by 90 degrees ``quarter_turns`` times (the authors' direction)."""
    return torch.rot90(x, k=quarter_turns, dims=(3, 2))


class UpsampleCat(nn.Module):
    """2x transposed conv of ``x``, then concatenate the skip: (B, out + C_skip, 2H, 2W)."""

    def __init__(self, in_nc: int, out_nc: int):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(in_nc, out_nc, 2, 2)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.deconv(x), skip], dim=1)


@ARCHS.register()
class UNet(nn.Module):
    """U-Net denoiser with an optional blind spot (see the module docstring).

    Presets: ``published`` = AMSNet configs/unet.yaml (n_feature 128; 7,935,555 parameters);
    ``small`` (n_feature 16) for CPU demos. ``zero_last`` only changes the initialisation (as in the
    authors' code, the last conv then keeps PyTorch's default init instead of the scaled He init).
    """

    PRESETS = {
        "published": dict(in_nc=3, out_nc=3, n_feature=128, blindspot=False, zero_last=False),
        "small": dict(in_nc=3, out_nc=3, n_feature=16),
    }
    size_multiple = 32  # five 2x poolings

    def __init__(self, in_nc: int = 3, out_nc: int = 3, n_feature: int = 48, blindspot: bool = False,
                 zero_last: bool = False):
        super().__init__()
        self.blindspot = blindspot
        f = n_feature
        self.act = nn.LeakyReLU(0.2, inplace=True)
        self.enc_conv0 = nn.Conv2d(in_nc, f, 3, 1, 1)
        self.enc_conv1 = nn.Conv2d(f, f, 3, 1, 1)
        self.enc_conv2 = nn.Conv2d(f, f, 3, 1, 1)
        self.enc_conv3 = nn.Conv2d(f, f, 3, 1, 1)
        self.enc_conv4 = nn.Conv2d(f, f, 3, 1, 1)
        self.enc_conv5 = nn.Conv2d(f, f, 3, 1, 1)
        self.enc_conv6 = nn.Conv2d(f, f, 3, 1, 1)
        self.pool = nn.MaxPool2d(2)
        self.up5 = UpsampleCat(f, f)
        self.dec_conv5a = nn.Conv2d(2 * f, 2 * f, 3, 1, 1)
        self.dec_conv5b = nn.Conv2d(2 * f, 2 * f, 3, 1, 1)
        self.up4 = UpsampleCat(2 * f, 2 * f)
        self.dec_conv4a = nn.Conv2d(3 * f, 2 * f, 3, 1, 1)
        self.dec_conv4b = nn.Conv2d(2 * f, 2 * f, 3, 1, 1)
        self.up3 = UpsampleCat(2 * f, 2 * f)
        self.dec_conv3a = nn.Conv2d(3 * f, 2 * f, 3, 1, 1)
        self.dec_conv3b = nn.Conv2d(2 * f, 2 * f, 3, 1, 1)
        self.up2 = UpsampleCat(2 * f, 2 * f)
        self.dec_conv2a = nn.Conv2d(3 * f, 2 * f, 3, 1, 1)
        self.dec_conv2b = nn.Conv2d(2 * f, 2 * f, 3, 1, 1)
        self.up1 = UpsampleCat(2 * f, 2 * f)
        self.dec_conv1a = nn.Conv2d(2 * f + in_nc, 96, 3, 1, 1)
        self.dec_conv1b = nn.Conv2d(96, 96, 3, 1, 1)
        heads_in = 96 * 4 if blindspot else 96  # blind spot: the 4 rotations side by side
        self.nin_a = nn.Conv2d(heads_in, heads_in, 1)
        self.nin_b = nn.Conv2d(heads_in, 96, 1)
        self.nin_c = nn.Conv2d(96, out_nc, 1)
        self._init_weights(skip=[self.nin_c] if zero_last else [])

    def _init_weights(self, skip: list[nn.Module]) -> None:
        """The authors' init: He-normal (fan_in) scaled by 0.1, zero bias, for every (transposed) conv."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m not in skip:
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
                with torch.no_grad():
                    m.weight.mul_(0.1)
                    m.bias.zero_()

    def _conv(self, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        """LeakyReLU(conv(x)); in blind-spot mode the 3x3 conv sees only its row and the rows above."""
        if self.blindspot:
            ofs = conv.kernel_size[0] // 2
            return self.act(conv(F.pad(x, (0, 0, ofs, 0)))[..., : x.shape[-2], :]) if ofs else self.act(conv(x))
        return self.act(conv(x))

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(_shift_down(x) if self.blindspot else x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.blindspot:
            side = -(-max(h, w) // self.size_multiple) * self.size_multiple
            x = F.pad(x, (0, side - w, 0, side - h))  # zeros: (B, C, S, S)
            x = torch.cat([_rotate(x, k) for k in range(4)], dim=0)  # (4B, C, S, S)
        else:
            x = pad_to_multiple(x, self.size_multiple)

        skips = [x]
        x = self._conv(self.enc_conv0, x)
        x = self._pool(self._conv(self.enc_conv1, x))
        skips.append(x)  # 1/2
        for conv in (self.enc_conv2, self.enc_conv3, self.enc_conv4):
            x = self._pool(self._conv(conv, x))
            skips.append(x)  # 1/4, 1/8, 1/16
        x = self._pool(self._conv(self.enc_conv5, x))  # 1/32
        x = self._conv(self.enc_conv6, x)

        decoder = ((self.up5, self.dec_conv5a, self.dec_conv5b), (self.up4, self.dec_conv4a, self.dec_conv4b),
                   (self.up3, self.dec_conv3a, self.dec_conv3b), (self.up2, self.dec_conv2a, self.dec_conv2b))
        for up, conv_a, conv_b in decoder:
            x = up(x, skips.pop())
            x = self._conv(conv_b, self._conv(conv_a, x))
        x = self.up1(x, skips.pop())  # (B, 2f + in_nc, H, W): the input itself is the last skip
        x = self._conv(self.dec_conv1b, self._conv(self.dec_conv1a, x))  # (B, 96, H, W)

        if self.blindspot:
            x = _shift_down(x)
            x = torch.cat([_rotate(part, -k % 4) for k, part in enumerate(x.chunk(4, dim=0))], dim=1)
        x = self._conv(self.nin_b, self._conv(self.nin_a, x))
        return self.nin_c(x)[..., :h, :w]
