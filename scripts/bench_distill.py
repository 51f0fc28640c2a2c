"""AM-CFD at a CPU budget, end to end through train.py and valid.py: teacher B -> P, coarse -> fine student.

    python scripts/bench_distill.py --data ../shared/data/cc15
    python scripts/bench_distill.py --data ../shared/data/polyu --images 30
    python scripts/bench_distill.py --synthetic                      # the embedded demo data
    python scripts/bench_distill.py --data ../shared/data/cc15 --teacher-steps 100 --finetune-steps 20 \\
        --coarse-steps 50 --fine-steps 20 --images 3               # smoke run

Every stage is a normal experiment run by ``train.py`` with an option file written into ``--work``
(derived from the repository's option files, the changes listed in the report), and every number
comes from ``valid.py`` on the noisy/clean pairs. Training reads only the noisy images:

1. AMSNet-B teacher: options/train/demo.yml on the noisy images (NoisyFolder).
2. AMSNet-P teacher: the same, fine-tuned with the smoothness loss (Eq. 10).
3. Coarse student: options/train/distill_coarse_cpu.yml, the frozen P teacher run as P-E (targets cached).
4. Fine student: options/train/distill_fine_cpu.yml from the coarse student.

The final checkpoint of each stage is used (never the one a clean-image validation liked best).
Reported: PSNR and both SSIMs of the noisy input, the bilateral filter alone (DistillCoarse's BF(I_N), a
classical reference), teacher B / B-E / P-E, coarse and fine student, per
image and mean, written to ``--work``/report.json and .md; ``--write-docs`` also updates
docs/results.md. Data under ../shared is read in place (non-commercial licence), never copied.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from amcfd.options import apply_overrides, load_options  # noqa: E402

METRICS = ("psnr", "ssim_skimage", "ssim_matlab")
ROWS = ("noisy input", "bilateral filter", "teacher B", "teacher B-E", "teacher P-E", "coarse student",
        "fine student")


def write_options(opt: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return path


def run(script: str, option_file: Path, work: Path, log: dict) -> float:
    """Run train.py / valid.py on an option file in ``work``; its seconds go to ``log``; fails loudly."""
    cmd = [sys.executable, str(REPO / script), "-opt", str(option_file)]
    start = time.perf_counter()
    print("$", " ".join(cmd[1:]), flush=True)
    result = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    log[option_file.stem] = round(seconds, 1)
    if result.returncode != 0:
        sys.exit(f"{script} failed ({option_file}):\n{result.stderr[-3000:]}")
    return seconds


def last_checkpoint(work: Path, name: str, steps: int) -> Path:
    path = work / "experiments" / name / "models" / f"iter_{steps:08d}.pth"
    if not path.is_file():
        sys.exit(f"missing checkpoint {path}")
    return path


def stage_minutes(work: Path, name: str) -> float:
    """A stage's training time from its files: options.yml (written at start) to the newest checkpoint."""
    folder = work / "experiments" / name
    end = max(p.stat().st_mtime for p in (folder / "models").glob("iter_*.pth"))
    return (end - (folder / "options.yml").stat().st_mtime) / 60


def train_set(args) -> dict:
    """The training images: the noisy half of the pairs, or the demo's synthetic training images."""
    if args.synthetic:
        return load_options(REPO / "options/train/demo.yml")["datasets"]["train"]
    return {"type": "NoisyFolder", "root": str(args.data / "noisy"), "crop_size": args.crop, "augment": True,
            "repeat": 100, "batch_size": args.batch, "num_workers": 0,
            **({"max_images": args.images} if args.images else {})}


def eval_set(args) -> dict:
    if args.synthetic:
        return load_options(REPO / "options/test/demo.yml")["datasets"]["val_synthetic"]
    return {"type": "PairedFolder", "root": str(args.data), **({"max_images": args.images} if args.images else {})}


