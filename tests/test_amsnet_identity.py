"""Identity-mapping ablation (AMSNet paper, Table 3), in miniature.

The same unconstrained network (3x3 convs and a global residual, no blind spot) is trained on
noisy images only, with spatially correlated noise:
* with the AMSNet loss (PD + mask, Eq. 4) it learns to denoise: PSNR rises well above the input's;
* with plain L1 to its own input (no mask) it learns the identity: PSNR stays at the noisy level.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from amcfd.methods.amsnet import amsnet_denoise, single_mask_loss

STRIDE = 2     # noise correlated with the next pixel only, so P_2 decorrelates it
SIGMA = 0.15
STEPS = 250


def smooth_images(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Sums of low-frequency oriented sinusoids in [0, 1]: (n, 3, size, size)."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    images = torch.zeros(n, 3, size, size)
    for _ in range(4):
        freq = torch.rand(n, 3, 1, 1, generator=gen) * 2 + 0.5
        phase, angle = (torch.rand(2, n, 3, 1, 1, generator=gen) * 2 * math.pi).unbind(0)
        images += torch.sin(math.pi * freq * (xx * angle.cos() + yy * angle.sin()) + phase)
    return (images / 8 + 0.5).clamp(0, 1)


def correlated_noise(shape, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """White noise averaged over 2x2 windows (unit variance, correlated with right/bottom neighbours)."""
    white = torch.randn(shape, generator=gen)
    kernel = torch.full((shape[1], 1, 2, 2), 0.5)
    return sigma * F.conv2d(F.pad(white, (0, 1, 0, 1), mode="reflect"), kernel, groups=shape[1])


class ResidualConvNet(nn.Module):
    def __init__(self, channels: int = 24, depth: int = 5):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
        self.body = nn.Sequential(*layers, nn.Conv2d(channels, 3, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / F.mse_loss(a.clamp(0, 1), b)))


def train(loss_fn, noisy: torch.Tensor) -> nn.Module:
    torch.manual_seed(0)
    net = ResidualConvNet()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(STEPS):
        batch = noisy[torch.randint(0, len(noisy), (8,))]
        loss = loss_fn(net, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


@pytest.mark.slow
def test_amsnet_loss_denoises_where_plain_l1_learns_the_identity():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convs: one thread is as fast and never oversubscribes a shared CPU
    try:
        check_identity_ablation()
    finally:
        torch.set_num_threads(threads)


def check_identity_ablation():
    gen = torch.Generator().manual_seed(1)
    clean = smooth_images(16, 40, gen)
    noisy = clean + correlated_noise(clean.shape, SIGMA, gen)
    test_clean = smooth_images(4, 40, gen)
    test_noisy = test_clean + correlated_noise(test_clean.shape, SIGMA, gen)
    noisy_psnr = psnr(test_noisy, test_clean)

    amsnet = train(lambda net, x: single_mask_loss(net, x, STRIDE), noisy)
    plain = train(lambda net, x: (net(x) - x).abs().mean(), noisy)
    with torch.no_grad():
        amsnet_psnr = psnr(amsnet_denoise(amsnet, test_noisy, STRIDE), test_clean)
        plain_psnr = psnr(plain(test_noisy), test_clean)

    assert amsnet_psnr > noisy_psnr + 3.0, (noisy_psnr, amsnet_psnr)
    assert abs(plain_psnr - noisy_psnr) < 0.5, (noisy_psnr, plain_psnr)
    print(f"PSNR noisy {noisy_psnr:.2f}, AMSNet loss {amsnet_psnr:.2f}, plain L1 {plain_psnr:.2f}")
