"""A training recipe measured through train.py and valid.py, per image: the photos recipe by default.

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
``scripts/bench_peers.py`` runs other recipes (AP-BSN, AM-BSN) through the same functions.
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
PHOTOS_ROWS = {"photos recipe": {}, "without recharge": {"recharge": False}}
BELOW_LIMIT = 0.3   # dB: the most any image may lose against its own noisy input


def data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, help="folder with noisy/ and clean/ (e.g. ../shared/data/cc15)")
    p.add_argument("--synthetic", action="store_true", help="the embedded synthetic demo data instead")
    p.add_argument("--images", type=int, default=None, help="only the first N pairs (training and evaluation)")
    p.add_argument("--work", type=Path, default=None, help="working folder (default results/<script>/<set>)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="overrides of the recipe's options")
    p.add_argument("--rerun", action="store_true", help="train again even if the same options finished before")
    p.add_argument("--write-docs", action="store_true", help="update docs/results.md")


def check_data(p: argparse.ArgumentParser, args) -> str:
    """Validate --data/--synthetic; returns the set's name for reports."""
    if args.synthetic == bool(args.data):
        p.error("give --data FOLDER or --synthetic")
    if args.data:
        args.data = args.data.resolve()
    return "synthetic" if args.synthetic else args.data.name + (f" (first {args.images})" if args.images else "")


def training_options(args, recipe: Path, name: str, budget: list[str] = ()) -> dict:
    """``recipe`` on the noisy images of the set, with ``budget`` then ``--set`` overrides."""
    opt = load_options(recipe)
    opt["name"] = name
    if args.synthetic:
        opt["datasets"] = {"train": common.train_set(args)}
    else:
        train = {"type": "NoisyFolder", "root": str(args.data / "noisy"), "crop_size": 120, "augment": True,
                 "repeat": 100, "batch_size": 2, "num_workers": 0}
        old = opt["datasets"]["train"]
        if old.get("type") == "NoisyFolder":
            train = {**old, "root": train["root"]}
        opt["datasets"] = {"train": {**train, **({"max_images": args.images} if args.images else {})}}
    opt["val"] = {**opt.get("val", {}), "val_freq": 0}
    opt["logger"] = {**opt["logger"], "progress_bar": False, "use_tb_logger": False}
    opt = apply_overrides(opt, list(budget) + list(args.set))
    if opt["train"]["total_iter"] % opt["logger"]["save_checkpoint_freq"]:    # the final step must be saved
        opt["logger"]["save_checkpoint_freq"] = opt["train"]["total_iter"]
    return opt


def train_once(opt: dict, work: Path, rerun: bool, log: dict) -> tuple[Path, bool]:
    """train.py on ``opt`` unless the same options already finished in ``work``: (final checkpoint, trained).
    The final checkpoint is the run's last one (``train.max_minutes`` may have ended it before total_iter)."""
    from amcfd.engine.checkpoint import finished_run

    folder = work / "experiments" / opt["name"]
    option_file = work / "options" / f"{opt['name']}.yml"
    same = option_file.is_file() and option_file.read_text() == yaml.safe_dump(opt, sort_keys=False)
    done = finished_run(folder)
    if done is not None and same and not rerun:
        print(f"kept {done}", flush=True)
        return done, False
    common.run("train.py", common.write_options(opt, option_file), work, log)
    return finished_run(folder), True


def evaluate_rows(args, checkpoint: Path, rows: dict, work: Path, fresh: bool, log: dict) -> dict:
    """valid.py on the pairs for every row {name: method overrides}; kept results are reused unless ``fresh``."""
    out = {}
    for row, method in rows.items():
        name = "eval_" + "".join(c if c.isalnum() else "_" for c in row)
        opt = {"name": name, "path": {"pretrain_network": str(checkpoint)},
               "datasets": {"val_set": common.eval_set(args)}, **({"method": method} if method else {})}
        metrics = work / "results" / name / "metrics.json"
        if fresh or not metrics.is_file():
            common.run("valid.py", common.write_options(opt, work / "options" / f"{name}.yml"), work, log)
        out[row] = json.loads(metrics.read_text())["val_set"]
        for scores in out[row]["per_image"].values():     # valid.py names it 'ssim'; the means 'ssim_skimage'
            scores.setdefault("ssim_skimage", scores.get("ssim"))
    return out


def tables(rows: dict) -> str:
    """Mean table (with ms per image and the images more than BELOW_LIMIT dB below their input) and per-image
    PSNR table; ``rows`` = {'noisy input': ..., row: valid.py metrics, ...}."""
    names = list(rows)
    noisy = rows["noisy input"]
    lines = ["| | PSNR | gain | SSIM (skimage) | SSIM (MATLAB-style) | ms / image | "
             f"images > {BELOW_LIMIT} dB below the input |", "|---|---|---|---|---|---|---|"]
    for row in names:
        r = rows[row]
        below = sum(r["per_image"][k]["psnr"] < v["psnr"] - BELOW_LIMIT for k, v in noisy["per_image"].items())
        ms = f"{r['sec_per_image'] * 1000:.0f}" if "sec_per_image" in r and row != "noisy input" else ""
        lines.append(f"| {row} | {r['psnr']:.2f} | {r['psnr'] - noisy['psnr']:+.2f} | {r['ssim_skimage']:.4f} | "
                     f"{r['ssim_matlab']:.4f} | {ms} | {below if row != 'noisy input' else ''} |")
    lines += ["", "Per image, PSNR (dB) and SSIM (skimage):", "",
              "| image | " + " | ".join(names) + " | SSIM " + " | SSIM ".join(names[:2]) + " |",
              "|---|" + "---|" * (len(names) + 2)]
    for image in sorted(noisy["per_image"]):
        cells = [f"{rows[row]['per_image'][image]['psnr']:.2f}" for row in names]
        cells += [f"{rows[row]['per_image'][image]['ssim_skimage']:.4f}" for row in names[:2]]
        lines.append(f"| {image} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    data_arguments(p)
    args = p.parse_args(argv)
    set_name = check_data(p, args)
    work = (args.work or REPO / "results" / "bench_photos" / set_name.split()[0]).resolve()
    work.mkdir(parents=True, exist_ok=True)
    log: dict = {}
    opt = training_options(args, RECIPE, "photos")
    checkpoint, trained = train_once(opt, work, args.rerun, log)
    rows = {"noisy input": common.reference_metrics(args, lambda x: x),
            **evaluate_rows(args, checkpoint, PHOTOS_ROWS, work, trained, log)}
    run_yml = yaml.safe_load((checkpoint.parents[1] / "run.yml").read_text())
    report = {"set": set_name, "images": rows["noisy input"]["n"], "overrides": args.set, "runs": log,
              "auto": run_yml.get("auto"), "train_minutes": round(common.stage_minutes(work, opt["name"]), 1),
              "rows": rows}
    (work / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    text = tables(rows)
    (work / "report.md").write_text(text + "\n")
    print(text)
    if args.write_docs:
        from amcfd.analysis.results_doc import command_line, update_section

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
                       command_line(__file__, argv))
    return report


if __name__ == "__main__":
    main()
