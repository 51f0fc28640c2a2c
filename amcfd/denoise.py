"""``amcfd-denoise PHOTOS --output OUT``: from a folder of noisy photos to denoised photos in one command.

This module is the command line and its summary. The training is AM-CFD's three stages on the photos themselves
(teacher, coarse, fine: amcfd/stages.py), run as a pipeline (engine/pipeline.py: each stage's identity, reuse,
extension and resume), each a normal experiment folder under ``--work`` (default
experiments/denoise_<folder>_<path hash>/); then the student denoises the photos (sub-folders too) into
``--output``, mirroring the folder tree.

Budget: ``--budget-minutes`` is the training time, split over the stages (``stages.SHARE``). A budget too small
for a stage to reach a tenth of its option file's ``total_iter`` is refused before anything runs, with the
smallest budget that works, estimated from a few timed steps (engine/budget.py). A rerun reuses finished stages;
with a larger budget the teacher goes on from where it stopped and the students train again from the better
teacher; a smaller one reuses what is there. Folders of stages superseded by this run (other options or photos)
and the teacher's targets (a cache for an interrupted coarse stage) are removed once the photos are written;
``--keep student`` keeps only the fine stage, ``--keep outputs`` nothing.
``--method classical`` skips training: the classical core (methods/classical.py: BM3D at a multiple of each
photo's own noise level, seconds per photo). ``--pretrained FILE`` skips training and denoises with a checkpoint
(ours, one imported by scripts/import_checkpoint.py, or a released model by name: ``amcfd-weights list``).
``--clean FOLDER`` (same relative names) adds PSNR/SSIM to the summary, and the classical core's on the same photos
(its outputs in a temporary folder), the photos below their input, and whether the model beats the core.
Training reads only the noisy photos; the photos are never written to. One command at a time per work folder: the
lock covers the whole run, from planning to the last photo written.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import shutil
import sys
import time
import traceback
from pathlib import Path

from amcfd.registry import ConfigError

KEEP = ("all", "student", "outputs")
DEFAULT_BUDGET = 30.0       # --budget-minutes
CLASSICAL_MODEL = "the classical core (BM3D at a multiple of each photo's own noise level; no training)"


DESCRIPTION = """From a folder of noisy photos to denoised photos, in one command.

By default it trains on the photos themselves, from the noisy photos alone: an AMSNet teacher, then AM-CFD
coarse and fine distillation into a single-pass student (--budget-minutes of training, split 45/35/20 %), and
the student denoises the photos. --method classical trains nothing (BM3D at each photo's own noise level,
seconds per photo); --pretrained uses a checkpoint or a released model instead."""

EPILOG = """stages and reuse:
  Each stage is an experiment folder under --work named after what it depends on (the photos' contents, the
  stage's options, the stage before it). A rerun reuses finished stages and resumes an interrupted one (even
  after kill -9) within what is left of its budget. A larger --budget-minutes extends the teacher from where it
  stopped and trains the students again; a smaller one reuses the stages as they are. Other options or photos
  train anew, and the folders they supersede are removed once the photos are written.
  One run at a time per work folder: a lock covers the whole run.
--keep:
  all (default) keeps this run's stages; student keeps the fine stage only (a rerun still trains nothing);
  outputs removes the stage folders once the photos are written.
outputs:
  Same names and sub-folders as the photos (JPEG written as PNG), size, bit depth, alpha, colour profile and
  EXIF kept. The photos are never written to; unreadable files are skipped with a warning.
environment:
  AMCFD_CACHE            where released weights are kept (default $XDG_CACHE_HOME/amcfd or ~/.cache/amcfd)
  AMCFD_WEIGHTS_MIRROR   a folder or URL to read released weights from instead of their sources
