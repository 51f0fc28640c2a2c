"""Complementary masks of the asymmetric mask scheme (AMSNet, paper Eq. 5).

Each position gets one branch index in [0, k); branch i hides the positions whose index is i
and keeps the others. So every position is hidden in exactly one branch:
``sum_i keep_i = (k-1)`` and ``sum_i hide_i = 1`` everywhere (Eq. 5).

Masks are returned as boolean *keep* masks of shape (k, N, 1|C, h, w) (True = pixel visible
to the network); ``~keep[i]`` selects the pixels that branch i must restore.
"""
from __future__ import annotations

from typing import Sequence

import torch

MASK_MODES = ("pixel", "element", "checkerboard")


def branch_probabilities(k: int, ratio: float | Sequence[float] | None) -> list[float] | None:
    """Probability that a position is hidden in branch i.

    ``None``: uniform 1/k (the authors' ``randint``); a float p: branch 0 (the training branch)
    hides p, the other branches share 1-p equally; a list of k numbers summing to 1: explicit.
    """
    if ratio is None:
        return None
    if isinstance(ratio, (int, float)) and not isinstance(ratio, bool):
        if not 0.0 < ratio < 1.0 or k < 2:
            raise ValueError(f"mask ratio must be in (0, 1) with k >= 2, got ratio={ratio!r}, k={k}")
        return [float(ratio)] + [(1.0 - ratio) / (k - 1)] * (k - 1)
    probs = [float(p) for p in ratio]
    if len(probs) != k or any(p <= 0 for p in probs) or abs(sum(probs) - 1.0) > 1e-6:
        raise ValueError(f"mask ratio must list {k} positive numbers summing to 1, got {list(ratio)!r}")
    return probs


def branch_index(shape: Sequence[int], k: int = 2, mode: str = "pixel",
                 ratio: float | Sequence[float] | None = None,
                 generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Which branch hides each position: int64 (N, 1|C, h, w) for ``shape`` = (N, C, h, w).

    ``pixel``: one index per pixel shared across channels (the authors' rule,
    ``randint(0, k, (N, 1, h, w))``, fresh at each call, independent per sub-image);
    ``element``: one index per element; ``checkerboard``: fixed ``(row + col) % k``.
    """
    if mode not in MASK_MODES:
        raise ValueError(f"mask mode must be one of {MASK_MODES}, got {mode!r}")
    if not isinstance(k, int) or k < 2:
        raise ValueError(f"the number of complementary masks must be an int >= 2, got {k!r}")
    n, c, h, w = (int(v) for v in shape)
    if mode == "checkerboard":
        rows = torch.arange(h, device=device).view(h, 1)
        cols = torch.arange(w, device=device).view(1, w)
        return ((rows + cols) % k).expand(n, 1, h, w)
    size = (n, 1 if mode == "pixel" else c, h, w)
    probs = branch_probabilities(k, ratio)
    if probs is None:
        return torch.randint(0, k, size, generator=generator, device=device)
    u = torch.rand(size, generator=generator, device=device)
    edges = torch.tensor(probs[:-1], device=u.device).cumsum(0)
    return torch.bucketize(u, edges, right=True)


def complementary_masks(shape_or_x, k: int = 2, mode: str = "pixel",
                        ratio: float | Sequence[float] | None = None,
                        generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """k complementary keep-masks (k, N, 1|C, h, w), bool; Eq. 5 holds at every position.

    ``shape_or_x``: a (N, C, h, w) tensor (its shape and device are used) or a shape.
    """
    if isinstance(shape_or_x, torch.Tensor):
        shape, device = shape_or_x.shape, shape_or_x.device if device is None else device
    else:
        shape = tuple(shape_or_x)
    if len(shape) != 4:
        raise ValueError(f"complementary_masks expects a (N, C, h, w) shape, got {tuple(shape)}")
    index = branch_index(shape, k, mode, ratio, generator, device)        # (N, 1|C, h, w)
    branches = torch.arange(k, device=index.device).view(k, 1, 1, 1, 1)
    return index.unsqueeze(0) != branches                                 # (k, N, 1|C, h, w)


def check_masks(masks: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Validate given keep-masks against sub-images x (N, C, h, w); returns them as bool.

    Accepts (k, N, 1|C, h, w); the authors' stored masks (channel-repeated) work as they are.
    """
    if masks.dim() != 5 or masks.shape[1] != x.shape[0] or masks.shape[-2:] != x.shape[-2:] \
            or masks.shape[2] not in (1, x.shape[1]):
        raise ValueError(f"masks of shape {tuple(masks.shape)} do not fit sub-images of shape "
                         f"{tuple(x.shape)}; expected (k, {x.shape[0]}, 1|{x.shape[1]}, "
                         f"{x.shape[-2]}, {x.shape[-1]})")
    return masks.to(device=x.device, dtype=torch.bool)
