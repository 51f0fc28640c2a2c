"""Restormer (Zamir et al., CVPR 2022), the default AMSNet denoiser.

Same network, argument names and ``state_dict`` keys as the Restormer code that AMSNet ships
(``codes/arches/Restormer.py``), so the authors' checkpoints load with ``strict=True``.
Additions that leave outputs unchanged: reflect padding to a multiple of 8 (cropped back) so
any image size works, optional activation checkpointing of the transformer blocks, and a CPU inference
path (``_fast_cpu``): channels-last maps, every convolution through oneDNN, the 1x1 + depthwise pairs
computed per half (GDFN) or third (MDTA) so that each part is a dense map, and the MDTA normalisation
folded into the C/heads x C/heads attention matrix. It gives the same outputs to float rounding, faster on
CPU (docs/results.md, "Speed: AMSNet-Restormer, ours vs the authors' code").
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from amcfd.archs.common import LayerNorm2d, run_blocks
from amcfd.ops.pd import pad_to_multiple
from amcfd.registry import ARCHS, ConfigError


def _fast_cpu(x: torch.Tensor) -> bool:
    """The CPU inference path applies: float32 on a CPU with oneDNN, no autograd."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and torch.backends.mkldnn.is_available())


def _conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int = 0,
          groups: int = 1) -> torch.Tensor:
    """Stride-1 convolution through oneDNN (channels-last in, channels-last out). PyTorch's own dispatch
    sends 1x1 convolutions of small batches on one thread to a slower im2col path."""
    return torch.mkldnn_convolution(x, weight, bias, (padding, padding), (1, 1), (1, 1), groups)


