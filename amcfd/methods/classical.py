"""The classical core: denoising with no training, each filter's strength set from the photo's own noise.

``Classical`` is a method without a trainable network: ``denoise`` applies one filter of ``ops/guides.py`` to
each whole image (the filter tiles big photos itself, after measuring the noise on the whole image). The same
filters are the benchmark's classical rows (``analysis/classical.py``) and the guides of coarse distillation
(``method.guide``), so the three use one implementation.

``filter: classical`` is the core's choice, ``ops.guides.classical_filter``: BM3D for light and heavy noise
alike, at ``strength`` x the image's noise level (the rule and its measurements: docs/results.md, "Benchmark:
classical_*").
"""
from __future__ import annotations

import torch
from torch import nn

from amcfd.methods.base import Method
from amcfd.ops.guides import GUIDES
from amcfd.registry import METHODS, ConfigError


@METHODS.register()
class Classical(Method):
    """A classical filter as a method (valid.py, test.py, ``amcfd-denoise --method classical``).

    Options:
      filter: a filter of ops/guides.py GUIDES: classical (the core's choice, default) | bm3d | nlm | nlm2 |
        bilateral.
      options: the filter's keyword arguments (e.g. {strength: 4} for bm3d, {strength: 1} for nlm).
    """

    def __init__(self, net: nn.Module | None = None, filter: str = "classical", options: dict | None = None):
        super().__init__(net if net is not None else nn.Identity())
        if filter not in GUIDES:
            raise ConfigError(f"option 'method.filter' must be one of {sorted(GUIDES)}, got {filter!r}")
        options = dict(options or {})
        probe = torch.rand((1, 3, 32, 32), generator=torch.Generator().manual_seed(0))
        try:                                               # names and values, before any photo is read
            GUIDES[filter](probe, **options)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"option 'method.options' of filter {filter!r}: {err}") from None
        self.filter, self.options = filter, options
        self.register_buffer("device_marker", torch.zeros(0), persistent=False)   # follows .to(device)

    def forward(self, batch: dict) -> dict:
        raise ConfigError("method 'Classical' needs no training: use it with valid.py, test.py or amcfd-denoise")

    @torch.no_grad()
    def denoise(self, noisy: torch.Tensor) -> torch.Tensor:
        return GUIDES[self.filter](noisy, **self.options)
