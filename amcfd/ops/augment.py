"""The 8 flips/rotations of a square (the dihedral group D4) on the last two dims, and their inverses.

``mode`` in 0..7 encodes ``rotations = mode % 4`` quarter turns counter-clockwise (``torch.rot90``
on dims (-2, -1)) followed, when ``mode >= 4``, by a vertical flip (dim -2). Mode 0 is the
identity. ``augment_inverse(augment(x, m), m) == x`` exactly for every mode; modes with an odd
number of rotations swap H and W. Used for training augmentation and self-ensembles.
"""
from __future__ import annotations

import torch

NUM_MODES = 8


def _check_mode(mode: int) -> int:
    mode = int(mode)
    if not 0 <= mode < NUM_MODES:
        raise ValueError(f"augment mode must be in 0..7, got {mode}")
    return mode


def augment(x: torch.Tensor, mode: int) -> torch.Tensor:
    """Apply dihedral transform ``mode`` to a (..., H, W) tensor."""
    mode = _check_mode(mode)
    out = torch.rot90(x, mode % 4, dims=(-2, -1))
    return out.flip(-2) if mode >= 4 else out


def augment_inverse(x: torch.Tensor, mode: int) -> torch.Tensor:
    """Undo ``augment(., mode)``: flip back first, then rotate the other way."""
    mode = _check_mode(mode)
    out = x.flip(-2) if mode >= 4 else x
    return torch.rot90(out, -(mode % 4), dims=(-2, -1))


def random_mode(generator: torch.Generator | None = None) -> int:
    """A uniformly drawn mode from torch's RNG (seeded per DataLoader worker by torch)."""
    return int(torch.randint(NUM_MODES, (1,), generator=generator))


def random_modes(modes: list[int], n: int) -> list[int]:
    """``n`` modes drawn uniformly (with replacement) from ``modes``, with torch's global RNG."""
    return [modes[i] for i in torch.randint(len(modes), (n,)).tolist()]


def apply_augmented(fn, x: torch.Tensor, modes: list[int]) -> torch.Tensor:
    """A_b^-1(fn(A_b(x_b))) for every image b of (B, C, H, W) ``x`` with its own mode ``modes[b]``.

    Images that share a mode go through ``fn`` in one call (the self-ensemble target of AM-CFD).
    """
    if len(modes) != x.shape[0]:
        raise ValueError(f"apply_augmented: {len(modes)} modes for a batch of {x.shape[0]}")
    out = None
    for mode in sorted(set(modes)):
        idx = [b for b, m in enumerate(modes) if m == mode]
        y = augment_inverse(fn(augment(x[idx], mode)), mode)
        if out is None:
            out = y.new_empty((x.shape[0], *y.shape[1:]))
        out[idx] = y
    return out
