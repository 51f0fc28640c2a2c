"""What a denoiser costs besides time: parameters and floating-point operations.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products; one
multiply-add = 2 FLOPs; normalisation, activations and element-wise operations are not counted). GMACs =
GFLOPs / 2, the unit most denoising papers call "FLOPs".
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def gflops(fn: Callable[[torch.Tensor], object], x: torch.Tensor) -> float:
    """GFLOPs of ``fn(x)`` without gradients. One torch thread meanwhile: the counter sees only its own thread,
    and CPU inference spreads chunks over one worker thread per torch thread (ops/batching.py)."""
    from torch.utils.flop_counter import FlopCounterMode

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            fn(x)
    finally:
        torch.set_num_threads(threads)
    return counter.get_total_flops() / 1e9


def network_cost(network: dict, size: int = 256) -> dict:
    """{params, gflops, gmacs} of one forward of the network option entry (``{type, preset, ...}``) on one
    ``size`` x ``size`` image with the channels of its first convolution."""
    from amcfd.archs import build_arch

    net = build_arch(network).eval()
    first = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    channels = first.in_channels if first is not None else 3
    flops = gflops(net, torch.rand(1, channels, size, size))
    return {"params": parameter_count(net), "gflops": flops, "gmacs": flops / 2}
