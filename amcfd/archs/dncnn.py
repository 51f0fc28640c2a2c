"""DnCNN (Zhang et al., TIP 2017) as in KAIR, the version AMSNet ships (``codes/arches/DNCNN.py``).

Residual learning: the body predicts the noise and the output is ``x - body(x)``. The layers sit in
one flat ``nn.Sequential`` named ``model`` (ReLUs included), so the keys are the authors':
``model.0`` head conv, ``model.2`` conv, ``model.3`` BatchNorm, ... KAIR's BatchNorm settings are kept
(eps 1e-4, momentum 0.9: PyTorch's convention, so running stats follow the latest batch closely).
Fully convolutional: any input size.
"""
from __future__ import annotations

import torch
from torch import nn

from amcfd.registry import ARCHS, ConfigError

_NORMS = {"B": lambda c: nn.BatchNorm2d(c, momentum=0.9, eps=1e-4, affine=True),
          "I": lambda c: nn.InstanceNorm2d(c, affine=True)}
_ACTS = {"R": lambda: nn.ReLU(inplace=True), "r": lambda: nn.ReLU(inplace=False),
         "L": lambda: nn.LeakyReLU(0.2, inplace=True), "l": lambda: nn.LeakyReLU(0.2, inplace=False)}


def _layers(mode: str, in_ch: int, out_ch: int) -> list[nn.Module]:
    """KAIR's mode string: 'C' conv 3x3, 'B'/'I' batch/instance norm, 'R'/'L' (Leaky)ReLU."""
    layers: list[nn.Module] = []
    for letter in mode:
        if letter == "C":
            layers.append(nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=True))
        elif letter in _NORMS:
            layers.append(_NORMS[letter](out_ch))
        elif letter in _ACTS:
            layers.append(_ACTS[letter]())
        else:
            raise ConfigError(f"unknown letter '{letter}' in DnCNN act_mode (use B, I, R, r, L, l; e.g. 'BR')")
    return layers


@ARCHS.register()
class DnCNN(nn.Module):
    """x - body(x); body = conv+act, (nb-2) x [conv, norm, act], conv (nb conv layers in all).

    Presets: ``published`` = the class defaults AMSNet's code keeps (grey: in/out 1, nc 64, nb 17;
    557,057 parameters); ``color`` = the same depth for RGB (in/out 3); ``small`` for CPU demos.
    """

    PRESETS = {
        "published": dict(in_nc=1, out_nc=1, nc=64, nb=17, act_mode="BR"),
        "color": dict(in_nc=3, out_nc=3, nc=64, nb=17, act_mode="BR"),
        "small": dict(in_nc=3, out_nc=3, nc=16, nb=6, act_mode="BR"),
    }

    def __init__(self, in_nc: int = 1, out_nc: int = 1, nc: int = 64, nb: int = 17, act_mode: str = "BR"):
        super().__init__()
        if not act_mode or act_mode[-1] not in _ACTS:
            raise ConfigError(f"DnCNN act_mode '{act_mode}' must end with an activation (R or L), e.g. 'BR'")
        if nb < 2:
            raise ConfigError(f"DnCNN nb (number of conv layers) must be at least 2, got {nb}")
        if in_nc != out_nc:
            raise ConfigError(f"DnCNN subtracts its output from the input: in_nc {in_nc} != out_nc {out_nc}")
        layers = _layers("C" + act_mode[-1], in_nc, nc)
        for _ in range(nb - 2):
            layers += _layers("C" + act_mode, nc, nc)
        layers += _layers("C", nc, out_nc)
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.model(x)