def _pointwise_depthwise(x: torch.Tensor, pointwise: nn.Conv2d, depthwise: nn.Conv2d, start: int,
                         stop: int) -> torch.Tensor:
    """Output channels start:stop of depthwise(pointwise(x)); both act per output channel."""
    def cut(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t[start:stop]

    y = _conv(x, pointwise.weight[start:stop], cut(pointwise.bias))
    return _conv(y, depthwise.weight[start:stop], cut(depthwise.bias), 1, stop - start)


class _BiasFreeNorm(nn.Module):
    """x / sqrt(var + 1e-5) * w over channels: no mean subtraction, no bias."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(1, keepdim=True)      # two passes: faster than Tensor.var over channels on CPU
        var = (centred * centred).mean(1, keepdim=True)
        return x * (var + 1e-5).rsqrt() * self.weight.view(1, -1, 1, 1)


class ChannelNorm(nn.Module):
    """Per-pixel LayerNorm over the channels of a (B, C, H, W) map; ``body`` holds the weights."""

    def __init__(self, dim: int, layer_norm_type: str):
        super().__init__()
        if layer_norm_type not in ("BiasFree", "WithBias"):
            raise ConfigError(f"unknown option 'LayerNorm_type: {layer_norm_type}' "
                              "(use BiasFree or WithBias)")
        self.body = _BiasFreeNorm(dim) if layer_norm_type == "BiasFree" else LayerNorm2d(dim, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class GatedDconvFeedForward(nn.Module):
    """GDFN: 1x1 expand -> depthwise 3x3 -> GELU(x1) * x2 -> 1x1 project (Restormer Eq. 6-7)."""

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool):
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _fast_cpu(x):
            hidden = self.project_out.in_channels
            x1, x2 = (_pointwise_depthwise(x, self.project_in, self.dwconv, i * hidden, (i + 1) * hidden)
                      for i in range(2))
            return _conv(F.gelu(x1).mul_(x2), self.project_out.weight, self.project_out.bias)
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)  # 2 x (B, hidden, H, W)
        return self.project_out(F.gelu(x1) * x2)


class TransposedAttention(nn.Module):
    """MDTA: attention across channels (C/heads x C/heads per head), not pixels (Restormer Eq. 2)."""

    def __init__(self, dim: int, num_heads: int, bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _fast_cpu(x):
            return self._forward_cpu(x)
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        q, k, v = (t.reshape(b, self.num_heads, c // self.num_heads, h * w) for t in (q, k, v))
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1)) * self.temperature  # (B, heads, C/heads, C/heads)
        out = attn.softmax(dim=-1) @ v  # (B, heads, C/heads, H*W)
        return self.project_out(out.reshape(b, c, h, w))

    def _forward_cpu(self, x: torch.Tensor) -> torch.Tensor:
        """The same on channels-last maps: q, k, v as (B, heads, H*W, C/heads) views of dense maps;
        q^T k / (|q| |k|^T) equals the product of the normalised q and k (F.normalize's eps 1e-12)."""
        b, c, h, w = x.shape
        q, k, v = (_pointwise_depthwise(x, self.qkv, self.qkv_dwconv, i * c, (i + 1) * c)
                   .permute(0, 2, 3, 1).reshape(b, h * w, self.num_heads, c // self.num_heads).transpose(1, 2)
                   for i in range(3))
        q_norm, k_norm = (t.square().sum(2).sqrt().clamp_min(1e-12) for t in (q, k))   # (B, heads, C/heads)
        attn = (q.transpose(-2, -1) @ k) / (q_norm.unsqueeze(-1) * k_norm.unsqueeze(-2)) * self.temperature
        out = v @ attn.softmax(dim=-1).transpose(-2, -1)                    # (B, heads, H*W, C/heads)
        out = out.transpose(1, 2).reshape(b, h, w, c).permute(0, 3, 1, 2)  # channels-last (B, C, H, W)
        return _conv(out, self.project_out.weight, self.project_out.bias)


class TransformerBlock(nn.Module):
    """x + MDTA(LN(x)), then + GDFN(LN(x))."""

    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool,
                 layer_norm_type: str):
        super().__init__()
        self.norm1 = ChannelNorm(dim, layer_norm_type)
        self.attn = TransposedAttention(dim, num_heads, bias)
        self.norm2 = ChannelNorm(dim, layer_norm_type)
        self.ffn = GatedDconvFeedForward(dim, ffn_expansion_factor, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class _PatchEmbed(nn.Module):
    """3x3 overlapped patch embedding (always bias-free, as in the authors' code)."""

    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class _Downsample(nn.Module):
    """(B, C, H, W) -> (B, 2C, H/2, W/2): 3x3 conv to C/2 then pixel-unshuffle."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels // 2, 3, padding=1, bias=False),
                                  nn.PixelUnshuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class _Upsample(nn.Module):
    """(B, C, H, W) -> (B, C/2, 2H, 2W): 3x3 conv to 2C then pixel-shuffle."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels * 2, 3, padding=1, bias=False),
                                  nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@ARCHS.register()
class Restormer(nn.Module):
    """Restormer: 4-level transformer U-Net with transposed attention; output = conv(features) + input.

    Arguments are the authors' (``inp_channels`` ... ``dual_pixel_task``); ``checkpointing`` recomputes
    each transformer block in the backward pass (training only) to save memory.
    Presets (``build_arch({'type': 'Restormer', 'preset': ...})``): ``published`` is AMSNet's
    configs/restormer.yaml (26,111,668 parameters); ``small`` is a fast CPU demo size.
    """

    PRESETS = {
        "published": dict(inp_channels=3, out_channels=3, dim=48, num_blocks=[4, 6, 6, 8],
                          num_refinement_blocks=4, heads=[1, 2, 4, 8], ffn_expansion_factor=2.66,
                          bias=False, LayerNorm_type="BiasFree"),
        "small": dict(dim=16, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 4, 8],
                      ffn_expansion_factor=2.66, bias=False, LayerNorm_type="BiasFree"),
    }
    size_multiple = 8  # three 2x downsamplings

    def __init__(
        self,
        inp_channels: int = 3,
        out_channels: int = 3,
        dim: int = 48,
        num_blocks: Sequence[int] = (4, 6, 6, 8),
        num_refinement_blocks: int = 4,
        heads: Sequence[int] = (1, 2, 4, 8),
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        LayerNorm_type: str = "WithBias",  # the authors' option name
        dual_pixel_task: bool = False,
        checkpointing: bool = False,
    ):
        super().__init__()
        if len(num_blocks) != 4 or len(heads) != 4:
            raise ConfigError(f"Restormer needs 4 num_blocks and 4 heads, got {list(num_blocks)} "
                              f"and {list(heads)}")
        for level, n_heads in enumerate(heads):
            if (dim * 2**level) % n_heads:
                raise ConfigError(f"Restormer: level {level + 1} width {dim * 2**level} is not divisible "
                                  f"by heads[{level}] = {n_heads}")
        self.dual_pixel_task = dual_pixel_task
        self.checkpointing = checkpointing

        def level(channels: int, n_heads: int, depth: int) -> nn.Sequential:
            blocks = [TransformerBlock(channels, n_heads, ffn_expansion_factor, bias, LayerNorm_type)
                      for _ in range(depth)]
            return nn.Sequential(*blocks)

        c1, c2, c3, c4 = dim, dim * 2, dim * 4, dim * 8
        self.patch_embed = _PatchEmbed(inp_channels, c1)
        self.encoder_level1 = level(c1, heads[0], num_blocks[0])
        self.down1_2 = _Downsample(c1)
        self.encoder_level2 = level(c2, heads[1], num_blocks[1])
        self.down2_3 = _Downsample(c2)
        self.encoder_level3 = level(c3, heads[2], num_blocks[2])
        self.down3_4 = _Downsample(c3)
        self.latent = level(c4, heads[3], num_blocks[3])
        self.up4_3 = _Upsample(c4)
        self.reduce_chan_level3 = nn.Conv2d(c4, c3, kernel_size=1, bias=bias)
        self.decoder_level3 = level(c3, heads[2], num_blocks[2])
        self.up3_2 = _Upsample(c3)
        self.reduce_chan_level2 = nn.Conv2d(c3, c2, kernel_size=1, bias=bias)
        self.decoder_level2 = level(c2, heads[1], num_blocks[1])
        self.up2_1 = _Upsample(c2)  # no channel reduction at level 1: decoder works at 2*dim
        self.decoder_level1 = level(c2, heads[0], num_blocks[0])
        self.refinement = level(c2, heads[0], num_refinement_blocks)
        if dual_pixel_task:
            self.skip_conv = nn.Conv2d(c1, c2, kernel_size=1, bias=bias)
        self.output = nn.Conv2d(c2, out_channels, kernel_size=3, padding=1, bias=bias)

    @staticmethod
    def _reduce(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        return _conv(x, conv.weight, conv.bias) if _fast_cpu(x) else conv(x)

    def forward(self, inp_img: torch.Tensor) -> torch.Tensor:
        h, w = inp_img.shape[-2:]
        x_in = pad_to_multiple(inp_img, self.size_multiple)  # (B, C, H8, W8), H8 = H rounded up to 8
        ckpt = self.checkpointing and self.training
        fast = _fast_cpu(x_in)
        if fast:                                            # the CPU inference path works channels-last
            x_in = x_in.contiguous(memory_format=torch.channels_last)

        emb = self.patch_embed(x_in)
        enc1 = run_blocks(self.encoder_level1, emb, ckpt)
        enc2 = run_blocks(self.encoder_level2, self.down1_2(enc1), ckpt)  # (B, 2d, H/2, W/2)
        enc3 = run_blocks(self.encoder_level3, self.down2_3(enc2), ckpt)  # (B, 4d, H/4, W/4)
        latent = run_blocks(self.latent, self.down3_4(enc3), ckpt)  # (B, 8d, H/8, W/8)

        dec3 = self._reduce(self.reduce_chan_level3, torch.cat([self.up4_3(latent), enc3], 1))
        dec3 = run_blocks(self.decoder_level3, dec3, ckpt)
        dec2 = self._reduce(self.reduce_chan_level2, torch.cat([self.up3_2(dec3), enc2], 1))
        dec2 = run_blocks(self.decoder_level2, dec2, ckpt)
        dec1 = torch.cat([self.up2_1(dec2), enc1], 1)  # (B, 2d, H, W)
        dec1 = run_blocks(self.decoder_level1, dec1, ckpt)
        dec1 = run_blocks(self.refinement, dec1, ckpt)

        if self.dual_pixel_task:
            out = self.output(dec1 + self.skip_conv(emb))
        else:
            out = self.output(dec1) + x_in
        out = out[..., :h, :w]
        return out.contiguous() if fast else out
