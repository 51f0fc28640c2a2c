"""The non-flat-find texture map: ~0 on flat (even mildly noisy) areas, ~1 at edges, frozen and batched."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from amcfd.ops.texture import MEASURES, texture_map


def step_edge(b: int = 1, c: int = 3, size: int = 32, height: float = 0.2) -> torch.Tensor:
    x = torch.full((b, c, size, size), 0.4)
    x[..., size // 2:] += height                                         # vertical edge between columns 15 | 16
    return x


def smoothed_noise(std: float, size: int = 64) -> torch.Tensor:
    noisy = 0.5 + std * torch.randn(2, 3, size, size)
    return F.avg_pool2d(F.pad(noisy, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


@pytest.mark.parametrize("measure", MEASURES)
def test_flat_areas_map_to_zero(measure):
    assert texture_map(torch.full((1, 3, 16, 16), 0.3), measure=measure).max() == 0
    assert texture_map(smoothed_noise(0.003), measure=measure).max() < 0.05
    assert texture_map(0.5 + 0.005 * torch.randn(1, 1, 128, 128), measure=measure).max() < 0.05


@pytest.mark.parametrize("measure", MEASURES)
def test_step_edge_maps_to_one_beside_it_and_zero_far_away(measure):
    alpha = texture_map(step_edge(), measure=measure)[0, 0]              # (H, W)
    assert alpha[:, 15:17].min() > 0.95                                   # both sides of the edge
    assert alpha[:, 14:18].min() > 0.95                                   # radius-1 dilation widens it
    assert alpha[:, :12].max() < 0.05 and alpha[:, 20:].max() < 0.05


def test_shape_range_dtype_and_batch():
    x = torch.cat([step_edge(), torch.rand(1, 3, 32, 32), torch.full((1, 3, 32, 32), 0.5)]).double()
    alpha = texture_map(x)
    assert alpha.shape == (3, 1, 32, 32) and alpha.dtype == torch.float64
    assert alpha.min() >= 0 and alpha.max() <= 1
    for i in range(3):
        assert torch.equal(alpha[i:i + 1], texture_map(x[i:i + 1]))
    assert alpha[2].max() == 0 and alpha[1].mean() > 0.5                 # flat vs random texture


def test_is_frozen_and_options_change_it():
    x = step_edge().requires_grad_(True)
    alpha = texture_map(x)
    assert not alpha.requires_grad
    narrow = texture_map(step_edge(), radius=0)[0, 0]
    assert narrow[:, 15:17].min() > 0.95 and narrow[:, 14].max() == 0   # no dilation: only the two pixels
    gray = texture_map(step_edge(c=1), luma="rec601")
    assert torch.equal(gray, texture_map(step_edge(c=1)))
    assert texture_map(step_edge(height=0.05), low=0.0, high=0.5).max() < 0.05


def test_rejects_bad_options():
    x = step_edge()
    with pytest.raises(ValueError, match="measure"):
        texture_map(x, measure="laplace")
    with pytest.raises(ValueError, match="low < high"):
        texture_map(x, low=0.1, high=0.05)
    with pytest.raises(ValueError, match="radius"):
        texture_map(x, radius=-1)
    with pytest.raises(ValueError, match="rec601"):
        texture_map(torch.rand(1, 2, 8, 8), luma="rec601")
    with pytest.raises(ValueError, match="B, C, H, W"):
        texture_map(x[0])
