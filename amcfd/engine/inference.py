"""Whole-image inference: tiled denoising, building a denoiser from a checkpoint, evaluation."""
from __future__ import annotations

import contextlib
import copy
import logging
import re
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from amcfd.archs import build_arch, load_weights
from amcfd.data.loader import eval_loader
from amcfd.engine import dist
from amcfd.engine.checkpoint import latest_checkpoint, load_checkpoint
from amcfd.engine.precision import amp_dtype
from amcfd.metrics import metric_label
from amcfd.noise.auto import AUTO
from amcfd.ops.tiling import tiled_denoise  # noqa: F401  (engine.inference.tiled_denoise)
from amcfd.options import DEFAULTS, merge, split_loader_keys
from amcfd.registry import DATASETS, METHODS, METRICS, ConfigError

log = logging.getLogger("amcfd")


def select_device(name: str) -> torch.device:
    """``device`` option -> torch.device: auto | cpu | cuda | cuda:N (one-line errors for anything else)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not re.fullmatch(r"cuda(:\d+)?", str(name)):
        raise ConfigError(f"option 'device' must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"option 'device: {name}' but CUDA is not available on this machine")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"option 'device: {name}' but this machine has {torch.cuda.device_count()} "
                              "CUDA device(s)")
    return torch.device(name)


def build_method(opt: dict, net: nn.Module) -> nn.Module:
    return METHODS.build(opt["method"], net, where="method")


def build_dataset(cfg: dict, where: str):
    dataset_cfg, loader = split_loader_keys(cfg)
    return DATASETS.build(dataset_cfg, where=where), loader


def resolve_tile_batch(tile_batch: int, device: torch.device) -> int:
    """Tiles per forward: ``tile_batch``, or for 0 the automatic choice: 1 on CPU (one small forward at a time
    is the fastest there, ops/batching.py), 4 on accelerators."""
    return tile_batch if tile_batch > 0 else (1 if device.type == "cpu" else 4)


@torch.no_grad()
def accelerate(net: nn.Module, channels_last: bool = False, compile: bool = False) -> nn.Module:
    """The inference fast path of one network, in place (its state_dict and attributes unchanged):
    ``channels_last`` keeps weights and 4-D inputs channels-last; ``compile`` runs ``torch.compile`` on the
    forward, falling back to eager (one warning) where compilation fails, e.g. without a C++ compiler."""
    if channels_last:
        net.to(memory_format=torch.channels_last)
    if not (channels_last or compile):
        return net
    eager = net.forward
    state = {"fn": None}
    if compile:
        try:
            state["fn"] = torch.compile(eager)
        except Exception as exc:                   # noqa: BLE001 - torch.compile unavailable here
            log.warning("test.compile: torch.compile unavailable (%s); running eager", exc)

    def forward(x, *args, **kwargs):
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if state["fn"] is not None:
            try:
                return state["fn"](x, *args, **kwargs)
            except Exception as exc:               # noqa: BLE001 - compilation failed: eager from now on
                log.warning("test.compile: compiled forward failed (%s); running eager",
                            str(exc).splitlines()[0][:200])
                state["fn"] = None
        return eager(x, *args, **kwargs)

    net.forward = forward
    return net


def load_network_weights(net: nn.Module, ckpt: dict, strict: bool = True, use_ema: bool = True,
                         source: str = "checkpoint") -> str:
    """Load ``network_ema`` (if present and wanted) or ``network`` into net; returns which.
    Weights that do not fit the network are a one-line ConfigError naming ``source``."""
    key = "network_ema" if use_ema and ckpt.get("network_ema") is not None else "network"
    try:
        load_weights(net, ckpt[key], strict=strict)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return key


@contextlib.contextmanager
def seeded(seed: int, device: torch.device):
    """Random draws inside (masks, R^3 replacements) start from ``seed``, so an image's result does
    not depend on what was denoised before it; the global RNG state is restored afterwards."""
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def build_denoiser(opt: dict, device: torch.device | None = None):
    """The trained method from ``path.pretrain_network`` (a checkpoint, or a models/ folder: its newest
    iteration checkpoint; network/method from the options, or from
    the checkpoint when the options leave them out). Returns (method, denoise_fn); denoise_fn draws
    each image's masks from option ``seed`` (see ``seeded``)."""
    device = device or select_device(opt["device"])
    if (opt.get("method") or {}).get("type") == "Classical":
        return classical_denoiser(opt, device)
    path = opt["path"]["pretrain_network"]
    if not path:
        raise ConfigError("option 'path.pretrain_network' must name the checkpoint to use")
    if Path(path).is_dir():                 # an experiment's models/ folder: its newest iteration checkpoint
        newest = latest_checkpoint(Path(path))
        if newest is None:
            raise ConfigError(f"option 'path.pretrain_network': no iter_*.pth checkpoint in {path}")
        path = str(newest)
    ckpt = load_checkpoint(path)
    saved = ckpt.get("opt") or {}
    opt = copy.deepcopy(opt)
    opt["method"] = {k: v for k, v in opt["method"].items() if v != AUTO}   # 'auto': the value training chose
    if not opt.get("network"):
        if not saved.get("network"):
            raise ConfigError(f"checkpoint {path} does not record its network: set option 'network'")
        opt["network"] = saved["network"]
    if "type" not in opt["method"]:         # left to the checkpoint (the default method if it has none)
        opt["method"] = {"type": saved.get("method", DEFAULTS["method"])["type"], **opt["method"]}
    if saved.get("method", {}).get("type") == opt["method"]["type"]:  # test-time keys override training's
        opt["method"] = merge(saved["method"], opt["method"])
    net = build_arch(opt["network"])
    load_network_weights(net, ckpt, strict=opt["path"]["strict_load"], use_ema=opt["path"]["use_ema"],
                         source=str(path))
    method = build_method(opt, net).to(device).eval()
    test = opt["test"]
    dtype = amp_dtype(test["amp"], device, "test.amp")
    accelerate(method.net, test["channels_last"], test["compile"])
    tile_batch = resolve_tile_batch(test["tile_batch"], device)

    def denoise_fn(noisy: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), seeded(opt["seed"], device), \
                torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = tiled_denoise(method.denoise, noisy.to(device), test["tile"], test["tile_overlap"], tile_batch)
        return out.float().clamp(0, 1)

    return method, denoise_fn


