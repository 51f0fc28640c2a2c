"""Parameters, FLOPs and speed of the networks, as a table.

    python scripts/model_stats.py --arch Restormer --preset published small
    python scripts/model_stats.py -opt options/train/demo.yml
    python scripts/model_stats.py --all --preset small            # every architecture

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` for one image of --size x --size
(convolutions, matmuls: 1 multiply-add = 2 FLOPs; normalisation, activations and element-wise ops
are not counted). GMACs = GFLOPs / 2, the unit most denoising papers call "FLOPs". Times are the
median of --repeats forward passes (after one warm-up) in eval mode without gradients, batch 1,
on CPU (torch's current thread count) and, if present, CUDA (fp32).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amcfd.archs import build_arch, preset_names  # noqa: E402
from amcfd.registry import ARCHS, ConfigError  # noqa: E402


def input_channels(net: nn.Module) -> int:
    """Channels of the first convolution (every network here starts with one)."""
    first = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise ValueError(f"{type(net).__name__} has no Conv2d: pass --channels")
    return first.in_channels


def count_flops(net: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    return counter.get_total_flops()


def median_ms(net: nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median wall time of one forward pass in milliseconds (one warm-up run first)."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    times = []
    with torch.no_grad():
        for i in range(repeats + 1):
            sync()
            start = time.perf_counter()
            net(x)
            sync()
            if i > 0:
                times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def network_stats(cfg: dict, size: int, repeats: int, cpu: bool, cuda: bool, channels: int | None) -> dict:
    net = build_arch(cfg).eval()
    x = torch.rand(1, channels or input_channels(net), size, size)
    flops = count_flops(net, x)
    row = {"params": sum(p.numel() for p in net.parameters()), "gflops": flops / 1e9, "gmacs": flops / 2e9,
           "cpu_ms": median_ms(net, x, repeats) if cpu else None, "cuda_ms": None}
    if cuda and torch.cuda.is_available():
        row["cuda_ms"] = median_ms(net.cuda(), x.cuda(), max(repeats, 10))
    return row


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(rows: list[tuple[str, str, dict]], size: int) -> None:
    header = ["network", "preset / config", "params", "params (M)", f"GFLOPs@{size}", f"GMACs@{size}",
              "CPU ms", "CUDA ms"]
    lines = [[name, label, f"{r['params']:,}", _fmt(r["params"] / 1e6, 3), _fmt(r["gflops"], 2),
              _fmt(r["gmacs"], 2), _fmt(r["cpu_ms"], 1), _fmt(r["cuda_ms"], 2)] for name, label, r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in lines:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |")


def _network_from_options(path: str) -> dict:
    try:
        from amcfd.options import load_options
    except ImportError:  # the options loader is optional for this script
        import yaml

        def load_options(p):
            with open(p) as f:
                return yaml.safe_load(f)
    opt = load_options(path)
    if not isinstance(opt.get("network"), dict):
        raise ConfigError(f"{path} has no 'network' entry")
    return opt["network"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-opt", "--opt", help="option file: its 'network' entry")
    source.add_argument("--arch", nargs="+", help="registered architecture name(s)")
    source.add_argument("--all", action="store_true", help="every registered architecture")
    parser.add_argument("--preset", nargs="+", default=None,
                        help="preset name(s) for --arch/--all (default: published)")
    parser.add_argument("--size", type=int, default=256, help="square input size (default 256)")
    parser.add_argument("--repeats", type=int, default=5, help="timed forward passes (median)")
    parser.add_argument("--channels", type=int, default=None, help="input channels (default: the net's)")
    parser.add_argument("--no-cpu", action="store_true", help="skip CPU timing (slow for large nets)")
    parser.add_argument("--no-cuda", action="store_true", help="skip CUDA timing")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    try:
        if args.opt:
            cfg = _network_from_options(args.opt)
            jobs = [(cfg["type"], cfg.get("preset") or Path(args.opt).name, cfg)]
        else:
            names = ARCHS.names() if args.all else args.arch
            names = [n for n in names if not (args.all and n == "Deam")]  # alias of DeamNet
            presets = args.preset or ["published"]
            jobs = [(n, p, {"type": n, "preset": p}) for n in names for p in presets
                    if not args.all or p in preset_names(n)]
        rows = []
        for name, label, cfg in jobs:
            rows.append((name, label, network_stats(cfg, args.size, args.repeats, not args.no_cpu,
                                                    not args.no_cuda, args.channels)))
            print(f"measured {name} ({label})", file=sys.stderr, flush=True)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cuda = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, CUDA: {cuda}, "
          f"input 1x{args.size}x{args.size}, median of {args.repeats}")
    print_table(rows, args.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