def stage_options(args, work: Path) -> dict:
    """Option dicts of the four training stages (repository files + the changes named here)."""
    quiet = {"print_freq": 250, "progress_bar": False, "use_tb_logger": False}
    teacher_method = {"pd_train": args.pd_train, "pd_test": args.pd_test}
    b = load_options(REPO / "options/train/demo.yml")
    b["name"] = "teacher_b"
    b["method"].update(teacher_method)
    b["datasets"] = {"train": train_set(args)}
    b["train"].update(total_iter=args.teacher_steps)
    b["val"] = {"val_freq": 0}
    b["logger"] = {**b.get("logger", {}), **quiet, "save_checkpoint_freq": args.teacher_steps}
    p = yaml.safe_load(yaml.safe_dump(b))
    p["name"] = "teacher_p"
    p["method"].update(finetune_smooth=True, smooth_weight=args.smooth_weight)
    p["train"].update(total_iter=args.finetune_steps, lr=args.finetune_lr, warmup_iter=0,
                      eta_min=args.finetune_lr / 100)
    p["logger"]["save_checkpoint_freq"] = args.finetune_steps
    p["path"] = {"pretrain_network": str(work / "experiments/teacher_b/models" / f"iter_{args.teacher_steps:08d}.pth")}

    c = load_options(REPO / "options/train/distill_coarse_cpu.yml")
    c["name"] = "coarse"
    c["method"]["teacher"].update(
        checkpoint=str(work / "experiments/teacher_p/models" / f"iter_{args.finetune_steps:08d}.pth"),
        method={"pd_test": args.pd_test, "r3": True}, cache_dir=str(work / "teacher_targets"))
    c["datasets"] = {"train": {**train_set(args), "batch_size": args.student_batch}}
    c["train"].update(total_iter=args.coarse_steps)
    c["val"] = {"val_freq": 0}
    c["logger"] = {**c.get("logger", {}), **quiet, "save_checkpoint_freq": args.coarse_steps}
    if args.student_preset:
        c["network"] = {"type": "NAFNet", "preset": args.student_preset}

    f = load_options(REPO / "options/train/distill_fine_cpu.yml")
    f["name"] = "fine"
    f["network"] = c["network"]
    f["datasets"] = c["datasets"]
    f["train"].update(total_iter=args.fine_steps)
    f["val"] = {"val_freq": 0}
    f["logger"] = {**f.get("logger", {}), **quiet, "save_checkpoint_freq": args.fine_steps}
    f["path"] = {"pretrain_network": str(work / "experiments/coarse/models" / f"iter_{args.coarse_steps:08d}.pth")}
    c = apply_overrides(c, args.coarse_set)
    return {"teacher_b": b, "teacher_p": p, "coarse": c, "fine": apply_overrides(f, args.fine_set)}


def evaluation_options(args, work: Path) -> dict:
    """valid.py option dicts of the five evaluated rows (noisy input is measured by the same metrics)."""
    teacher = load_options(REPO / "options/test/demo.yml")
    student = load_options(REPO / "options/test/student.yml")
    sets = {"datasets": {"val_set": eval_set(args)}}
    ckpt = {name: str(work / "experiments" / name / "models" / f"iter_{steps:08d}.pth") for name, steps in
            (("teacher_b", args.teacher_steps), ("teacher_p", args.finetune_steps), ("coarse", args.coarse_steps),
             ("fine", args.fine_steps))}
    rows = {}
    for row, name, r3 in (("teacher B", "teacher_b", False), ("teacher B-E", "teacher_b", True),
                          ("teacher P-E", "teacher_p", True)):
        rows[row] = {**teacher, **sets, "name": f"eval_{row.replace(' ', '_')}",
                     "method": {"type": "AMSNet", "pd_test": args.pd_test, "r3": r3},
                     "path": {"pretrain_network": ckpt[name]}}
    for row, name in (("coarse student", "coarse"), ("fine student", "fine")):
        rows[row] = {**student, **sets, "name": f"eval_{name}", "path": {"pretrain_network": ckpt[name]}}
    return rows


def reference_metrics(args, fn) -> dict:
    """Scores of a fixed function of the noisy image (the input itself, the bilateral filter), with the
    evaluation of valid.py (``engine.inference.evaluate``) and its metric functions."""
    import torch

    from amcfd.engine.inference import build_dataset, evaluate

    dataset, loader = build_dataset(eval_set(args), "datasets.val_set")
    r = evaluate(fn, dataset, loader, ["psnr", "ssim", "ssim_matlab"], torch.device("cpu"))
    return {"n": r["n"], "psnr": r["psnr"], "ssim_skimage": r["ssim"], "ssim_matlab": r["ssim_matlab"],
            "per_image": {k: {"psnr": v["psnr"], "ssim_skimage": v["ssim"], "ssim_matlab": v["ssim_matlab"]}
                          for k, v in r["per_image"].items()}}


