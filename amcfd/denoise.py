"""``amcfd-denoise PHOTOS --output OUT``: from a folder of noisy photos to denoised photos in one command.

Stages (each a normal experiment folder under ``--work``, default experiments/denoise_<folder>_<path hash>/):

1. teacher: AMSNet on the photos themselves, options/train/photos.yml (its ``auto`` choices come from them);
2. coarse:  AM-CFD coarse distillation into a single-pass student (options/train/distill_coarse_cpu.yml; the
   teacher with its own PD stride and recharge, without R3, one rotated view, tiled: its targets fit the budget);
3. fine:    self-enhanced fine distillation (options/train/distill_fine_cpu.yml);
4. the student denoises the photos (sub-folders too) into ``--output``, mirroring the folder tree.

Budget: ``--budget-minutes`` is the training time, split 45 / 35 / 20 % over the stages. Each stage trains for
its share on whatever device it runs (``train.max_minutes`` with ``fill_budget``: the iteration count is fitted
to the time, up or down). On CUDA the packaged option files train larger networks (``CUDA_NETWORKS``: AMSNet's
published NAFNet teacher, the paper's NAFNet student, batch 8). A budget too small for a stage to reach a tenth
of its option file's ``total_iter`` (at least ``MIN_STEPS``) is refused before anything runs, with the smallest
budget that works, estimated from a few timed steps (engine/budget.py).

Reuse: a stage folder is named after its identity (engine/runs.py): the photos' paths, sizes and contents,
the stage's resolved options (the budget included) and the stage it starts from. The same work is reused (or
resumed after a crash); any difference trains anew in another folder, with one line saying what differed.
``--keep student`` keeps the fine stage only: a rerun with the same photos and options trains nothing; ``--keep``
(student or outputs) also removes the folders of stages superseded by a newer identity (other options or photos).
``--method classical`` skips training: the classical core (methods/classical.py: BM3D at a multiple of each
photo's own noise level, seconds per photo). ``--pretrained FILE`` skips training and denoises with a checkpoint
(ours, one imported by scripts/import_checkpoint.py, or a released model by name: ``amcfd-weights list``).
``--clean FOLDER`` (same relative names) adds PSNR/SSIM to the summary.
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

STAGES = ("teacher", "coarse", "fine")
SHARE = {"teacher": 0.45, "coarse": 0.35, "fine": 0.20}   # of --budget-minutes
FILES = {"teacher": "photos.yml", "coarse": "distill_coarse_cpu.yml", "fine": "distill_fine_cpu.yml"}
KEEP = ("all", "student", "outputs")
DEFAULT_BUDGET = 30.0       # --budget-minutes
# The coarse stage's teacher targets are computed inside its budget: without R3 and with one rotated view they
# take seconds per photo (P-E with 3 views took most of the stage's budget). Tiled, so 12-megapixel photos fit.
TEACHER_R3, TEACHER_VIEWS, TEACHER_TILE = False, [1], 512
TARGET_PIXELS = 1 << 20     # per photo: a larger one gives the coarse stage 512x512 regions of this many pixels
MIN_STEP_SHARE, MIN_STEPS = 0.1, 20     # the least a stage must train: this share of its total_iter, at least this
# On CUDA (packaged option files only): the networks the budget can train there.
CUDA_NETWORKS = {"teacher": {"type": "NAFNetBase", "preset": "published"},
                 "coarse": {"type": "NAFNet", "preset": "amcfd_student"},
                 "fine": {"type": "NAFNet", "preset": "amcfd_student"}}
CUDA_BATCH = 8
CLASSICAL_MODEL = "the classical core (BM3D at a multiple of each photo's own noise level; no training)"


DESCRIPTION = """From a folder of noisy photos to denoised photos, in one command.

By default it trains on the photos themselves, from the noisy photos alone: an AMSNet teacher, then AM-CFD
coarse and fine distillation into a single-pass student (--budget-minutes of training, split 45/35/20 %), and
the student denoises the photos. --method classical trains nothing (BM3D at each photo's own noise level,
seconds per photo); --pretrained uses a checkpoint or a released model instead."""

EPILOG = """stages and reuse:
  Each stage is an experiment folder under --work named after what it depends on (the photos' contents, the
  stage's options, the budget, the stage before it). A rerun reuses finished stages and resumes an interrupted
  one (even after kill -9) within what is left of its budget; anything changed trains anew in a new folder.
  One run at a time per work folder: a lock covers the whole run.
--keep:
  all (default) keeps every stage; student keeps the fine stage only (a rerun still trains nothing);
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
                   help="folder of clean references with the same names: PSNR/SSIM in the summary")
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


