"""Training speed of an option file: steps/s, images/s, the data-wait fraction and peak memory.

    python scripts/profile_step.py -opt options/train/photos.yml --set datasets.train.root=../shared/data/cc15/noisy
    python scripts/profile_step.py -opt options/train/demo.yml --steps 50 --trace results/profile   # + torch.profiler

The trainer of train.py runs in a temporary experiments folder (your experiments are not touched), without
validation or checkpoints: ``--warmup`` steps first (not timed), then ``--steps`` timed steps. "data wait" is the
time the loop waited for the next batch (the trainer's own breakdown, also in every train.log); with
``--trace DIR`` the timed steps are profiled and DIR/trace.json opens in Perfetto or chrome://tracing.
Peak memory: the accelerator's peak allocation on CUDA, else the process's peak resident size.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def profile(opt_file: str, overrides: list[str], steps: int, warmup: int, trace: Path | None) -> dict:
    import torch

    from amcfd.engine.trainer import Trainer
    from amcfd.options import load_options

    with tempfile.TemporaryDirectory(prefix="amcfd_profile_") as tmp:
        opt = load_options(opt_file, [*overrides, f"path.experiments_root={tmp}", "val.val_freq=0",
                                      f"logger.print_freq={10 ** 9}", f"logger.save_checkpoint_freq={10 ** 9}",
                                      "logger.use_tb_logger=false", "logger.progress_bar=false",
                                      f"train.total_iter={10 ** 9}", "train.max_minutes=0"], phase="train")
        opt["datasets"] = {"train": opt["datasets"]["train"]}       # no validation sets
        trainer = Trainer(opt)
        if warmup:
            trainer.train(stop_at=warmup)
        cuda = trainer.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(trainer.device)
        profiler = contextlib.nullcontext()
        if trace is not None:
            from torch.profiler import ProfilerActivity
            from torch.profiler import profile as torch_profile

            profiler = torch_profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else []))
        start = time.perf_counter()
        with profiler as prof:
            trainer.train(stop_at=warmup + steps)
        seconds = time.perf_counter() - start
        batch = opt["datasets"]["train"].get("batch_size", 1) * trainer.world
        report = {"option_file": opt_file, "overrides": overrides, "device": str(trainer.device),
                  "threads": torch.get_num_threads(), "steps": steps, "warmup": warmup, "batch": batch,
                  "steps_per_s": steps / seconds, "images_per_s": steps * batch / seconds,
                  "ms_per_step": trainer.timing.get("ms_per_step"),
                  "data_wait_fraction": trainer.timing.get("data_wait_fraction"),
                  "peak_memory_mib": (torch.cuda.max_memory_allocated(trainer.device) if cuda else
                                      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2 ** 20,
                  "peak_memory_kind": "CUDA allocated" if cuda else "process resident (CPU)"}
        if trace is not None:
            trace.mkdir(parents=True, exist_ok=True)
            prof.export_chrome_trace(str(trace / "trace.json"))
            table = prof.key_averages().table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total",
                                              row_limit=15)
            (trace / "ops.txt").write_text(table + "\n")
            report["trace"] = str(trace / "trace.json")
            print(table)
    return report


def main(argv=None) -> int:
    from amcfd.registry import ConfigError

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("-opt", required=True, help="training option file")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="option overrides")
    p.add_argument("--steps", type=int, default=30, help="timed steps (default 30)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    p.add_argument("--trace", type=Path, default=None, help="also write a torch.profiler trace into this folder")
    p.add_argument("--json", type=Path, default=None, help="write the report here too")
    p.add_argument("--write-docs", action="store_true", help="also the section of docs/results.md")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be >= 1 and --warmup >= 0")
    try:
        report = profile(args.opt, args.set, args.steps, args.warmup, args.trace)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{report['steps_per_s']:.2f} steps/s, {report['images_per_s']:.1f} images/s, "
          f"{report['ms_per_step']:.1f} ms per step, data wait {100 * report['data_wait_fraction']:.1f}%, "
          f"peak memory {report['peak_memory_mib']:.0f} MiB ({report['peak_memory_kind']}), device "
          f"{report['device']}, {report['threads']} threads")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.write_docs:
        from amcfd.analysis.results_doc import command_line, update_section

        body = ("| steps/s | images/s | ms / step | data wait | peak memory (MiB) | device, threads |\n"
                "|---|---|---|---|---|---|\n"
                f"| {report['steps_per_s']:.2f} | {report['images_per_s']:.1f} | {report['ms_per_step']:.1f} | "
                f"{100 * report['data_wait_fraction']:.1f}% | {report['peak_memory_mib']:.0f} "
                f"({report['peak_memory_kind']}) | {report['device']}, {report['threads']} |\n\n"
                f"{args.steps} timed steps after {args.warmup} warm-up steps.")
        update_section(f"Training step profile: {Path(args.opt).name}"
                       + (f" ({' '.join(args.set)})" if args.set else ""), body, command_line(__file__, argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
