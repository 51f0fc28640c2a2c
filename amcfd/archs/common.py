"""Small pieces shared by the networks: activation checkpointing, channel LayerNorm.

Size padding is ``amcfd.ops.pd.pad_to_multiple`` (one place for it).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def run_blocks(blocks: nn.Sequential, x: torch.Tensor, checkpointing: bool) -> torch.Tensor:
    """Apply ``blocks`` in order; with ``checkpointing`` (and only when training with grad enabled)
    each block's activations are recomputed in the backward pass instead of stored."""
    use_checkpoint = checkpointing and torch.is_grad_enabled()
    for block in blocks:
        x = checkpoint(block, x, use_reentrant=False) if use_checkpoint else block(x)
    return x


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of a (B, C, H, W) map (NAFNet style, eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mean) / sqrt(var + eps) * weight + bias over channels. Centred once and the affine
        in one addcmul: fewer full-size passes over x than the textbook form (faster on CPU, where
        they are memory bound), the same result to float rounding."""
        centred = x - x.mean(1, keepdim=True)
        var = (centred * centred).mean(1, keepdim=True)
        return torch.addcmul(self.bias.view(1, -1, 1, 1), centred * (var + self.eps).rsqrt(),
                             self.weight.view(1, -1, 1, 1))
