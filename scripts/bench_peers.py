"""Peer methods at the photos recipe's CPU budget, through train.py and valid.py, per image.

    python scripts/bench_peers.py --data ../shared/data/cc15
    python scripts/bench_peers.py --data ../shared/data/polyu --images 30
    python scripts/bench_peers.py --data ../shared/data/cc15 --images 2 --set train.total_iter=20   # smoke run

Each method trains with its own option file (options/train/apbsn.yml, ambsn.yml: the authors' schemes) on the
noisy images only, with the budget of options/train/photos.yml (its
``train`` section: iterations, optimiser, schedule; 120x120 crops, batch 2) and the ``small`` preset of its
network (the width 2 CPU cores train at that budget), then ``--set`` overrides. valid.py scores the final
checkpoint on the pairs with the authors' inference (AP-/AM-BSN: PD 2, AM-BSN's 0.8/0.2 blend, with and
without R3);
ms / image is valid.py's time per image on this machine. Written to ``--work``/report.json and .md, and with
``--write-docs`` to docs/results.md ("Peer methods at a CPU budget: <set>, <methods>").

scripts/benchmark.py (options/bench/real.yml) runs every method, AT-BSN and APR-RD included, at one wall-clock
budget per stage; it trains the AT-BSN family at lr 1e-3, as the shared 5e-3 makes their loss rise.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import bench_photos as recipe  # noqa: E402

from amcfd.options import load_options  # noqa: E402

R3_ROWS = {"with R3": {"r3": True}, "without R3": {"r3": False}}
# label: (option file in options/train/, evaluated rows {suffix: method overrides})
METHODS = {"AP-BSN": ("apbsn", R3_ROWS), "AM-BSN": ("ambsn", R3_ROWS)}


def budget() -> list[str]:
    """The photos recipe's training budget as overrides."""
    train = load_options(recipe.RECIPE)["train"]
    return ["network.preset=small", *(f"train.{k}={v}" for k, v in train.items()),
            "train.milestones=[]", "datasets.train.batch_size=2", "datasets.train.crop_size=120"]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    recipe.data_arguments(p)
    p.add_argument("--methods", nargs="+", default=["AP-BSN", "AM-BSN"], choices=list(METHODS))
    args = p.parse_args(argv)
    set_name = recipe.check_data(p, args)
    work = (args.work or REPO / "results" / "bench_peers" / set_name.split()[0]).resolve()
    work.mkdir(parents=True, exist_ok=True)
    log: dict = {}
    rows = {"noisy input": recipe.common.reference_metrics(args, lambda x: x)}
    minutes, checkpoints = {}, {}
    for label in args.methods:
        key, evaluated = METHODS[label]
        opt = recipe.training_options(args, REPO / "options/train" / f"{key}.yml", key, budget())
        checkpoints[label], trained = recipe.train_once(opt, work, args.rerun, log)
        minutes[label] = round(recipe.common.stage_minutes(work, key), 1)
        rows.update(recipe.evaluate_rows(args, checkpoints[label],
                                         {f"{label} {suffix}".strip(): m for suffix, m in evaluated.items()},
                                         work, trained, log))
    report = {"set": set_name, "images": rows["noisy input"]["n"], "overrides": args.set, "budget": budget(),
              "train_minutes": minutes, "runs": log, "rows": rows}
    (work / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    text = recipe.tables(rows)
    (work / "report.md").write_text(text + "\n")
    print(text)
    if args.write_docs:
        from amcfd.analysis.results_doc import command_line, update_section

        body = (f"{report['images']} images; training reads only the noisy images; minutes of training on this "
                f"machine's CPU (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}): "
                + ", ".join(f"{k} {v}" for k, v in minutes.items())
                + f". Budget overrides: {' '.join(budget())}; more: {' '.join(args.set) or 'none'}.\n\n{text}")
        update_section(f"Peer methods at a CPU budget: {set_name}, {', '.join(args.methods)}", body,
                       command_line(__file__, argv))
    return report


if __name__ == "__main__":
    main()