examples:
  amcfd-denoise my_photos/ --output denoised/ --budget-minutes 30
  amcfd-denoise my_photos/ --output denoised/ --method classical
  amcfd-denoise my_photos/ --output denoised/ --pretrained tmbsn-sidd      (names: amcfd-weights list)"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="amcfd-denoise", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("photos", metavar="PHOTOS",
                   help="folder of noisy photos, sub-folders included (or one photo with --pretrained)")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="folder for the denoised photos (not inside the photos' folder)")
    p.add_argument("--budget-minutes", type=float, default=None, metavar="MIN",
                   help="training time of all stages (default 30)")
    p.add_argument("--method", choices=("trained", "classical"), default="trained",
                   help="trained: the stages above (default); classical: no training, the classical core "
                        "(BM3D at each photo's own noise level, seconds per photo)")
    p.add_argument("--pretrained", metavar="NAME_OR_FILE",
                   help="skip training: denoise with this checkpoint (ours, an imported one, or a released model by "
                        "name: amcfd-weights list)")
    p.add_argument("--clean", metavar="DIR",
                   help="folder of clean references with the same names: PSNR/SSIM in the summary, against the "
                        "classical core's on the same photos")
    p.add_argument("--keep", choices=KEEP, default=None,
                   help="what to keep under --work afterwards: all stages (default), the student's folder only, "
                        "or nothing but the outputs")
    p.add_argument("--work", metavar="DIR",
                   help="folder of the stage experiments and of denoise.log, where a failure's traceback goes "
                        "(default experiments/denoise_<photos' name>_<hash of their path>)")
    p.add_argument("--device", default="auto", metavar="DEVICE",
                   help="auto (CUDA when present) | cpu | cuda | cuda:N")
    p.add_argument("--options", metavar="DIR", help="folder holding train/photos.yml, train/distill_coarse_cpu.yml and "
                                     "train/distill_fine_cpu.yml (default: the packaged option files)")
    return p


def default_work(source: Path) -> Path:
    """experiments/denoise_<name>_<8 hex of the resolved path>: folders that share a name never collide."""
    resolved = source.resolve()
    return Path("experiments") / f"denoise_{resolved.name}_{hashlib.sha1(str(resolved).encode()).hexdigest()[:8]}"


@contextlib.contextmanager
def stage_guard(stage: str, log_file: Path):
    """An unexpected exception in a stage (an internal FileNotFoundError too) becomes one line naming the stage and
    the log file that holds its traceback (TrainingError: exit code 1). Option errors and paths the user gave
    (ConfigError, InputNotFound), disk and training errors pass as they are."""
    from amcfd.cli import DISK_ERRORS
    from amcfd.engine.trainer import TrainingError

    try:
        yield
    except (ConfigError, TrainingError, KeyboardInterrupt):
        raise
    except OSError as exc:
        if exc.errno in DISK_ERRORS:
            raise
        _record_failure(stage, log_file, exc)
    except Exception as exc:
        _record_failure(stage, log_file, exc)


def _record_failure(stage: str, log_file: Path, exc: Exception):
    from amcfd.engine.trainer import TrainingError

    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a") as f:
        f.write(f"\n{time.strftime('%Y-%m-%d %H:%M:%S')} amcfd-denoise: stage '{stage}' failed\n")
        f.write(traceback.format_exc())
    first = (str(exc).strip().splitlines() or [""])[0]
    raise TrainingError(f"stage '{stage}' failed: {type(exc).__name__}: {first} (traceback in {log_file})") from None


def scores(outputs: Path, photos: list[Path], source: Path, clean: Path) -> dict:
    """Mean PSNR / SSIM (both conventions) of the photos and of their denoised outputs against ``clean``, and each
    photo's (input, output) PSNR under 'per_image'."""
    import torch

    from amcfd.cli import output_path
    from amcfd.data.imageio import read_image, to_tensor
    from amcfd.metrics import psnr, ssim, ssim_matlab

    sums = {f"{what} {m}": 0.0 for what in ("input", "output") for m in ("PSNR", "SSIM", "SSIM-MATLAB")}
    per_image = {}
    for path in photos:
        out = output_path(path, source, outputs)
        ref = clean / (path.relative_to(source) if source.is_dir() else Path(path.name))
        if not ref.is_file() or not out.is_file():
            continue
        target = to_tensor(read_image(ref)[0])[None]
        pair = []
        for what, file in (("input", path), ("output", out)):
            x = to_tensor(read_image(file)[0])[None]
            if x.shape != target.shape:
                raise ConfigError(f"--clean: {ref} is {tuple(target.shape[1:])}, {file} is {tuple(x.shape[1:])}")
            with torch.no_grad():
                pair.append(psnr(x, target).item())
                sums[f"{what} PSNR"] += pair[-1]
                sums[f"{what} SSIM"] += ssim(x, target).item()
                sums[f"{what} SSIM-MATLAB"] += ssim_matlab(x, target).item()
        per_image[str(path.relative_to(source) if source.is_dir() else path.name)] = tuple(pair)
    if not per_image:
        raise ConfigError(f"--clean: no file in {clean} has the name of a photo")
    count = len(per_image)
    return {"images": count, **{k: v / count for k, v in sums.items()}, "per_image": per_image}


