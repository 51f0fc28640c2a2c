"""Inference speed of the AMSNet teacher pipelines vs the single-pass AM-CFD student, as a table.

    python scripts/bench_speed.py                                     # both pairs, 256 and 512, the photo
    python scripts/bench_speed.py --pairs cpu --sizes 256 --reps 3 --skip-photo   # a quick look
    python scripts/bench_speed.py --write-docs                        # also the section in docs/results.md
    python scripts/bench_speed.py --pairs cpu --sizes 512 --skip-photo --schedules batched looped one-forward

Pairs (teacher network / student network; random weights: the weights do not change the speed):
  paper: Restormer ``published`` (AMSNet's default denoiser) / NAFNet ``amcfd_student`` (20.1M, the paper's
         NAFNet student size);
  cpu:   NAFNetBase ``small`` (the demo's teacher, options/train/demo.yml) / NAFNet ``cpu_student``.
Teacher variants, all the ``AMSNet`` method's ``denoise`` (amcfd/methods/amsnet.py), batched as --schedules says:
  B   = P_2 multi-mask inference (k = 2 complementary masks, pd_test --pd-test, default 2 as the paper;
        the demo itself infers at P_1);
  B-E = B + R^3 (8 copies, p = 0.16, each copy through the multi-mask pipeline at stride 1);
  P-E = the fine-tuned AMSNet-P with R^3: the same computation as B-E on other weights, timed separately
        (a second network, other random weights) unless --skip-pe.
Student: one forward of the student network (eval mode, no gradients).
Schedules (--schedules, default batched) of the teacher's forwards, each a row of its own ("B looped", ...):
  batched      the default: branches and R^3 copies as one batch, in automatic chunks (about 128x128 pixels of
               images on CPU) run by one worker thread per torch thread (amcfd/ops/batching.py);
  one-worker   the same chunks, one after another;
  one-forward  every branch and copy in a single forward;
  looped       one forward per branch and per R^3 copy, on all torch threads.
--tune-malloc keeps freed memory in glibc's heap (no trimming, one arena): large activations are reused instead of
unmapped and page-faulted back in at every forward, which changes CPU times and the schedules' ratios.
Sizes: --sizes (square, batch 1) for both pairs; plus a 4000x3000 "photo" for the cpu pair only (student
and teacher B-E), denoised in --tile x --tile tiles (--tile-overlap, default 32) by
``amcfd.engine.inference.tiled_denoise`` (unless --skip-photo; the teacher takes minutes on CPU).
Devices: CPU always (torch's thread count, or --threads), CUDA too when available (fp32, synchronized).
Timing: one warm-up call of every pipeline (P-E excepted: B-E's warms up the same kernels), then --reps
repetitions; in each repetition every teacher variant runs right after a student forward, so the ratio
teacher / student is also taken per repetition ("paired ratio": its median; it is robust to the load of a
shared machine changing between repetitions).
"ratio" = median teacher ms / median student ms (all the case's student runs). Cases whose warm-up teacher
took over --slow-after seconds, and the photo, use --reps-slow repetitions instead. Times: wall-clock ms per image.
Threads: on a CPU shared with other jobs, use --threads 1: spin-waiting OpenMP threads get descheduled, and
2-thread forwards measured up to 100x slower than 1-thread ones there (the load average is recorded).
Output: the table on stdout, in OUT/speed.md and OUT/speed.json (OUT = --out, default results/bench_speed;
both rewritten after every case, "complete": false until the run ends);
with --write-docs also the section "Speed: AMSNet teacher vs single-pass student (<pairs>)" of docs/results.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amcfd.analysis.results_doc import git_commit, machine_description, update_section  # noqa: E402
from amcfd.archs import build_arch  # noqa: E402
from amcfd.engine.inference import tiled_denoise  # noqa: E402
from amcfd.engine.memory import keep_freed_memory  # noqa: E402
from amcfd.methods.amsnet import AMSNet  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PAIRS = {
    "paper": ({"type": "Restormer", "preset": "published"}, {"type": "NAFNet", "preset": "amcfd_student"}),
    "cpu": ({"type": "NAFNetBase", "preset": "small"}, {"type": "NAFNet", "preset": "cpu_student"}),
}
PHOTO = (3000, 4000)  # H, W of a 12-megapixel photo
PHOTO_PAIRS = ("cpu",)
SCHEDULES = {"batched": {}, "one-worker": {"workers": 1}, "one-forward": {"chunk_size": 0},
             "looped": {"batched": False, "chunk_size": 0}}        # AMSNet's batching options
DOC_TITLE = "Speed: AMSNet teacher vs single-pass student"
COLUMNS = ["device", "pair", "size", "teacher variant", "teacher ms", "student ms", "ratio", "paired ratio"]


def _params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def build_nets(pair: str, device: torch.device, with_pe: bool, seed: int) -> dict:
    """Teacher (and a second teacher for P-E) and student networks of a pair, eval mode, on device."""
    teacher_cfg, student_cfg = PAIRS[pair]
    nets = {}
    for i, (name, cfg) in enumerate((("teacher", teacher_cfg), ("student", student_cfg), ("teacher_p", teacher_cfg))):
        if name == "teacher_p" and not with_pe:
            continue
        torch.manual_seed(seed + i)  # random weights; P-E's differ from B's
        nets[name] = build_arch(cfg).to(device).eval()
    return nets


def teacher_pipelines(nets: dict, pd_test: int, variants: tuple[str, ...],
                      schedules: tuple[str, ...] = ("batched",)) -> dict[str, Callable]:
    """{row name: denoise function} of the AMSNet teacher variants asked for (B, B-E, P-E) under each batching
    schedule; the default schedule's rows are named after the variant alone, the others 'B looped' etc."""
    settings = {"B": ("teacher", {"r3": False}), "B-E": ("teacher", {"r3": True, "r3_copies": 8}),
                "P-E": ("teacher_p", {"r3": True, "r3_copies": 8})}
    pipelines = {}
    for schedule in schedules:
        for v in variants:
            net, kwargs = settings[v]
            name = v if schedule == "batched" else f"{v} {schedule}"
            pipelines[name] = AMSNet(nets[net], pd_test=pd_test, **kwargs, **SCHEDULES[schedule]).eval().denoise
    return pipelines


