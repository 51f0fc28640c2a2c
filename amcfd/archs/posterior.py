"""A denoiser that also gives its uncertainty and learns the noise: what a posterior-mean teacher needs.

Laine, Karras, Lehtinen and Aila, "High-Quality Self-Supervised Deep Image Denoising" (NeurIPS 2019): a network
that never sees a pixel predicts a prior for it from its surroundings, a mean mu and a variance sigma_p^2; the
noise variance sigma_n^2 is learned with it, from the likelihood of the noisy pixel; the output is the posterior
mean (amcfd/losses/posterior.py). Here:

    mu              = net(x)                              any registered denoiser (``net``: its network entry)
    log sigma_p^2   = head([x, mu])                       a small CNN, per pixel and channel
    sigma_n^2(c, I) = softplus(v_c) at ``knots`` intensities I in [0, 1], linear between them, of the intensity mu:
                      per channel, as a function of intensity (the shape of noise/model.py's sigma_c(mu))

``forward`` returns [mu, log sigma_p^2] (2C channels); ``noise_variance(mu)`` gives sigma_n^2 per pixel.
The AMSNet method uses it with ``posterior: true`` (its masks hide the pixel from both the network and the head).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from amcfd.registry import ARCHS, ConfigError


@ARCHS.register()
class Posterior(nn.Module):
    """``net`` (a network entry, e.g. {type: NAFNetBase, preset: small}) with a prior-variance head of
    ``head_channels`` and a learned noise curve of ``knots`` points per channel, starting at ``init_level``
    (noise std on [0, 1]).

    Presets: ``published`` (AMSNet's published NAFNetBase inside) and ``small`` (its CPU size)."""

    PRESETS = {"published": dict(net={"type": "NAFNetBase", "preset": "published"}),
               "small": dict(net={"type": "NAFNetBase", "preset": "small"})}

    def __init__(self, net: dict | None = None, head_channels: int = 16, knots: int = 8, init_level: float = 0.02):
        super().__init__()
        from amcfd.archs import build_arch, input_channels

        if not isinstance(net, dict) or "type" not in net:
            raise ConfigError(f"option 'network.net' must be a network entry with a 'type', got {net!r}")
        if net["type"] == "Posterior":
            raise ConfigError("option 'network.net' cannot itself be a Posterior network")
        if not isinstance(knots, int) or knots < 2:
            raise ConfigError(f"option 'network.knots' must be an int >= 2, got {knots!r}")
        if not init_level > 0:
            raise ConfigError(f"option 'network.init_level' must be > 0, got {init_level!r}")
        self.net = build_arch(net)
        c = self.channels = input_channels(self.net)
        self.head = nn.Sequential(nn.Conv2d(2 * c, head_channels, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(head_channels, head_channels, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(head_channels, c, 3, padding=1))
        start = math.log(math.expm1(init_level ** 2))               # softplus^-1 of the initial variance
        self.noise_curve = nn.Parameter(torch.full((c, knots), start))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.constant_(self.head[-1].bias, 2 * math.log(init_level))   # the prior starts as wide as the noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = self.net(x)
        return torch.cat([mu, self.head(torch.cat([x, mu], 1))], 1)

    def noise_variance(self, intensity: torch.Tensor) -> torch.Tensor:
        """sigma_n^2(c, I) of a (B, C, H, W) intensity map: the curve's knots interpolated linearly, held flat
        outside [0, 1]."""
        var = F.softplus(self.noise_curve)                          # (C, K)
        pos = intensity.clamp(0, 1) * (var.shape[1] - 1)
        low = pos.floor().clamp(max=var.shape[1] - 2)
        frac, low = pos - low, low.long()
        out = []
        for c in range(intensity.shape[1]):
            row, i = var[min(c, var.shape[0] - 1)], low[:, c]
            out.append(row[i] + (row[i + 1] - row[i]) * frac[:, c])
        return torch.stack(out, 1)

    @torch.no_grad()
    def image_noise_level(self, image: torch.Tensor, smooth: int = 5) -> float:
        """The learned noise std of a (C, H, W) or (B, C, H, W) image: the root of the mean of sigma_n^2 over its
        pixels and channels, at the intensities of the image box-filtered over ``smooth`` px (noise averaged out)."""
        x = (image if image.dim() == 4 else image[None]).to(self.noise_curve)
        intensity = F.avg_pool2d(x, smooth, 1, smooth // 2, count_include_pad=False)
        return float(self.noise_variance(intensity).mean().sqrt())
