"""How long a training run takes at the least, measured before it starts.

A few training steps of the run's own network and method on a random batch of its crop size (after one
warm-up step) give the seconds per step; a teacher's inference on a random tile gives its seconds per pixel,
for the targets a distillation stage computes before training. Data loading and the noise analysis are left
out: the estimates are lower bounds, used to refuse budgets that cannot train anything useful.
"""
from __future__ import annotations

import contextlib
import copy
import time
from pathlib import Path

import torch

from amcfd.archs import build_arch, input_channels
from amcfd.engine.inference import build_method

PROBE_STEPS = 3
PROBE_TILE = 128
MIN_STEP_SHARE, MIN_STEPS = 0.1, 20     # the least a stage must train: this share of its total_iter, at least this
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


def pixels(photos: list[Path], per_photo: int) -> int:
    """Pixels of the photos, at most ``per_photo`` each, from their headers; a header that cannot be read counts
    as ``per_photo`` (the budget estimate errs on the safe side)."""
    from PIL import Image

    total = 0
    for path in photos:
        size = per_photo
        with contextlib.suppress(Exception), Image.open(path) as image:
            size = min(per_photo, image.size[0] * image.size[1])
        total += size
    return total


def minimum_budget(pipeline, photos: list[Path], device: torch.device) -> tuple[float, str]:
    """(the smallest budget of ``pipeline`` (engine/pipeline.py) with which every stage it trains anew reaches
    ``MIN_STEP_SHARE`` of its total_iter (at least ``MIN_STEPS``), which stage limits it). A stage with a teacher
    adds the teacher's targets: 1 + len(aug_modes) passes over ``photos`` (at most ``max_pixels`` each)."""
    from amcfd.options import DEFAULTS

    need, why = 0.0, ""
    for planned in pipeline.to_train():
        opt, stage = planned.options, planned.stage
        if stage.share is None:
            continue
        steps = max(MIN_STEPS, int(MIN_STEP_SHARE * opt["train"].get("total_iter", DEFAULTS["train"]["total_iter"])))
        seconds, extra = steps * step_seconds(opt, device), ""
        if stage.teacher:
            teacher = pipeline.plan[stage.teacher].options
            inference = {**teacher, "method": {**teacher["method"], **opt["method"]["teacher"].get("method", {})}}
            per_photo = opt["datasets"]["train"].get("max_pixels") or 1 << 62
            target_seconds = ((1 + len(opt["method"].get("aug_modes") or [])) * pixels(photos, per_photo)
                              * inference_seconds_per_pixel(inference, device))
            seconds += target_seconds
            extra = f" and {target_seconds / 60:.1f} min of teacher targets"
        minutes = seconds / 60 / stage.share
        if minutes > need:
            need, why = minutes, f"the {stage.name} stage needs {steps} steps{extra}"
    return need, why