def method_device(method: nn.Module) -> torch.device:
    """The device of a method's parameters or buffers (CPU for one with neither)."""
    tensor = next(iter([*method.parameters(), *method.buffers()]), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def classical_denoiser(opt: dict, device: torch.device):
    """(method, denoise_fn) of the classical core (methods/classical.py): no checkpoint and no network; the
    filter sees each whole image (it measures the noise there, then tiles big images itself)."""
    method = build_method(opt, None).to(device).eval()

    def denoise_fn(noisy: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return method.denoise(noisy.to(device)).float().clamp(0, 1)

    return method, denoise_fn


@torch.no_grad()
def evaluate(denoise_fn: Callable, dataset, loader_opts: dict, metrics: list[str], device,
             visuals: int = 0, on_image: Callable | None = None) -> dict:
    """Mean metrics over a paired set, split across ranks and reduced.

    Returns {'n', <metric>: mean, 'sec_per_image', 'visuals': [(noisy, denoised, clean), ...],
    'per_image': {name: {<metric>: value}} (this rank's images)}.
    """
    fns = {name: METRICS.get(name, where="val.metrics") for name in metrics}
    sums = torch.zeros(len(metrics) + 2, dtype=torch.float64)  # metrics..., seconds, count
    shown, per_image = [], {}
    for item in eval_loader(dataset, loader_opts, dist.rank(), dist.world_size()):
        noisy = item["noisy"].to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        denoised = denoise_fn(noisy).clamp(0, 1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        sums[-2] += time.perf_counter() - start
        sums[-1] += 1
        if "clean" in item:
            clean = item["clean"].to(device)
            values = {m: fn(denoised, clean) for m, fn in fns.items()}          # (B,) each
            for i, v in enumerate(values.values()):
                sums[i] += float(v.sum())
            names = item.get("name", [str(int(sums[-1]) - 1)])
            for b, name in enumerate(names if isinstance(names, (list, tuple)) else [names]):
                per_image[str(name)] = {m: float(v.reshape(-1)[b]) for m, v in values.items()}
            if len(shown) < visuals:
                shown.append((noisy[0].cpu(), denoised[0].cpu(), clean[0].cpu()))
        elif metrics:
            raise ConfigError(f"validation set '{getattr(dataset, 'name', type(dataset).__name__)}' has no "
                              "clean images; metrics need pairs")
        if on_image is not None:
            on_image(item, denoised)
    sums = dist.all_reduce_sum(sums)
    n = int(sums[-1])
    result = {"n": n, **{m: float(sums[i]) / max(n, 1) for i, m in enumerate(metrics)},
              "sec_per_image": float(sums[-2]) / max(n, 1), "visuals": shown, "per_image": per_image}
    return result


def format_table(results: dict[str, dict], metrics: list[str]) -> str:
    """Markdown table: one row per set."""
    head = ["set", "n"] + [metric_label(m) for m in metrics] + ["ms / image"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        cells = [name, str(r["n"])]
        cells += [f"{r[m]:.2f}" if m == "psnr" else f"{r[m]:.4f}" for m in metrics]
        cells.append(f"{1000 * r['sec_per_image']:.1f}")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)
