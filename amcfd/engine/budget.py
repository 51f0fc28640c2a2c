"""How long a training run takes at the least, measured before it starts.

A few training steps of the run's own network and method on a random batch of its crop size (after one
warm-up step) give the seconds per step; a teacher's inference on a random tile gives its seconds per pixel,
for the targets a distillation stage computes before training. Data loading and the noise analysis are left
out: the estimates are lower bounds, used to refuse budgets that cannot train anything useful.
"""
from __future__ import annotations

import copy
import time

import torch

from amcfd.archs import build_arch, input_channels
from amcfd.engine.inference import build_method

PROBE_STEPS = 3
PROBE_TILE = 128
AUTO_STAND_INS = {"pd_train": 2, "pd_test": 2, "recharge": False}   # for 'auto' options, whose values come later


def _timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _method_options(method: dict) -> dict:
    return {k: AUTO_STAND_INS.get(k, v) if v == "auto" else v for k, v in method.items()}


def step_seconds(opt: dict, device: torch.device, repeats: int = PROBE_STEPS) -> float:
    """Seconds per training step of ``opt``'s network and method (an L1 step of the network alone for a
    method that needs a teacher checkpoint), on a random batch of ``datasets.train``'s size."""
    net = build_arch(opt["network"]).to(device)
    cfg = opt["datasets"]["train"]
    x = torch.rand(cfg.get("batch_size", 1), input_channels(net), cfg["crop_size"], cfg["crop_size"], device=device)
    method_cfg = _method_options(opt["method"])
    method = None if "teacher" in method_cfg else build_method({"method": method_cfg}, net).to(device).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-6)

    def step():
        losses = method({"noisy": x}) if method is not None else {"l1": (net(x) - x).abs().mean()}
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return _timed(step, repeats)


@torch.no_grad()
def inference_seconds_per_pixel(opt: dict, device: torch.device, repeats: int = 2) -> float:
    """Seconds per pixel of the denoising pipeline of ``opt``'s network and method (e.g. a teacher's)."""
    net = build_arch(opt["network"]).to(device)
    method = build_method({"method": _method_options(copy.deepcopy(opt["method"]))}, net).to(device).eval()
    x = torch.rand(1, input_channels(net), PROBE_TILE, PROBE_TILE, device=device)

    def run():
        method.denoise(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return _timed(run, repeats) / PROBE_TILE ** 2
