"""Basic losses: the AMSNet mask loss (Eq. 4), the smoothness prior L_p (Eq. 9), plain L1.

Each is a function (used by the methods) and a registered ``nn.Module`` with a ``loss_weight``
(for option files: ``{type: SmoothnessLoss, loss_weight: 0.01}``).
"""
from __future__ import annotations

import torch
from torch import nn

from amcfd.registry import LOSSES


def masked_l1(output: torch.Tensor, target: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """Mean |output - target| over the hidden positions only (AMSNet Eq. 4).

    ``hidden``: bool, broadcastable to ``output`` (e.g. (N, 1, h, w) for per-pixel masks); the mean
    is over hidden *elements*, as the authors' ``L1Loss()(x[~m], y[~m])`` with channel-repeated
    masks. No hidden position gives 0 (still connected to the graph).
    """
    hidden = hidden.expand_as(output)
    count = hidden.sum()
    if count == 0:
        return output.sum() * 0.0
    diff = torch.where(hidden, output - target, torch.zeros((), dtype=output.dtype, device=output.device))
    return diff.abs().sum() / count


def smoothness_tv(image: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Isotropic total variation L_p (AMSNet Eq. 9), averaged over positions and channels.

    L_p = mean over (b, c, i < H-1, j < W-1) of sqrt((I[i+1,j]-I[i,j])^2 + (I[i,j+1]-I[i,j])^2 + eps).
    The paper writes a sum; the mean keeps lambda independent of the crop size and on the same
    scale as the mean L1 term of Eq. 10. ``eps`` makes the gradient finite where the image is
    flat (d sqrt(u)/du is infinite at u = 0, so plain sqrt gives NaN gradients there); it adds at
    most sqrt(eps) = 1e-3 to the value and changes no gradient by more than that relative amount.
    """
    if image.dim() != 4 or image.shape[-1] < 2 or image.shape[-2] < 2:
        raise ValueError(f"smoothness loss needs a (B, C, H>=2, W>=2) image, got {tuple(image.shape)}")
    if eps <= 0:
        raise ValueError(f"smoothness loss eps must be > 0 (sqrt has no gradient at 0), got {eps!r}")
    dy = image[..., 1:, :-1] - image[..., :-1, :-1]   # (B, C, H-1, W-1)
    dx = image[..., :-1, 1:] - image[..., :-1, :-1]   # (B, C, H-1, W-1)
    return torch.sqrt(dy * dy + dx * dx + eps).mean()


def l1(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Plain mean absolute error."""
    return (output - target).abs().mean()


@LOSSES.register()
class MaskedL1Loss(nn.Module):
    """loss_weight * masked_l1(output, target, hidden) (AMSNet Eq. 4)."""

    def __init__(self, loss_weight: float = 1.0):
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, output: torch.Tensor, target: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        return self.loss_weight * masked_l1(output, target, hidden)


@LOSSES.register()
class SmoothnessLoss(nn.Module):
    """loss_weight * isotropic TV (AMSNet Eq. 9); ``eps`` inside the square root, see smoothness_tv."""

    def __init__(self, loss_weight: float = 1.0, eps: float = 1e-6):
        super().__init__()
        self.loss_weight = loss_weight
        self.eps = eps

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.loss_weight * smoothness_tv(image, self.eps)


@LOSSES.register()
class L1Loss(nn.Module):
    """loss_weight * mean |output - target|."""

    def __init__(self, loss_weight: float = 1.0):
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss_weight * l1(output, target)
