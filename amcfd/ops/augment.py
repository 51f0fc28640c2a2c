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
