"""The photos recipe (options/train/photos.yml) measured through train.py and valid.py, per image.

    python scripts/bench_photos.py --data ../shared/data/cc15
    python scripts/bench_photos.py --data ../shared/data/polyu --images 30
    python scripts/bench_photos.py --synthetic                       # the embedded demo data
    python scripts/bench_photos.py --data ../shared/data/cc15 --images 2 --set train.total_iter=20   # smoke run

Training is ``train.py -opt options/train/photos.yml`` pointed at the noisy images only (the option file
unchanged but for the training folder and the ``--set`` overrides named in the report); its ``auto`` choices
come from those images. Every score comes from ``valid.py`` on the noisy/clean pairs, with the final checkpoint
(never one a clean image picked). Rows: the noisy input, the trained model as the recipe runs it, and the same
model without recharge (what ``method.recharge`` adds). Written to ``--work``/report.json and .md, and with
``--write-docs`` to docs/results.md. Data under ../shared is read in place (non-commercial licence), never copied.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import bench_distill as common  # noqa: E402  (run, write_options, reference_metrics, stage_minutes, sets)

from amcfd.options import apply_overrides, load_options  # noqa: E402

RECIPE = REPO / "options/train/photos.yml"
ROWS = ("noisy input", "photos recipe", "without recharge")
BELOW_LIMIT = 0.3   # dB: the most any image may lose against its own noisy input


def training_options(args) -> dict:
    opt = load_options(RECIPE)
    if args.synthetic:
        opt["datasets"]["train"] = common.train_set(args)
    else:
        opt["datasets"]["train"]["root"] = str(args.data / "noisy")
        if args.images:
            opt["datasets"]["train"]["max_images"] = args.images
    opt["logger"] = {**opt["logger"], "progress_bar": False, "use_tb_logger": False}
    return apply_overrides(opt, args.set)


def evaluation_options(args, checkpoint: Path) -> dict:
    base = {"name": "eval_photos", "path": {"pretrain_network": str(checkpoint)},
            "datasets": {"val_set": common.eval_set(args)}}
    return {"photos recipe": base,
            "without recharge": {**base, "name": "eval_no_recharge", "method": {"recharge": False}}}


def tables(report: dict) -> str:
    rows, noisy = report["rows"], report["rows"]["noisy input"]
    lines = ["| | PSNR | gain | SSIM (skimage) | SSIM (MATLAB-style) | images > 0.3 dB below the input |",
             "|---|---|---|---|---|---|"]
    for row in ROWS:
        r = rows[row]
        below = sum(r["per_image"][k]["psnr"] < v["psnr"] - BELOW_LIMIT for k, v in noisy["per_image"].items())
        lines.append(f"| {row} | {r['psnr']:.2f} | {r['psnr'] - noisy['psnr']:+.2f} | {r['ssim_skimage']:.4f} | "
                     f"{r['ssim_matlab']:.4f} | {below if row != 'noisy input' else ''} |")
    lines += ["", "Per image, PSNR (dB) and SSIM (skimage):", "",
              "| image | noisy input | photos recipe | gain | without recharge | SSIM noisy | SSIM recipe |",
              "|---|---|---|---|---|---|---|"]
    for name in sorted(noisy["per_image"]):
        n, r, w = (rows[row]["per_image"][name] for row in ROWS)
        lines.append(f"| {name} | {n['psnr']:.2f} | {r['psnr']:.2f} | {r['psnr'] - n['psnr']:+.2f} | {w['psnr']:.2f} "
                     f"| {n['ssim_skimage']:.4f} | {r['ssim_skimage']:.4f} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, help="folder with noisy/ and clean/ (e.g. ../shared/data/cc15)")
    p.add_argument("--synthetic", action="store_true", help="the embedded synthetic demo data instead")
    p.add_argument("--images", type=int, default=None, help="only the first N pairs (training and evaluation)")
    p.add_argument("--work", type=Path, default=None, help="working folder (default results/bench_photos/<set>)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="overrides of the recipe's options")
    p.add_argument("--rerun", action="store_true", help="train again even if the same options finished before")
    p.add_argument("--write-docs", action="store_true", help="update docs/results.md")
    args = p.parse_args(argv)
    if args.synthetic == bool(args.data):
        p.error("give --data FOLDER or --synthetic")
    if args.data:
        args.data = args.data.resolve()
    set_name = "synthetic" if args.synthetic else args.data.name + (f" (first {args.images})" if args.images else "")
    work = (args.work or REPO / "results" / "bench_photos" / set_name.split()[0]).resolve()
    work.mkdir(parents=True, exist_ok=True)
    log: dict = {}
    opt = training_options(args)
    steps = opt["train"]["total_iter"]
    done = work / "experiments" / opt["name"] / "models" / f"iter_{steps:08d}.pth"
    option_file = work / "options" / "photos.yml"
    same = option_file.is_file() and option_file.read_text() == yaml.safe_dump(opt, sort_keys=False)
    trained = not (done.is_file() and same and not args.rerun)
    if trained:
        common.run("train.py", common.write_options(opt, option_file), work, log)
    else:
        print(f"kept {done}", flush=True)
    rows = {"noisy input": common.reference_metrics(args, lambda x: x)}
    for row, eval_opt in evaluation_options(args, done).items():
        metrics = work / "results" / eval_opt["name"] / "metrics.json"
        if trained or not metrics.is_file():
            common.run("valid.py", common.write_options(eval_opt, work / "options" / f"{eval_opt['name']}.yml"),
                       work, log)
        rows[row] = json.loads(metrics.read_text())["val_set"]
        for scores in rows[row]["per_image"].values():     # valid.py names it 'ssim'; the means 'ssim_skimage'
            scores.setdefault("ssim_skimage", scores.get("ssim"))
    run_yml = yaml.safe_load((done.parents[1] / "run.yml").read_text())
    report = {"set": set_name, "images": rows["noisy input"]["n"], "overrides": args.set, "runs": log,
              "auto": run_yml.get("auto"), "train_minutes": round(common.stage_minutes(work, opt["name"]), 1),
              "rows": rows}
    (work / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    text = tables(report)
    (work / "report.md").write_text(text + "\n")
    print(text)
    if args.write_docs:
        from amcfd.analysis.results_doc import update_section

        auto = report["auto"] or {}
        chosen = ", ".join(f"{k.split('.')[-1]} {v}" for k, v in auto.get("chosen", {}).items())
        measured = auto.get("measured", {})
        noise = (f"noise std {measured['noise_level_255']:.2f}/255, correlation "
                 + " / ".join(f"{c:.2f}" for c in measured["correlation"].values()) + " at 1 / 2 / 3 px"
                 if measured else "")
        body = (f"{report['images']} images; training reads only the noisy images, "
                f"{report['train_minutes']} minutes on this machine's CPU (OMP_NUM_THREADS="
                f"{os.environ.get('OMP_NUM_THREADS', 'unset')}), options.yml to final checkpoint. "
                f"'auto' chose: {chosen} ({noise}). Overrides: {' '.join(args.set) or 'none'}.\n\n{text}")
        update_section(f"Photos recipe: {set_name}", body,
                       "python scripts/bench_photos.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    return report


if __name__ == "__main__":
    main()
