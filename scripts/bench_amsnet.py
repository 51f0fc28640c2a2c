"""AMSNet inference speed on CPU: the multi-mask pipeline batched vs looped (the engine's own AMSNet.denoise).

    python scripts/bench_amsnet.py                      # ~2 min on 2 cores
    python scripts/bench_amsnet.py --tune-malloc        # with glibc's freed memory kept

ms per 512x512 image of the multi-mask pipeline (B, = P) and with R^3 (B-E, = P-E), for
``batched_all`` (all branches / copies in one forward), ``batched_1worker`` (the automatic chunks,
on CPU one image per forward for images of 128x128 and up, one after another), ``batched_auto``
(the default: those chunks run by one worker thread per torch thread, see amcfd/ops/batching.py),
optionally ``--chunk-size`` images per forward, and ``looped`` (a Python loop of single-image
forwards, one per branch and per R^3 copy, using all torch threads; the authors loop over the
branches and batch their 8 R^3 copies). A warm-up run, then the configurations
interleaved, median of ``--reps``, with the median minor page faults per image. The weights do not
change the speed. ``--tune-malloc`` keeps freed memory in glibc's heap (fewer page faults).
Quality is measured through train.py and valid.py only: scripts/benchmark.py, scripts/bench_photos.py.

Threads: torch's default (one per core) unless ``--threads``. Run it on an otherwise idle machine: on
a shared CPU, OpenMP threads that spin-wait for each other are descheduled, which made 2-thread runs
up to 100x slower than 1-thread ones while other jobs ran.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amcfd.archs import build_arch  # noqa: E402
from amcfd.methods.amsnet import AMSNet  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@torch.no_grad()
def time_inference(net: torch.nn.Module, size: int, reps: int, chunk: int | None, r3_copies: int) -> dict:
    """Median ms per (1, 3, size, size) image for each configuration, runs interleaved."""
    configs = {"batched_all": dict(batched=True, chunk_size=0),        # every branch / copy in one forward
               "batched_1worker": dict(batched=True, chunk_size=None, workers=1),  # auto chunks, one at a time
               "batched_auto": dict(batched=True, chunk_size=None),    # the default: auto chunks and workers
               "looped": dict(batched=False, chunk_size=0)}            # one forward per branch and R3 copy
    if chunk is not None:
        configs[f"batched_chunk{chunk}"] = dict(batched=True, chunk_size=chunk)
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    table = {}
    for variant, r3 in (("B", False), ("B-E", True)):
        methods = {name: AMSNet(net, r3=r3, r3_copies=r3_copies, **cfg).eval() for name, cfg in configs.items()}
        times: dict[str, list[float]] = {name: [] for name in methods}
        faults: dict[str, list[int]] = {name: [] for name in methods}
        for method in methods.values():                               # warm-up
            method.denoise(image)
        for _ in range(reps):
            for name, method in methods.items():
                faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                start = time.perf_counter()
                method.denoise(image)
                times[name].append(1000 * (time.perf_counter() - start))
                faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before)
        row = {f"{name}_ms": statistics.median(ts) for name, ts in times.items()}
        for name in methods:
            if name.startswith("batched"):
                row[f"speedup_{name}_vs_looped"] = row["looped_ms"] / row[f"{name}_ms"]
        # the same ratio within each repetition (back-to-back runs share the machine's load): median, min
        paired = [loop / batch for loop, batch in zip(times["looped"], times["batched_auto"])]
        row["paired_speedup_median"], row["paired_speedup_min"] = statistics.median(paired), min(paired)
        row.update({f"{name}_page_faults": statistics.median(fs) for name, fs in faults.items()})
        table[variant] = row
        print(f"  {variant}: " + ", ".join(f"{k} {v:.0f}" if k.endswith(("_ms", "_faults")) else f"{k} {v:.2f}x"
                                           for k, v in row.items()), flush=True)
    return table


def tune_glibc_malloc() -> None:
    """glibc only: keep freed memory in one arena (mmap threshold 1 GiB, no trimming, one arena), so
    large activations are reused instead of unmapped and page-faulted back in at every forward."""
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
    ok = (libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, (1 << 31) - 1)
          and libc.mallopt(m_arena_max, 1))
    if not ok:
        raise RuntimeError("mallopt refused the settings")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="NAFNetBase", help="registered architecture (default NAFNetBase)")
    p.add_argument("--preset", default="small", help="its preset (default small)")
    p.add_argument("--r3-copies", type=int, default=8, help="R3 copies T")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, one per core)")
    p.add_argument("--time-size", type=int, default=512, help="image size for the timing")
    p.add_argument("--reps", type=int, default=7, help="timed repetitions per configuration")
    p.add_argument("--chunk-size", type=int, default=None, help="also time batched with N images per forward")
    p.add_argument("--tune-malloc", action="store_true",
                   help="glibc: reuse freed memory instead of returning it (see tune_glibc_malloc)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO / "results" / "bench_amsnet.json")
    args = p.parse_args(argv)

    if args.tune_malloc:
        tune_glibc_malloc()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    report: dict = {"command": " ".join(["python", "scripts/bench_amsnet.py", *(argv or sys.argv[1:])]),
                    "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                    "torch": torch.__version__, "threads": torch.get_num_threads()}

    net = build_arch({"type": args.arch, "preset": args.preset})
    report["params"] = sum(q.numel() for q in net.parameters())
    print(f"{args.arch} ({args.preset}): {report['params']:,} parameters, {torch.get_num_threads()} thread(s)",
          flush=True)
    print(f"inference ms per {args.time_size}x{args.time_size} image (median of {args.reps}):", flush=True)
    report["timing_ms"] = time_inference(net.eval(), args.time_size, args.reps, args.chunk_size, args.r3_copies)

    report["total_sec"] = time.perf_counter() - started
    print(f"total {report['total_sec']:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
