"""PSNR of the bilateral filter alone, BF(I_N) against the clean image, for a grid of settings.

    python scripts/bench_bilateral.py [--write-docs]

How the default of DistillCoarse's ``bilateral`` option was chosen: BF(I_N) is the coarse student's
target in textured areas, so it should gain over the noisy input on light real noise (CC15, the first 30
PolyU pairs) without smoothing detail away, and not lose on the heavy synthetic demo noise. Data under
../shared is read in place (non-commercial licence).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from amcfd.metrics import psnr  # noqa: E402
from amcfd.ops.bilateral import bilateral_filter  # noqa: E402
from amcfd.registry import DATASETS  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
SETS = {
    "CC15": {"type": "PairedFolder", "root": str(SHARED / "cc15")},
    "PolyU (first 30)": {"type": "PairedFolder", "root": str(SHARED / "polyu"), "max_images": 30},
    "synthetic demo (val)": {"type": "SyntheticCameraNoise", "images": ["coffee", "chelsea"], "with_clean": True,
                             "seed": 100},
}
GRID = [(5, 10, 2), (5, 20, 2), (5, 30, 2), (7, 20, 3), (7, 30, 3), (9, 50, 5), (9, 75, 75)]


def mean_psnr(items, fn) -> float:
    return sum(float(psnr(fn(it["noisy"][None]).clamp(0, 1), it["clean"][None])) for it in items) / len(items)


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--write-docs", action="store_true", help="update docs/results.md")
    args = p.parse_args(argv)
    data = {}
    for name, cfg in SETS.items():
        ds = DATASETS.build(cfg)
        data[name] = [ds[i] for i in range(len(ds))]
    lines = ["| d | sigma_color | sigma_space | " + " | ".join(data) + " |", "|---|---|---|" + "---|" * len(data),
             "| noisy input | | | " + " | ".join(f"{mean_psnr(v, lambda x: x):.2f}" for v in data.values()) + " |"]
    for d, sc, ss in GRID:
        def filtered(x, d=d, sc=sc, ss=ss):
            return bilateral_filter(x, d, sc, ss)

        cells = [f"{mean_psnr(v, filtered):.2f}" for v in data.values()]
        lines.append(f"| {d} | {sc} | {ss} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    print(table)
    if args.write_docs:
        from amcfd.analysis.results_doc import update_section

        update_section("Bilateral filter settings", "Mean PSNR (dB) of BF(I_N) against the clean images.\n\n" + table,
                       "python scripts/bench_bilateral.py --write-docs")
    return table


if __name__ == "__main__":
    main()
