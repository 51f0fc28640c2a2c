"""Peak memory (RSS) of tiled inference on a 12-megapixel photo on the CPU, against a whole-image forward.

    OMP_NUM_THREADS=1 python scripts/bench_tiled_memory.py              # the four cases below, about a minute
    python scripts/bench_tiled_memory.py --arch NAFNet --preset cpu_student --tile 256

Each case runs in a fresh Python process (``sys.executable`` on this file, ``--case``), which reports its peak
resident set size, ``resource.getrusage(RUSAGE_SELF).ru_maxrss``: everything the process touched (torch's
allocator, OpenMP buffers, the interpreter), not only the tensors tracemalloc or torch would count. The network
(--arch/--preset, default NAFNetBase ``small``, random weights) runs a plain forward in eval mode under
``torch.no_grad``; the input is a random RGB float32 image (1, 3, H, W).
Cases:
  one tile   a single --tile x --tile forward: what one tile costs;
  tiled      ``amcfd.engine.inference.tiled_denoise`` (--tile, --overlap) on --small (2000x1500) and on --photo
             (4000x3000): four times the tiles, the same per-tile cost;
  whole      one forward of the whole --crop (1000x750) image, for scale.
Columns (MiB): tiles (forwards), input, new buffers (the output, and tiled_denoise's HxW weight map), RSS before
(the process after imports, network and input), peak RSS, added (peak - before), network (added - new buffers:
what the forwards themselves took at their peak), and seconds. Bounded memory: "network" stays about one tile's
cost however many tiles, while a whole-image forward's grows with the image.
glibc's malloc raises its mmap threshold as large blocks are freed, so with many tiles freed tensors stay in the
heap, fragmented, and "network" creeps up by some tens of MiB; --malloc-threshold 131072 (MALLOC_MMAP_THRESHOLD_
for the children) fixes the threshold, and "network" is then the same for 20, 63 or 130 tiles.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIB = 2 ** 20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB   # Linux: kilobytes


def run_case(case: dict) -> dict:
    """In the child process: build the network and input, denoise, report RSS."""
    sys.path.insert(0, str(REPO))
    import torch

    from amcfd.archs import build_arch
    from amcfd.engine.inference import tiled_denoise

    torch.manual_seed(0)
    net = build_arch({"type": case["arch"], "preset": case["preset"]}).eval()
    h, w = case["size"]
    x = torch.rand(1, 3, h, w)
    calls = []

    def forward(t):
        calls.append(t.shape)
        return net(t)

    before = peak_rss_mib()
    start = time.perf_counter()
    with torch.no_grad():
        y = tiled_denoise(forward, x, case["tile"], case["overlap"]) if case["tile"] else forward(x)
    seconds = time.perf_counter() - start
    assert y.shape == x.shape
    buffers = x.numel() * 4 * (1 + 1 / 3) if case["tile"] else x.numel() * 4         # output (+ weight map)
    return {"tiles": len(calls), "input": x.numel() * 4 / MIB, "buffers": buffers / MIB, "before": before,
            "peak": peak_rss_mib(),
            "seconds": seconds}


def measure(case: dict, malloc_threshold: int | None = None) -> dict:
    """One case in a fresh process (its peak RSS is its own)."""
    env = dict(os.environ)
    if malloc_threshold is not None:
        env["MALLOC_MMAP_THRESHOLD_"] = str(malloc_threshold)
    out = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)], capture_output=True, text=True,
                         check=False, env=env)
    if out.returncode != 0:
        raise SystemExit(f"case {case['name']} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def size(text: str) -> tuple[int, int]:
    """'4000x3000' (W x H) -> (H, W)."""
    w, h = (int(v) for v in text.lower().split("x"))
    if min(w, h) < 1:
        raise ValueError(text)
    return h, w


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="NAFNetBase")
    p.add_argument("--preset", default="small")
    p.add_argument("--photo", type=size, default=size("4000x3000"), help="W x H of the photo (default 4000x3000)")
    p.add_argument("--small", type=size, default=size("2000x1500"), help="W x H of the smaller tiled image")
    p.add_argument("--crop", type=size, default=size("1000x750"), help="W x H of the whole-image forward")
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--malloc-threshold", type=int, help="glibc MALLOC_MMAP_THRESHOLD_ (bytes) for the cases")
    p.add_argument("--case", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.tile < 1 or not 0 <= args.overlap < args.tile:
        p.error(f"--tile must be at least 1 and --overlap from 0 to tile - 1, got {args.tile} and {args.overlap}")
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return 0
    net = {"arch": args.arch, "preset": args.preset, "overlap": args.overlap}
    cases = [
        {"name": f"one tile {args.tile}x{args.tile}", "size": (args.tile, args.tile), "tile": 0},
        {"name": f"tiled {args.small[1]}x{args.small[0]}", "size": args.small, "tile": args.tile},
        {"name": f"tiled {args.photo[1]}x{args.photo[0]}", "size": args.photo, "tile": args.tile},
        {"name": f"whole {args.crop[1]}x{args.crop[0]}", "size": args.crop, "tile": 0},
    ]
    malloc = f"; MALLOC_MMAP_THRESHOLD_={args.malloc_threshold}" if args.malloc_threshold is not None else ""
    print(f"{args.arch} {args.preset}, tile {args.tile}, overlap {args.overlap}, float32, CPU; RSS in MiB{malloc}")
    columns = ("tiles", "input", "new buffers", "before", "peak", "added", "network", "s")
    print(f"{'case':<20}" + "".join(f"{c:>12}" for c in columns), flush=True)
    for case in cases:
        r = measure({**net, **case}, args.malloc_threshold)
        added = r["peak"] - r["before"]
        values = (r["tiles"], r["input"], r["buffers"], r["before"], r["peak"], added, added - r["buffers"])
        print(f"{case['name']:<20}" + "".join(f"{v:>12.0f}" for v in values) + f"{r['seconds']:>12.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
