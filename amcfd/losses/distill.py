"""Distillation losses: pixel norms and the AM-CFD structure-aware coarse loss."""
from __future__ import annotations

import torch

NORMS = ("l1", "l2", "charbonnier")


def pixel_loss(output: torch.Tensor, target: torch.Tensor, norm: str = "l1", eps: float = 1e-3) -> torch.Tensor:
    """Mean over elements of |d| (l1), d^2 (l2) or sqrt(d^2 + eps^2) (charbonnier), d = output - target."""
    d = output - target
    if norm == "l1":
        return d.abs().mean()
    if norm == "l2":
        return (d * d).mean()
    if norm == "charbonnier":
        return torch.sqrt(d * d + eps * eps).mean()
    raise ValueError(f"unknown loss norm {norm!r}; choose one of {NORMS}")


def structure_aware_terms(student: torch.Tensor, bilateral: torch.Tensor, target: torch.Tensor,
                          alpha: torch.Tensor, bf_norm: str = "l1", ga_norm: str = "l1") -> tuple:
    """One r-term of L_CD (AM-CFD coarse distillation):

    L_bf(alpha * S(I_N), alpha * BF(I_N)) and L_ga((1 - alpha) * S(I_N), (1 - alpha) * I_DN^r),
    i.e. the bilateral-filtered noisy image where the teacher output has texture (alpha ~ 1) and the
    teacher where it is flat. ``alpha``: (B, 1, H, W) in [0, 1], broadcast over channels.
    """
    flat = 1 - alpha
    return (pixel_loss(alpha * student, alpha * bilateral, bf_norm),
            pixel_loss(flat * student, flat * target, ga_norm))