def tiled(fn: Callable, tile: int, overlap: int) -> Callable:
    """fn applied in overlapping tiles (``amcfd.engine.inference.tiled_denoise``)."""
    return lambda img: tiled_denoise(fn, img, tile, overlap)


def _timer(device: torch.device) -> Callable[[Callable, torch.Tensor], float]:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run(fn: Callable, x: torch.Tensor) -> float:
        sync()
        start = time.perf_counter()
        fn(x)
        sync()
        return 1000 * (time.perf_counter() - start)

    return run


@torch.no_grad()
def time_case(teachers: dict[str, Callable], student: Callable, x: torch.Tensor, reps: int, reps_slow: int,
              slow_after_s: float, warm_x: torch.Tensor | None = None, slow: bool = False,
              no_warmup: tuple[str, ...] = (), log: Callable[[str], None] = print) -> dict[str, dict]:
    """Warm up on ``warm_x`` (default x), then interleave: per repetition, per variant, student then teacher.

    Variants in ``no_warmup`` are not warmed up (P-E: the same operations and shapes as B-E, which warms
    up the same kernels; its warm-up would cost minutes for big teachers on CPU).

    Returns {variant: {teacher_ms, student_ms, ratio, paired_ratio, paired_ratio_min, reps,
    teacher_all_ms, student_all_ms}}: student_ms is the median of all the case's student runs (the same
    for every variant), student_all_ms the runs paired with this variant's.
    """
    run = _timer(x.device)
    warm = x if warm_x is None else warm_x
    run(student, warm)
    warm_ms = {v: run(fn, warm) for v, fn in teachers.items() if v not in no_warmup}
    n = reps_slow if slow or max(warm_ms.values(), default=0) > 1000 * slow_after_s else reps
    t_ms: dict[str, list[float]] = {v: [] for v in teachers}
    s_ms: dict[str, list[float]] = {v: [] for v in teachers}
    for rep in range(n):
        for v, fn in teachers.items():
            s_ms[v].append(run(student, x))
            t_ms[v].append(run(fn, x))
        log(f"    rep {rep + 1}/{n}: " + ", ".join(f"{v} {t_ms[v][-1]:.0f} ms / student {s_ms[v][-1]:.1f} ms"
                                                 for v in teachers))
    result = {}
    student_t = statistics.median([t for ts in s_ms.values() for t in ts])  # all the case's student runs
    for v in teachers:
        teacher = statistics.median(t_ms[v])
        paired = [t / s for t, s in zip(t_ms[v], s_ms[v])]
        result[v] = {"teacher_ms": teacher, "student_ms": student_t, "ratio": teacher / student_t,
                     "paired_ratio": statistics.median(paired), "paired_ratio_min": min(paired), "reps": n,
                     "teacher_all_ms": t_ms[v], "student_all_ms": s_ms[v]}
    return result


