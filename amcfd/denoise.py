"""``amcfd-denoise PHOTOS --output OUT``: from a folder of noisy photos to denoised photos in one command.

Stages (each a normal experiment folder under ``--work``, default experiments/denoise_<folder>/):

1. teacher: AMSNet on the photos themselves, options/train/photos.yml (its ``auto`` choices come from them);
2. coarse:  AM-CFD coarse distillation into a single-pass student (options/train/distill_coarse_cpu.yml; the
   teacher with its own PD stride and recharge, without R3, one rotated view: its targets fit the budget);
3. fine:    self-enhanced fine distillation (options/train/distill_fine_cpu.yml);
4. the student denoises the photos into ``--output``.

``--budget-minutes`` is the training time, split 45 / 35 / 20 % over the stages (each stage's
``train.max_minutes``: the run fits its iterations to it). A finished stage is skipped when the command runs
again; an interrupted one resumes from its last checkpoint. ``--pretrained FILE`` skips training and denoises
with a checkpoint (ours, or one imported by scripts/import_checkpoint.py, e.g. a released single-pass student).
``--clean FOLDER`` (same file names) adds PSNR/SSIM of the input and the output to the summary. Training reads
only the noisy photos; the photos are never written to.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from amcfd.registry import ConfigError

REPO_OPTIONS = Path(__file__).resolve().parents[1] / "options"
STAGES = ("teacher", "coarse", "fine")
SHARE = {"teacher": 0.45, "coarse": 0.35, "fine": 0.20}   # of --budget-minutes
KEEP = ("all", "student", "outputs")
# The coarse stage's teacher targets are computed inside its budget. As P-E with 3 rotated views (the CPU option
# file) they took 8 of its 5 minutes on CC15 (15 photos, 15-minute budget) and left 20 training steps (output
# 20.0 dB); without R3 and with one view they take seconds.
TEACHER_R3, TEACHER_VIEWS = False, [1]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="amcfd-denoise", description=__doc__.split("\n")[0])
    p.add_argument("photos", help="folder of noisy photos (or one photo)")
    p.add_argument("--output", required=True, help="folder for the denoised photos (not inside the photos' folder)")
    p.add_argument("--budget-minutes", type=float, default=30.0, help="training time of all stages (default 30)")
    p.add_argument("--pretrained", help="skip training: denoise with this checkpoint (ours or an imported one)")
    p.add_argument("--clean", help="folder of clean references with the same names: PSNR/SSIM in the summary")
    p.add_argument("--keep", choices=KEEP, default="all",
                   help="what to keep under --work afterwards: all stages (default), the student's folder only, "
                        "or nothing but the outputs")
    p.add_argument("--work", help="folder of the stage experiments (default experiments/denoise_<photos' name>)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda | cuda:N")
    p.add_argument("--options", default=str(REPO_OPTIONS),
                   help="folder holding train/photos.yml, train/distill_coarse_cpu.yml, train/distill_fine_cpu.yml")
    return p


def stage_options(stage: str, args, work: Path, previous: Path | None) -> dict:
    """The option dict of one training stage, from the repository's option files."""
    from amcfd.data.folders import training_set_on
    from amcfd.engine.checkpoint import load_checkpoint
    from amcfd.options import load_options

    files = {"teacher": "photos.yml", "coarse": "distill_coarse_cpu.yml", "fine": "distill_fine_cpu.yml"}
    opt = load_options(Path(args.options) / "train" / files[stage])
    opt["name"], opt["device"] = stage, args.device
    opt.setdefault("path", {})["experiments_root"] = str(work)
    opt["datasets"] = {"train": training_set_on({"type": "NoisyFolder", "root": str(args.photos)},
                                                opt["datasets"]["train"])}
    opt["val"] = {**opt.get("val", {}), "val_freq": 0}
    opt["train"]["max_minutes"] = args.budget_minutes * SHARE[stage]
    opt["logger"] = {**opt.get("logger", {}), "use_tb_logger": False}
    if stage == "coarse":     # the teacher with its own (auto) PD stride and recharge, one rotated view
        teacher_method = load_checkpoint(previous)["opt"]["method"]
        opt["method"]["teacher"].update(checkpoint=str(previous), cache_dir=str(work / "teacher_targets"),
                                        method={"pd_test": teacher_method["pd_test"], "r3": TEACHER_R3})
        opt["method"]["aug_modes"] = TEACHER_VIEWS
    if stage == "fine":
        opt["path"]["pretrain_network"] = str(previous)
    return opt


def train_stage(stage: str, args, work: Path, previous: Path | None, summary: dict) -> Path:
    """Run (or resume, or skip) one stage; returns its final checkpoint."""
    from amcfd.engine.checkpoint import finished_run
    from amcfd.engine.trainer import Trainer
    from amcfd.options import validate

    folder = work / stage
    done = finished_run(folder)
    if done is not None:
        print(f"[{stage}] finished before: {done}", file=sys.stderr)
        summary[stage] = {"steps": int(done.stem.split("_")[1]), "minutes": None, "note": "kept"}
        return done
    print(f"[{stage}] training ({args.budget_minutes * SHARE[stage]:.1f} min budget)", file=sys.stderr)
    start = time.perf_counter()
    trainer = Trainer(validate(stage_options(stage, args, work, previous), "train"),
                      auto_resume=(folder / "models").is_dir())
    trainer.train()
    summary[stage] = {"steps": trainer.iteration, "minutes": (time.perf_counter() - start) / 60}
    return finished_run(folder)