def classical_scores(photos: list[Path], source: Path, clean: Path, device: str) -> dict:
    """``scores`` of the classical core (methods/classical.py, what --method classical writes) on the same photos,
    its outputs in a temporary folder: what the trained path is measured against."""
    import tempfile

    from amcfd.cli import denoise_files
    from amcfd.options import validate

    opt = validate({"name": "classical core", "device": device, "method": {"type": "Classical"},
                    "path": {"pretrain_network": None}, "test": {"tile": 512, "tile_overlap": 32}}, "test")
    with tempfile.TemporaryDirectory(prefix="amcfd-classical-") as folder:
        denoise_files(opt, photos, source, Path(folder), desc="classical core (for the comparison)")
        return scores(Path(folder), photos, source, clean)


def trains(args) -> bool:
    """Whether this command trains (not --method classical, not --pretrained)."""
    return args.method == "trained" and not args.pretrained


def check_arguments(args) -> tuple[Path, Path]:
    """One-line errors before anything is written."""
    from amcfd.cli import check_output_folder
    from amcfd.hub.weights import is_release_name, resolve_checkpoint

    source, out_dir = Path(args.photos), Path(args.output)
    if not trains(args):
        given = [flag for flag, value in (("--budget-minutes", args.budget_minutes), ("--keep", args.keep),
                                          ("--options", args.options)) if value is not None]
        if given:
            which = "--pretrained" if args.pretrained else "--method classical"
            one = len(given) == 1
            raise ConfigError(f"{', '.join(given)} {'applies' if one else 'apply'} only to training, and {which} "
                              f"trains nothing: leave {'it' if one else 'them'} out")
    args.budget_minutes = DEFAULT_BUDGET if args.budget_minutes is None else args.budget_minutes
    args.keep = args.keep or "all"
    if args.budget_minutes <= 0:
        raise ConfigError(f"--budget-minutes must be > 0, got {args.budget_minutes}")
    if args.pretrained and args.method == "classical":
        raise ConfigError("--pretrained and --method classical exclude each other: give one")
    if args.pretrained and not (Path(args.pretrained).is_file() or is_release_name(args.pretrained)):
        raise ConfigError(f"--pretrained: no such file or released model (amcfd-weights list): {args.pretrained}")
    if args.clean and not Path(args.clean).is_dir():
        raise ConfigError(f"--clean: folder does not exist: {args.clean}")
    if args.options and not Path(args.options).is_dir():
        raise ConfigError(f"--options: folder does not exist: {args.options}")
    if source.is_file() and trains(args):
        raise ConfigError(f"{source} is one photo: training needs a folder of them (or give --pretrained)")
    check_output_folder(source, out_dir)
    if args.pretrained:
        args.pretrained = resolve_checkpoint(args.pretrained)   # a released model's name: fetched once
    return source, out_dir


def train_all(args, source: Path, photos: list[Path], work: Path, summary: dict,
              started: float) -> tuple[Path, list[Path]]:
    """AM-CFD's stages (amcfd/stages.py) through the pipeline; a too-small budget is refused before any runs.
    Returns (the student's checkpoint, the folders removed once the photos are written: superseded stages, and
    what ``--keep`` does not keep)."""
    from amcfd.engine.budget import minimum_budget
    from amcfd.engine.inference import select_device
    from amcfd.engine.pipeline import Pipeline
    from amcfd.engine.runs import files_digest
    from amcfd.stages import amcfd_stages

    device = select_device(args.device)
    with stage_guard("plan", work / "denoise.log"):
        stages = amcfd_stages(source, args.options and Path(args.options), args.device, device.type)
        pipeline = Pipeline(work, stages, files_digest(photos, source), args.budget_minutes, source,
                            say=lambda line: print(line, file=sys.stderr))
        need, why = minimum_budget(pipeline, photos, device)
    if args.budget_minutes < need:
        raise ConfigError(f"--budget-minutes {args.budget_minutes:g} is too small for {len(photos)} photo(s) "
                          f"on {device.type}: {why}; give --budget-minutes {need * 1.1:.2g} or more (estimated)")
    needed = pipeline.needed()
    student = pipeline.run(guard=lambda planned: stage_guard(planned.stage.name, planned.folder / "train.log"))
    for name in needed:
        planned = pipeline.plan[name]
        trainer, minutes = planned.ran["trainer"], planned.ran["minutes"]
        summary[name] = {"steps": int(planned.done.stem.split("_")[1]), "minutes": minutes,
                         "first_step_s": trainer.first_step_done - started if trainer and trainer.first_step_done
                         else None, "folder": str(planned.folder)}
    gone = pipeline.superseded() + [work / "teacher_targets"]     # the targets: a cache for a resumed coarse stage
    if args.keep != "all":
        gone += [p.folder for p in pipeline.plan.values() if p.stage.name != "fine" or args.keep == "outputs"]
    return student, gone