def stage_recipe(stage: str, args, device_type: str) -> dict:
    """The options of one stage that its result depends on: the option file, the device rule, the budget."""
    from amcfd import options
    from amcfd.data.folders import training_set_on

    opt = options.load_options(Path(args.options or options.CONFIG_DIR) / "train" / FILES[stage])
    train_set = training_set_on({"type": "NoisyFolder", "root": None}, opt["datasets"]["train"])
    if device_type == "cuda" and not args.options:
        opt["network"] = dict(CUDA_NETWORKS[stage])
        train_set["batch_size"] = CUDA_BATCH
    opt["datasets"] = {"train": train_set}
    opt["val"] = {**opt.get("val", {}), "val_freq": 0}
    opt["train"] = {**opt["train"], "max_minutes": args.budget_minutes * SHARE[stage], "fill_budget": True}
    opt["logger"] = {**opt.get("logger", {}), "use_tb_logger": False}
    opt.pop("name", None)
    opt.get("path", {}).pop("pretrain_network", None)
    if stage == "coarse":                 # the teacher's checkpoint and method come from the teacher stage
        teacher = {k: v for k, v in opt["method"]["teacher"].items() if k not in ("checkpoint", "method")}
        opt["method"] = {**opt["method"], "teacher": {**teacher, "tile": TEACHER_TILE}, "aug_modes": TEACHER_VIEWS}
        opt["datasets"]["train"]["max_pixels"] = TARGET_PIXELS      # targets of big photos: regions of them
    return opt


def stage_options(stage: str, recipe: dict, args, work: Path, folder: Path, previous: Path | None) -> dict:
    """The recipe made runnable: name, folders, the photos, the device and the checkpoint it starts from."""
    import copy

    from amcfd.engine.checkpoint import load_checkpoint

    opt = copy.deepcopy(recipe)
    opt["name"], opt["device"] = folder.name, args.device
    opt.setdefault("path", {})["experiments_root"] = str(work)
    opt["datasets"]["train"]["root"] = str(args.photos)
    if stage == "coarse":
        teacher_method = load_checkpoint(previous)["opt"]["method"]
        opt["method"]["teacher"].update(checkpoint=str(previous), cache_dir=str(work / "teacher_targets"),
                                        method={"pd_test": teacher_method["pd_test"], "r3": TEACHER_R3})
    if stage == "fine":
        opt["path"]["pretrain_network"] = str(previous)
    return opt


def plan_stages(args, source: Path, photos: list[Path], work: Path, device_type: str) -> list[dict]:
    """Per stage: its record (identity), folder, recipe, and whether a finished run of it exists."""
    from amcfd.engine.checkpoint import finished_run
    from amcfd.engine.runs import files_digest, identity_options, stage_folder, stage_record

    images = files_digest(photos, source)
    plan, previous = [], None
    for stage in STAGES:
        recipe = stage_recipe(stage, args, device_type)
        constants = {"TEACHER_R3": TEACHER_R3} if stage == "coarse" else {}     # set after the recipe
        record = stage_record(stage, images, identity_options(recipe, constants), previous)
        folder = stage_folder(work, record)
        plan.append({"stage": stage, "record": record, "folder": folder, "recipe": recipe,
                     "done": finished_run(folder)})
        previous = record["identity"]
    return plan


def minimum_budget(plan: list[dict], photos: list[Path], device) -> tuple[float, str]:
    """(the smallest --budget-minutes with which every stage still to train reaches its minimum steps, which
    stage limits it). Estimates: engine/budget.py; the coarse stage adds its teacher targets."""
    from amcfd.engine.budget import inference_seconds_per_pixel, step_seconds
    from amcfd.options import DEFAULTS

    need, why = 0.0, ""
    teacher_recipe = plan[0]["recipe"]
    for entry in plan:
        recipe = entry["recipe"]
        steps = max(MIN_STEPS, int(MIN_STEP_SHARE * recipe["train"].get("total_iter", DEFAULTS["train"]["total_iter"])))
        seconds = steps * step_seconds(recipe, device)
        extra = ""
        if entry["stage"] == "coarse":
            teacher = {**teacher_recipe, "method": {**teacher_recipe["method"], "r3": TEACHER_R3}}
            target_seconds = ((1 + len(TEACHER_VIEWS)) * pixels(photos, TARGET_PIXELS)
                              * inference_seconds_per_pixel(teacher, device))
            seconds += target_seconds
            extra = f" and {target_seconds / 60:.1f} min of teacher targets"
        minutes = seconds / 60 / SHARE[entry["stage"]]
        if minutes > need:
            need, why = minutes, f"the {entry['stage']} stage needs {steps} steps{extra}"
    return need, why