def scores(outputs: Path, photos: list[Path], source: Path, clean: Path) -> dict:
    """Mean PSNR / SSIM (both conventions) of the photos and of their denoised outputs against ``clean``."""
    import torch

    from amcfd.data.imageio import read_image, to_tensor
    from amcfd.metrics import psnr, ssim, ssim_matlab

    sums = {f"{what} {m}": 0.0 for what in ("input", "output") for m in ("PSNR", "SSIM", "SSIM-MATLAB")}
    count = 0
    for path in photos:
        rel = path.relative_to(source) if source.is_dir() else Path(path.name)
        out = outputs / rel.with_suffix(".png" if path.suffix.lower() in (".jpg", ".jpeg") else path.suffix)
        ref = clean / rel
        if not ref.is_file() or not out.is_file():
            continue
        target = to_tensor(read_image(ref)[0])[None]
        for what, file in (("input", path), ("output", out)):
            x = to_tensor(read_image(file)[0])[None]
            if x.shape != target.shape:
                raise ConfigError(f"--clean: {ref} is {tuple(target.shape[1:])}, {file} is {tuple(x.shape[1:])}")
            with torch.no_grad():
                sums[f"{what} PSNR"] += psnr(x, target).item()
                sums[f"{what} SSIM"] += ssim(x, target).item()
                sums[f"{what} SSIM-MATLAB"] += ssim_matlab(x, target).item()
        count += 1
    if not count:
        raise ConfigError(f"--clean: no file in {clean} has the name of a photo")
    return {"images": count, **{k: v / count for k, v in sums.items()}}


def run(argv=None) -> dict:
    from amcfd.cli import check_output_folder, denoise_files, photo_files
    from amcfd.options import validate

    args = _parser().parse_args(argv)
    source, out_dir = Path(args.photos), Path(args.output)
    if args.budget_minutes <= 0:                      # one-line errors before anything is written
        raise ConfigError(f"--budget-minutes must be > 0, got {args.budget_minutes}")
    if args.pretrained and not Path(args.pretrained).is_file():
        raise ConfigError(f"--pretrained: file does not exist: {args.pretrained}")
    if args.clean and not Path(args.clean).is_dir():
        raise ConfigError(f"--clean: folder does not exist: {args.clean}")
    if source.is_file() and not args.pretrained:
        raise ConfigError(f"{source} is one photo: training needs a folder of them (or give --pretrained)")
    check_output_folder(source, out_dir)
    photos = photo_files(source)
    work = Path(args.work or Path("experiments") / f"denoise_{source.resolve().name}")
    summary: dict = {}
    model = Path(args.pretrained) if args.pretrained else None
    if model is None:
        previous = None
        for stage in STAGES:
            previous = train_stage(stage, args, work, previous, summary)
        model = previous
    start = time.perf_counter()
    opt = validate({"name": "denoise", "device": args.device, "path": {"pretrain_network": str(model)},
                    **({} if args.pretrained else {"method": {"type": "SinglePass"}}),
                    "test": {"tile": 512, "tile_overlap": 32}}, "test")
    written = denoise_files(opt, photos, source, out_dir)
    summary["denoise"] = {"images": written, "minutes": (time.perf_counter() - start) / 60}
    if args.clean:
        summary["scores"] = scores(out_dir, photos, source, Path(args.clean))
    if args.keep != "all" and not args.pretrained:
        for stage in ("teacher", "coarse", "teacher_targets") + (("fine",) if args.keep == "outputs" else ()):
            shutil.rmtree(work / stage, ignore_errors=True)
    print(format_summary(summary, model, out_dir))
    return summary


def format_summary(summary: dict, model: Path, out_dir: Path) -> str:
    lines = ["", "| stage | steps | minutes |", "|---|---|---|"]
    for stage in STAGES:
        if stage in summary:
            s = summary[stage]
            minutes = "kept" if s["minutes"] is None else f"{s['minutes']:.1f}"
            lines.append(f"| {stage} | {s['steps']} | {minutes} |")
    d = summary["denoise"]
    lines.append(f"| denoise ({d['images']} images) | | {d['minutes']:.1f} |")
    if "scores" in summary:
        s = summary["scores"]
        lines += ["", f"Against the clean references ({s['images']} images):", "",
                  "| | PSNR | SSIM (skimage) | SSIM (MATLAB-style) |", "|---|---|---|---|"]
        for what in ("input", "output"):
            lines.append(f"| {what} | {s[what + ' PSNR']:.2f} | {s[what + ' SSIM']:.4f} | "
                         f"{s[what + ' SSIM-MATLAB']:.4f} |")
    lines += ["", f"model: {model}", f"denoised photos: {out_dir}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    from amcfd.cli import _run

    return _run(run, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
