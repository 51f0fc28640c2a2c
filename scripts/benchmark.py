"""Every method on one set of real noise, trained the same way: a table, a JSON and a quality-vs-time plot.

Every quality number of docs/results.md comes from here, with a preset of options/bench/ (its commands: the top
of docs/results.md):

    python scripts/benchmark.py -opt options/bench/real.yml                    # CPU preset: CC15, small networks
    python scripts/benchmark.py -opt options/bench/real_gpu.yml                # GPU preset: the papers' networks, SIDD
    python scripts/benchmark.py -opt options/bench/real.yml --set data.root=../shared/data/polyu data.images=30 \\
        name=polyu30_cpu
    python scripts/benchmark.py -opt options/bench/bilateral.yml --set data=synthetic name=bilateral_synthetic
    python scripts/benchmark.py -opt options/bench/real.yml --force AT-BSN     # retrain one stage (and its users)
    python scripts/benchmark.py -opt options/bench/real.yml --only AT-BSN "AT-BSN(D)"   # some entries only
    python scripts/benchmark.py -opt options/bench/real.yml --write-docs             # and docs/results.md

Each trained method is a normal experiment (train.py's trainer) on the set's noisy images only, with the
preset's shared budget; every row is scored as valid.py scores it (amcfd/analysis/benchmark.py). Reports:
<work>/<name>.md, .json and .png (PSNR against ms per image, log scale, the Pareto front drawn). A method that
fails is reported with its error and the others still run; a rerun keeps finished stages and rows whose
options did not change (--force NAME... or --force-all redoes them).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    from amcfd.engine.logger import TqdmHandler, log, setup_console_logging

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("-opt", required=True, help="benchmark option file (options/bench/*.yml)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="overrides of the benchmark options")
    p.add_argument("--force", nargs="+", default=[], metavar="NAME", help="redo these stages or rows")
    p.add_argument("--force-all", action="store_true", help="redo everything")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME",
                   help="run only these entries of 'methods' (with the entries they train from or distil)")
    p.add_argument("--write-docs", action="store_true", help="also write the section of docs/results.md")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--verbose", action="store_true", help="the trainers' log lines on the console too")
    args = p.parse_args(argv)
    setup_console_logging()
    console = [h for h in log.handlers if isinstance(h, TqdmHandler)]
    levels = [h.level for h in console]
    if not args.verbose:                         # the experiments' train.log files keep every line
        for handler in console:
            handler.setLevel(logging.WARNING)
    try:
        return run(args, argv)
    finally:
        for handler, level in zip(console, levels):
            handler.setLevel(level)


def run(args, argv) -> int:
    from amcfd.analysis.benchmark import Benchmark, load_benchmark
    from amcfd.analysis.report import write_reports
    from amcfd.analysis.results_doc import benchmark_section, command_line
    from amcfd.registry import ConfigError

    try:
        cfg = load_benchmark(args.opt, args.set, only=args.only)
        bench = Benchmark(cfg, force=True if args.force_all else args.force, progress=not args.quiet)
        rows = bench.run()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    command = command_line(__file__, argv)
    out = write_reports(cfg, rows, bench.state.get("stages", {}), command)
    print(out["table"])
    print(f"wrote {out['md']}, {out['json']}, {out['png']}")
    if args.write_docs:
        benchmark_section(cfg["name"], out["header"], out["table"], out["png"], command)
    failed = [k for k, v in rows.items() if "failed" in v]
    if failed:
        print(f"{len(failed)} row(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed and len(failed) == len(rows) - 1 else 0


if __name__ == "__main__":
    sys.exit(main())