def run(argv=None) -> dict:
    from amcfd.cli import check_output_names, denoise_files, photo_files
    from amcfd.engine.runs import WorkLock
    from amcfd.options import validate

    started = time.perf_counter()
    args = _parser().parse_args(argv)
    source, out_dir = check_arguments(args)
    photos = photo_files(source)
    check_output_names(photos, source, out_dir)
    work = Path(args.work) if args.work else default_work(source)
    summary: dict = {}
    with WorkLock(work) if trains(args) else contextlib.nullcontext():    # the whole run: planning to the last photo
        gone: list[Path] = []                # --keep: removed once the photos are written (the student first)
        if args.method == "classical":
            model, method = CLASSICAL_MODEL, {"type": "Classical"}
        elif args.pretrained:
            model, method = Path(args.pretrained), {}
        else:
            model, gone = train_all(args, source, photos, work, summary, started)
            method = {"type": "SinglePass"}
        start = time.perf_counter()
        with stage_guard("denoise", work / "denoise.log"):
            opt = validate({"name": "denoise", "device": args.device, "method": method,
                            "path": {"pretrain_network": None if args.method == "classical" else str(model)},
                            "test": {"tile": 512, "tile_overlap": 32}}, "test")
            written = denoise_files(opt, photos, source, out_dir)
        for folder in gone:
            shutil.rmtree(folder, ignore_errors=True)
    summary["denoise"] = {"images": written, "minutes": (time.perf_counter() - start) / 60}
    if args.clean:
        summary["scores"] = scores(out_dir, photos, source, Path(args.clean))
        if args.method != "classical":
            summary["classical"] = classical_scores(photos, source, Path(args.clean), args.device)
    print(format_summary(summary, model, out_dir))
    return summary


def trained_stages(summary: dict) -> dict:
    """The stages' entries of ``run``'s summary (steps, minutes: None for a kept stage)."""
    return {k: v for k, v in summary.items() if k not in ("denoise", "scores", "classical")}


def below_input(scores: dict) -> int:
    """How many photos of ``scores`` (``scores()``) end more than BELOW_DB below their noisy input."""
    from amcfd.analysis.report import BELOW_DB

    return sum(o < i - BELOW_DB for i, o in scores["per_image"].values())


def format_summary(summary: dict, model: Path, out_dir: Path) -> str:
    lines = ["", "| stage | steps | minutes | first step (s after the start) |", "|---|---|---|---|"]
    for stage, s in trained_stages(summary).items():
        minutes = "kept" if s["minutes"] is None else f"{s['minutes']:.1f}"
        first = f"{s['first_step_s']:.1f}" if s.get("first_step_s") is not None else ""
        lines.append(f"| {stage} | {s['steps']} | {minutes} | {first} |")
    d = summary["denoise"]
    lines.append(f"| denoise ({d['images']} images) | | {d['minutes']:.1f} | |")
    if "scores" in summary:
        s = summary["scores"]
        lines += ["", f"Against the clean references ({s['images']} images):", "",
                  "| | PSNR | SSIM (skimage) | SSIM (MATLAB-style) |", "|---|---|---|---|"]
        for what in ("input", "output"):
            lines.append(f"| {what} | {s[what + ' PSNR']:.2f} | {s[what + ' SSIM']:.4f} | "
                         f"{s[what + ' SSIM-MATLAB']:.4f} |")
        core = summary.get("classical")
        if core:
            lines.append(f"| the classical core (--method classical) | {core['output PSNR']:.2f} | "
                         f"{core['output SSIM']:.4f} | {core['output SSIM-MATLAB']:.4f} |")
        from amcfd.analysis.report import BELOW_DB

        lines += ["", f"Output below its input by more than {BELOW_DB} dB: {below_input(s)} of {s['images']} photos."]
        if core:
            gain = s["output PSNR"] - core["output PSNR"]
            lines.append(f"Against the classical core: {gain:+.2f} dB (mean PSNR)."
                         + ("" if gain > 0 else " On these photos this model does not beat the classical core: "
                            "`--method classical` gives the core's result without training."))
    lines += ["", f"model: {model}", f"denoised photos: {out_dir}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    from amcfd.cli import _run

    return _run(run, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
