"""The 8 dihedral transforms: distinct, exactly invertible, shapes as expected."""
from __future__ import annotations

import pytest
import torch

from amcfd.ops.augment import NUM_MODES, augment, augment_inverse, random_mode


@pytest.mark.parametrize("mode", range(NUM_MODES))
def test_inverse_round_trip_is_exact(mode):
    x = torch.rand(2, 3, 5, 7)
    y = augment(x, mode)
    assert y.shape == ((2, 3, 7, 5) if mode % 2 else (2, 3, 5, 7))
    assert torch.equal(augment_inverse(y, mode), x)
    assert torch.equal(augment(augment_inverse(x, mode), mode), x)


def test_eight_modes_are_the_eight_distinct_symmetries():
    x = torch.arange(16.0).view(4, 4)
    outputs = {tuple(augment(x, m).flatten().tolist()) for m in range(NUM_MODES)}
    assert len(outputs) == 8
    assert torch.equal(augment(x, 0), x)
    assert torch.equal(augment(x, 4), x.flip(0))
    assert torch.equal(augment(x, 1), torch.rot90(x, 1))


def test_works_on_plain_images_and_rejects_bad_modes():
    x = torch.rand(4, 6)
    assert augment(x, 3).shape == (6, 4)
    with pytest.raises(ValueError, match="0..7"):
        augment(x, 8)
    g = torch.Generator().manual_seed(1)
    modes = [random_mode(g) for _ in range(200)]
    assert set(modes) == set(range(8))