def pixels(photos: list[Path], per_photo: int) -> int:
    """Pixels of the photos, at most ``per_photo`` each, from their headers; a header that cannot be read counts
    as ``per_photo`` (the budget estimate errs on the safe side)."""
    from PIL import Image

    total = 0
    for path in photos:
        size = per_photo
        with contextlib.suppress(Exception), Image.open(path) as image:
            size = min(per_photo, image.size[0] * image.size[1])
        total += size
    return total


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


def train_stage(entry: dict, args, work: Path, previous: Path | None, summary: dict, started: float) -> Path:
    """Run (or resume, or reuse) one stage; returns its final checkpoint. ``started``: the command's start
    (perf_counter), from which the summary counts the stage's first step."""
    from amcfd.engine.checkpoint import finished_run
    from amcfd.engine.runs import latest_other_record, what_differs, write_record
    from amcfd.engine.trainer import Trainer
    from amcfd.options import validate

    stage, folder, record = entry["stage"], entry["folder"], entry["record"]
    done = finished_run(folder)
    if done is not None:
        print(f"[{stage}] the same work finished before: {done}", file=sys.stderr)
        summary[stage] = {"steps": int(done.stem.split("_")[1]), "minutes": None, "folder": str(folder)}
        return done
    if not folder.is_dir():
        other = latest_other_record(work, record)
        if other is not None:
            print(f"[{stage}] not the same work as {other[0]} ({what_differs(other[1], record)}): training anew "
                  f"in {folder}", file=sys.stderr)
    write_record(folder, record)
    print(f"[{stage}] training for {args.budget_minutes * SHARE[stage]:.1f} min in {folder}", file=sys.stderr)
    start = time.perf_counter()
    with stage_guard(stage, folder / "train.log"):
        opt = validate(stage_options(stage, entry["recipe"], args, work, folder, previous), "train")
        trainer = Trainer(opt, auto_resume=True)
        trainer.train()
    summary[stage] = {"steps": trainer.iteration, "minutes": (time.perf_counter() - start) / 60,
                      "first_step_s": (trainer.first_step_done or time.perf_counter()) - started, "folder": str(folder)}
    return finished_run(folder)


def scores(outputs: Path, photos: list[Path], source: Path, clean: Path) -> dict:
    """Mean PSNR / SSIM (both conventions) of the photos and of their denoised outputs against ``clean``."""
    import torch

    from amcfd.cli import output_path
    from amcfd.data.imageio import read_image, to_tensor
    from amcfd.metrics import psnr, ssim, ssim_matlab

    sums = {f"{what} {m}": 0.0 for what in ("input", "output") for m in ("PSNR", "SSIM", "SSIM-MATLAB")}
    count = 0
    for path in photos:
        out = output_path(path, source, outputs)
        ref = clean / (path.relative_to(source) if source.is_dir() else Path(path.name))
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
    """The three stages, from the last one already done; a too-small budget is refused before any runs.
    Returns (the student's checkpoint, the folders ``--keep`` removes once the photos are written)."""
    from amcfd.engine.inference import select_device

    device = select_device(args.device)
    with stage_guard("plan", work / "denoise.log"):
        plan = plan_stages(args, source, photos, work, device.type)
        first = max((i + 1 for i, e in enumerate(plan) if e["done"] is not None), default=0)
        need, why = minimum_budget(plan[first:], photos, device) if first < len(plan) else (0.0, "")
    if args.budget_minutes < need:
        raise ConfigError(f"--budget-minutes {args.budget_minutes:g} is too small for {len(photos)} photo(s) "
                          f"on {device.type}: {why}; give --budget-minutes {need * 1.1:.2g} or more (estimated)")
    previous = None
    for i, entry in enumerate(plan):
        if i >= first or entry["done"] is not None:          # stages before a finished one may be gone (--keep)
            previous = train_stage(entry, args, work, previous, summary, started)
    current = {e["folder"] for e in plan}
    superseded = [p for p in sorted(work.glob("*-*")) if p.is_dir() and p.name.split("-")[0] in STAGES
                  and p not in current]             # stages of earlier options or photos in this work folder
    gone = [] if args.keep == "all" else superseded + [work / "teacher_targets"] + \
        [e["folder"] for e in plan if e["stage"] != "fine" or args.keep == "outputs"]
    return previous, gone


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
    print(format_summary(summary, model, out_dir))
    return summary


def format_summary(summary: dict, model: Path, out_dir: Path) -> str:
    lines = ["", "| stage | steps | minutes | first step (s after the start) |", "|---|---|---|---|"]
    for stage in STAGES:
        if stage in summary:
            s = summary[stage]
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
    lines += ["", f"model: {model}", f"denoised photos: {out_dir}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    from amcfd.cli import _run

    return _run(run, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