def tables(report: dict) -> str:
    rows = report["rows"]
    lines = ["| | PSNR | SSIM (skimage) | SSIM (MATLAB-style) |", "|---|---|---|---|"]
    for row in ROWS:
        r = rows[row]
        lines.append(f"| {row} | {r['psnr']:.2f} | {r['ssim_skimage']:.4f} | {r['ssim_matlab']:.4f} |")
    names = sorted(rows["noisy input"]["per_image"])
    lines += ["", "Per image, PSNR (dB):", "", "| image | " + " | ".join(ROWS) + " |", "|---|" + "---|" * len(ROWS)]
    for name in names:
        cells = [f"{rows[row]['per_image'][name]['psnr']:.2f}" for row in ROWS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, help="folder with noisy/ and clean/ (e.g. ../shared/data/cc15)")
    p.add_argument("--synthetic", action="store_true", help="the embedded synthetic demo data instead")
    p.add_argument("--images", type=int, default=None, help="only the first N pairs (training and evaluation)")
    p.add_argument("--work", type=Path, default=None, help="working folder (default results/bench_distill/<set>)")
    p.add_argument("--pd-train", type=int, default=None,
                   help="teacher PD stride in training (default: demo.yml's; docs/results.md: 2 for light real noise)")
    p.add_argument("--pd-test", type=int, default=None,
                   help="teacher PD stride at inference, P-E targets too (default: demo.yml's)")
    p.add_argument("--teacher-steps", type=int, default=2500)
    p.add_argument("--finetune-steps", type=int, default=300)
    p.add_argument("--finetune-lr", type=float, default=3e-4)
    p.add_argument("--smooth-weight", type=float, default=0.01)
    p.add_argument("--coarse-steps", type=int, default=2000)
    p.add_argument("--fine-steps", type=int, default=1000)
    p.add_argument("--student-preset", default=None, help="NAFNet preset of the student (default: the option file's)")
    p.add_argument("--coarse-set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="overrides of the coarse stage's options (e.g. method.bf_weight=0.5)")
    p.add_argument("--fine-set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="overrides of the fine stage's options (e.g. method.refresh_every=50)")
    p.add_argument("--crop", type=int, default=120)
    p.add_argument("--batch", type=int, default=2, help="teacher crops per step")
    p.add_argument("--student-batch", type=int, default=4, help="student crops per step")
    p.add_argument("--rerun", nargs="*", default=None, metavar="STAGE",
                   help="retrain these stages (teacher_b teacher_p coarse fine; none named: all) and the later ones")
    p.add_argument("--write-docs", action="store_true", help="update docs/results.md")
    args = p.parse_args(argv)
    if args.synthetic == bool(args.data):
        p.error("give --data FOLDER or --synthetic")
    if args.data:
        args.data = args.data.resolve()
    set_name = "synthetic" if args.synthetic else args.data.name
    demo_method = load_options(REPO / "options/train/demo.yml")["method"]
    args.pd_train = args.pd_train or demo_method["pd_train"]
    args.pd_test = args.pd_test or demo_method["pd_test"]
    work = (args.work or REPO / "results" / "bench_distill" / set_name).resolve()
    work.mkdir(parents=True, exist_ok=True)
    log: dict = {}
    retrain, trained = False, set()
    for name, opt in stage_options(args, work).items():
        retrain = retrain or (args.rerun is not None and (not args.rerun or name in args.rerun))
        done = work / "experiments" / name / "models" / f"iter_{opt['train']['total_iter']:08d}.pth"
        option_file = work / "options" / f"{name}.yml"
        same = option_file.is_file() and option_file.read_text() == yaml.safe_dump(opt, sort_keys=False)
        if done.is_file() and same and not retrain:    # a finished stage with the same options is kept
            print(f"kept {done}", flush=True)
            continue
        retrain = True                                 # and every later stage is trained again
        trained.add(name)
        run("train.py", write_options(opt, option_file), work, log)
    from amcfd.methods.distill_coarse import BILATERAL_DEFAULTS
    from amcfd.ops.bilateral import bilateral_filter

    rows = {"noisy input": reference_metrics(args, lambda x: x),
            "bilateral filter": reference_metrics(args, lambda x: bilateral_filter(x, **BILATERAL_DEFAULTS))}
    for row, opt in evaluation_options(args, work).items():
        metrics = work / "results" / opt["name"] / "metrics.json"
        stage = Path(opt["path"]["pretrain_network"]).parents[1].name
        if stage in trained or not metrics.is_file():  # evaluations of kept stages are kept too
            run("valid.py", write_options(opt, work / "options" / f"{opt['name']}.yml"), work, log)
        rows[row] = json.loads(metrics.read_text())["val_set"]
    report = {"set": set_name, "images": rows["noisy input"]["n"], "args": {k: str(v) for k, v in vars(args).items()},
              "runs": log, "rows": rows}
    (work / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    text = tables(report)
    (work / "report.md").write_text(text + "\n")
    print(text)
    if args.write_docs:
        from amcfd.analysis.results_doc import command_line, update_section

        stages = ", ".join(f"{name} {stage_minutes(work, name):.1f}" for name in ("teacher_b", "teacher_p", "coarse",
                                                                                  "fine"))
        where = work.relative_to(REPO) if work.is_relative_to(REPO) else work
        body = (f"{report['images']} images; training reads only the noisy images; every stage on this machine's "
                f"CPU, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} (minutes per stage, options.yml to "
                f"final checkpoint, target cache included: "
                f"{stages}). Stage option files: {where}/options/.\n\n{text}")
        update_section(f"AM-CFD distillation at a CPU budget: {set_name}", body,
                       command_line(__file__, argv))
    return report


if __name__ == "__main__":
    main()