def markdown_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = [r["device"], r["pair"], r["size"], r["variant"], f"{r['teacher_ms']:.1f}", f"{r['student_ms']:.1f}",
                 f"{r['ratio']:.1f}", f"{r['paired_ratio']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _loadavg() -> str:
    """1/5/15-minute load averages (a busy shared CPU makes multi-thread timings unreliable)."""
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except (AttributeError, OSError):
        return "unknown"


def devices(names: list[str]) -> list[torch.device]:
    out = []
    for name in names:
        if name == "cuda" and not torch.cuda.is_available():
            print("CUDA not available: CPU only", flush=True)
            continue
        out.append(torch.device(name))
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", nargs="+", choices=sorted(PAIRS), default=["paper", "cpu"])
    p.add_argument("--sizes", nargs="+", type=int, default=[256, 512], help="square image sizes (batch 1)")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions (median)")
    p.add_argument("--reps-slow", type=int, default=2, help="repetitions for the photo and slow cases")
    p.add_argument("--slow-after", type=float, default=20.0,
                   help="seconds: a warm-up teacher slower than this makes the case use --reps-slow")
    p.add_argument("--skip-photo", action="store_true", help="skip the tiled 4000x3000 photo (cpu pair)")
    p.add_argument("--skip-pe", action="store_true", help="skip P-E (the same computation as B-E)")
    p.add_argument("--warmup-size", type=int, default=0,
                   help="warm up on an N x N image instead of the case's size (0); for teachers that take "
                        "minutes per image on CPU (the paper pair), where a full-size warm-up doubles the run")
    p.add_argument("--tile", type=int, default=512, help="tile size for the photo (overlap --tile-overlap)")
    p.add_argument("--tile-overlap", type=int, default=32)
    p.add_argument("--pd-test", type=int, default=2, help="PD stride of the teacher's inference (paper: 2)")
    p.add_argument("--schedules", nargs="+", choices=list(SCHEDULES), default=["batched"],
                   help="batching schedules of the teacher's forwards (default: batched, the engine's)")
    p.add_argument("--tune-malloc", action="store_true", help="glibc: reuse freed memory instead of returning it")
    p.add_argument("--devices", nargs="+", choices=["cpu", "cuda"], default=["cpu", "cuda"],
                   help="cpu and, when available, cuda (default both)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO / "results" / "bench_speed",
                   help="folder for speed.md and speed.json")
    p.add_argument("--write-docs", action="store_true",
                   help=f"write the section '{DOC_TITLE} (<pairs>)' of docs/results.md")
    p.add_argument("--docs-path", type=Path, default=Path("docs/results.md"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name, value, least in (("--sizes", min(args.sizes), 1), ("--reps", args.reps, 1),
                               ("--reps-slow", args.reps_slow, 1), ("--pd-test", args.pd_test, 1),
                               ("--threads", args.threads, 1), ("--tile", args.tile, 0),
                               ("--tile-overlap", args.tile_overlap, 0), ("--warmup-size", args.warmup_size, 0)):
        if value is not None and value < least:
            p.error(f"{name} must be at least {least}, got {value}")
    return args


def write_outputs(rows: list[dict], meta: dict, out: Path, complete: bool) -> str:
    """OUT/speed.json and OUT/speed.md with the rows so far (rewritten after every case, so a run that is
    stopped keeps what it measured; ``complete`` false until the end). Returns the notes line."""
    load_after = _loadavg()
    notes = (f"Teacher ms / student ms per image, median of the repetitions (column reps in speed.json); "
             f"paired ratio = median of per-repetition ratios. Random weights; torch CPU threads "
             f"{meta['threads']} (load average {meta['loadavg_before']} before, {load_after} after); "
             f"B = P_{meta['args']['pd_test']} multi-mask, B-E/P-E = with R^3 (8 copies).")
    if not complete:
        notes += " Incomplete run: the cases not listed were not measured."
    report = {**meta, "complete": complete, "total_sec": time.perf_counter() - meta["started"],
              "loadavg_after": load_after, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.json").write_text(json.dumps({k: v for k, v in report.items() if k != "started"}, indent=2))
    (out / "speed.md").write_text(f"{meta['command']}\n\n{meta['machine']}\n\n{markdown_table(rows)}\n\n{notes}\n")
    return notes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.tune_malloc and not keep_freed_memory(single_arena=True):
        raise RuntimeError("--tune-malloc needs glibc's mallopt")
    if args.threads:
        torch.set_num_threads(args.threads)
    command = shlex.join(["python", "scripts/bench_speed.py", *(sys.argv[1:] if argv is None else argv)])
    machine = machine_description()
    meta = {"command": command, "commit": git_commit(), "machine": machine, "threads": torch.get_num_threads(),
            "loadavg_before": _loadavg(), "started": time.perf_counter(),
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    print(f"{machine}\ntorch CPU threads: {meta['threads']}; load average {meta['loadavg_before']}", flush=True)
    variants = ("B", "B-E") + (() if args.skip_pe else ("P-E",))
    rows: list[dict] = []

    def add_rows(cases: dict, **fields) -> None:
        rows.extend({**fields, "variant": v, **r} for v, r in cases.items())
        write_outputs(rows, meta, args.out, complete=False)

    for device in devices(args.devices):
        for pair in args.pairs:
            nets = build_nets(pair, device, not args.skip_pe, args.seed)
            teachers = teacher_pipelines(nets, args.pd_test, variants, tuple(args.schedules))
            student = nets["student"]
            info = {"teacher_net": PAIRS[pair][0], "student_net": PAIRS[pair][1],
                    "teacher_params": _params(nets["teacher"]), "student_params": _params(student)}
            print(f"{device.type} {pair}: teacher {PAIRS[pair][0]['type']} ({info['teacher_params']:,} params), "
                  f"student {PAIRS[pair][1]['type']} ({info['student_params']:,} params)", flush=True)
            gen = torch.Generator().manual_seed(args.seed)
            for size in args.sizes:
                x = torch.rand(1, 3, size, size, generator=gen).to(device)
                print(f"  {size}x{size}", flush=True)
                warm_x = x[..., :args.warmup_size, :args.warmup_size] if args.warmup_size else None
                cases = time_case(teachers, student, x, args.reps, args.reps_slow, args.slow_after, warm_x=warm_x,
                                  no_warmup=tuple(t for t in teachers if t.startswith("P-E") and "B-E" in variants))
                add_rows(cases, device=device.type, pair=pair, size=f"{size}x{size}", **info)
            if pair in PHOTO_PAIRS and not args.skip_photo:
                h, w = PHOTO
                x = torch.rand(1, 3, h, w, generator=gen).to(device)
                tile, overlap = args.tile, args.tile_overlap
                print(f"  photo {w}x{h}, tiles {tile} (overlap {overlap})", flush=True)
                photo_teacher = {name: tiled(fn, tile, overlap) for name, fn in teachers.items()
                                 if name.split()[0] == "B-E"}
                photo_student = tiled(student, tile, overlap)
                warm_x = x[..., :min(tile, h), :min(tile, w)] if tile > 0 else x
                cases = time_case(photo_teacher, photo_student, x, args.reps, args.reps_slow, args.slow_after,
                                  warm_x=warm_x, slow=True)
                add_rows(cases, device=device.type, pair=pair, size=f"{w}x{h} tiled {tile}", **info)
            del nets, teachers, student
            if device.type == "cuda":
                torch.cuda.empty_cache()

    table = markdown_table(rows)
    print("\n" + table, flush=True)
    notes = write_outputs(rows, meta, args.out, complete=True)
    print(f"wrote {args.out / 'speed.md'} and {args.out / 'speed.json'}")
    if args.write_docs:
        title = f"{DOC_TITLE} ({' and '.join(args.pairs)} pair{'s' if len(args.pairs) > 1 else ''})"
        path = update_section(title, f"{table}\n\n{notes}", command, args.docs_path)
        print(f"wrote section '{title}' of {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
