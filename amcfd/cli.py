"""Command-line entry points: ``train.py`` / ``valid.py`` / ``test.py`` and ``amcfd-*`` scripts."""
from __future__ import annotations

import argparse
import errno
import json
import logging
import sys
from pathlib import Path

from amcfd.registry import ConfigError

log = logging.getLogger("amcfd")

EXIT_CONFIG = 2  # bad options or input: one-line message, no traceback
EXIT_FAILED = 1  # training stopped (e.g. non-finite loss)
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)   # one-line errors with exit code 1


def _add_option_args(p: argparse.ArgumentParser, required: bool) -> argparse.ArgumentParser:
    """-opt FILE and --set KEY=VALUE ..., shared by every entry point."""
    p.add_argument("-opt", "--opt", required=required, help="YAML option file")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override options, e.g. --set train.lr=2e-4 network.type=NAFNet")
    return p


def _parser(prog: str, phase: str) -> argparse.ArgumentParser:
    return _add_option_args(argparse.ArgumentParser(prog=prog, description=f"AM-CFD {phase}"), required=True)


def benchmark_parser(description: str, input_key: str, input_help: str) -> argparse.ArgumentParser:
    """Parser of the submission scripts: -opt, --set, --<input_key>, --out."""
    p = _add_option_args(argparse.ArgumentParser(description=description), required=False)
    p.add_argument(f"--{input_key}", help=input_help)
    p.add_argument("--out", help="output folder")
    return p


def benchmark_inputs(parser: argparse.ArgumentParser, args, denoise_fn, dataset_type: str, input_key: str,
                     out_name: str) -> tuple:
    """(denoise_fn, input path, output folder) for a submission script.

    With ``denoise_fn`` given (tests), ``--<input_key>`` and ``--out`` are required. Otherwise the
    trained model of ``-opt`` is loaded; the input defaults to ``input_key`` of the option file's first
    ``datasets`` entry of ``dataset_type``, the folder to ``results/<name>/<out_name>``.
    """
    from amcfd.engine.inference import build_denoiser
    from amcfd.options import load_options

    given = getattr(args, input_key)
    if denoise_fn is not None:
        if not (given and args.out):
            parser.error(f"--{input_key} and --out are required with a given denoise_fn")
        return denoise_fn, given, args.out
    if not args.opt:
        parser.error("-opt is required")
    opt = load_options(args.opt, args.set, phase="test")
    if given is None:
        entries = [cfg for cfg in (opt.get("datasets") or {}).values() if cfg.get("type") == dataset_type]
        if not entries:
            raise ConfigError(f"give --{input_key} or a datasets entry {{type: {dataset_type}, {input_key}: ...}}")
        given = entries[0][input_key]
    out_dir = args.out or Path(opt["path"]["results_root"]) / opt["name"] / out_name
    _, denoise_fn = build_denoiser(opt)
    return denoise_fn, given, out_dir


def _run(fn, argv) -> int:
    """Run fn(argv); configuration errors become one line on stderr and exit code 2."""
    from amcfd.engine.logger import setup_console_logging

    setup_console_logging()
    try:
        fn(argv)
    except ConfigError as exc:                   # a bad option or a path the user gave (InputNotFound)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno not in DISK_ERRORS:
            raise
        kept = "" if exc.errno == errno.EIO else " (files written before are intact)"    # EIO: no promise
        print(f"error: {exc}{kept}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        from amcfd.engine.trainer import TrainingError

        if isinstance(exc, TrainingError):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        raise
    return 0


# ----------------------------------------------------------------------------- train
def _train(argv) -> None:
    from amcfd.engine import dist
    from amcfd.engine.trainer import Trainer
    from amcfd.options import load_options

    p = _parser("train.py", "training")
    p.add_argument("--auto-resume", "--auto_resume", dest="auto_resume", action="store_true",
                   help="continue from the latest checkpoint (--auto_resume: the same)")
    p.add_argument("--launcher", choices=["none", "pytorch"], default="none",
                   help="'pytorch' under torchrun (multi-GPU / multi-node)")
    p.add_argument("--debug", action="store_true", help="a few iterations, frequent logs/validation/saves")
    p.add_argument("--local_rank", type=int, default=0, help=argparse.SUPPRESS)  # torch.distributed.launch
    args = p.parse_args(argv)
    overrides = list(args.set)
    if args.debug:
        overrides += ["logger.print_freq=1", "val.val_freq=4", "logger.save_checkpoint_freq=4"]
    opt = load_options(args.opt, overrides, phase="train")
    if args.debug:
        opt["name"] = "debug_" + opt["name"]
        opt["train"]["total_iter"] = min(opt["train"]["total_iter"], 8)
    trainer = Trainer(opt, launcher=args.launcher, auto_resume=args.auto_resume)
    main_rank = dist.is_main()
    try:
        trainer.train()
    finally:
        dist.cleanup()
    if main_rank:
        print(f"done: {trainer.exp_dir}")


def main_train(argv=None) -> int:
    return _run(_train, sys.argv[1:] if argv is None else argv)


# ----------------------------------------------------------------------------- valid
def _valid(argv) -> None:
    """valid.py: the metrics of option ``val.metrics`` when the option file (or --set) names them, else PSNR
    and both SSIMs (skimage, MATLAB); table in metrics.md, means and per-image values in metrics.json (the mean
    of 'ssim' under the key 'ssim_skimage', every other metric under its own name)."""
    from amcfd.engine.inference import build_dataset, build_denoiser, evaluate, format_table, method_device
    from amcfd.metrics import report_key
    from amcfd.options import dataset_sets, load_options, validate

    args = _parser("valid.py", "validation").parse_args(argv)
    given = load_options(args.opt, args.set)
    named = isinstance(given, dict) and isinstance(given.get("val"), dict) and "metrics" in given["val"]
    opt = validate(given, "valid")
    sets = dataset_sets(opt, "valid")
    if not sets:
        raise ConfigError("no evaluation sets: add datasets.val_<name> or datasets.test_<name> entries")
    method, denoise_fn = build_denoiser(opt)
    device = method_device(method)
    metrics = list(opt["val"]["metrics"]) if named else ["psnr", "ssim", "ssim_matlab"]
    out_dir = Path(opt["path"]["results_root"]) / opt["name"]
    results = {}
    for name, cfg in sets.items():
        dataset, loader_opts = build_dataset(cfg, f"datasets.{name}")
        saver = _image_saver(out_dir / name) if opt["test"]["save_img"] else None
        results[name] = evaluate(denoise_fn, dataset, loader_opts, metrics, device, on_image=saver)
        results[name].pop("visuals")
    table = format_table(results, metrics)
    print(table)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.md").write_text(table + "\n")
    report = {name: {"n": r["n"], **{report_key(m): r[m] for m in metrics},
                     "sec_per_image": r["sec_per_image"], "per_image": r["per_image"]}
              for name, r in results.items()}
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out_dir / 'metrics.json'}")


def _image_saver(folder: Path):
    from amcfd.data.imageio import to_image, write_image

    def save(item, denoised):
        name = item["name"][0] if isinstance(item["name"], (list, tuple)) else item["name"]
        write_image(folder / f"{Path(str(name)).stem}.png", to_image(denoised[0].cpu()))

    return save


def main_valid(argv=None) -> int:
    return _run(_valid, sys.argv[1:] if argv is None else argv)


# ----------------------------------------------------------------------------- test
def _test(argv) -> None:
    from amcfd.options import load_options, validate

    p = _parser("test.py", "denoising of a folder or file of photos")
    p.add_argument("--input", help="image file or folder (overrides test.input)")
    p.add_argument("--output", help="output folder (overrides test.output)")
    args = p.parse_args(argv)
    opt = load_options(args.opt, args.set)
    for key in ("input", "output"):                   # as given: a folder named 20240101 stays a name
        if getattr(args, key):
            opt.setdefault("test", {})[key] = getattr(args, key)
    opt = validate(opt, "test")
    source = opt["test"]["input"]
    if not source:
        raise ConfigError("nothing to denoise: give --input PATH or option 'test.input'")
    out_dir = Path(opt["test"]["output"] or Path(opt["path"]["results_root"]) / opt["name"] / "images")
    check_output_folder(Path(source), out_dir)
    files = photo_files(source)
    check_output_names(files, Path(source), out_dir)
    written = denoise_files(opt, files, Path(source), out_dir)
    print(f"denoised {written} of {len(files)} images into {out_dir}")


def denoise_files(opt: dict, files: list[Path], source: Path, out_dir: Path, desc: str = "denoise") -> int:
    """Denoise ``files`` (from ``source``, a folder or one file) with the trained method of ``opt`` into
    ``out_dir`` (same relative paths, sub-folders included; JPEG -> PNG; bit depth, gray and alpha kept); unreadable
    images are skipped with a warning, and when none reads: ConfigError. Returns how many were written."""
    import torch

    from amcfd.data.imageio import ImageReadError, read_image, to_image, to_tensor, warn_skipped, write_image
    from amcfd.engine.inference import build_denoiser
    from amcfd.progress import progress_bar

    method, denoise_fn = build_denoiser(opt)
    in_channels = _input_channels(method)
    written, unreadable = 0, []
    for path in progress_bar(files, desc=desc):
        try:
            img, info = read_image(path)
        except ImageReadError as exc:
            warn_skipped(exc)
            unreadable.append(exc)
            continue
        x = to_tensor(img)[None]  # (1, C, H, W)
        channels = x.shape[1]
        if channels == 1 and in_channels == 3:
            x = x.expand(-1, 3, -1, -1)
        with torch.no_grad():
            y = denoise_fn(x).cpu()
        if channels == 1 and in_channels == 3:
            y = y.mean(dim=1, keepdim=True)
        write_image(output_path(path, source, out_dir), to_image(y[0]), bit_depth=info["bit_depth"],
                    alpha=info.get("alpha"), icc=info.get("icc"), exif=info.get("exif"))
        written += 1
    if files and len(unreadable) == len(files):
        raise ConfigError(f"none of the {len(files)} images in {source} can be read, e.g. {unreadable[0]}")
    return written


def output_path(path: Path, source: Path, out_dir: Path) -> Path:
    """Where the denoised ``path`` goes: its path relative to ``source`` under ``out_dir``, JPEG as PNG."""
    rel = path.relative_to(source) if source.is_dir() else Path(path.name)
    return out_dir / rel.with_suffix(".png" if path.suffix.lower() in (".jpg", ".jpeg") else path.suffix)


def check_output_names(files: list[Path], source: Path, out_dir: Path) -> None:
    """One-line ConfigError when two photos would be written to the same output (``a.jpg`` and ``a.png``)."""
    seen: dict[Path, Path] = {}
    for path in files:
        out = output_path(path, source, out_dir)
        if out in seen:
            raise ConfigError(f"{seen[out]} and {path} would both be written to {out} (JPEG is written as PNG): "
                              "rename one of them")
        seen[out] = path


def photo_files(source) -> list[Path]:
    """The images to denoise: ``source`` itself, or the image files in the folder and its sub-folders (hidden
    files and folders left out; other files are skipped with a warning). A missing path, a single non-image
    file or a folder without images: ConfigError."""
    from amcfd.data.imageio import IMAGE_EXTENSIONS, is_image_file, list_images, visible_files

    source = Path(source)
    try:
        files = list_images(source, recursive=True)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    if source.is_dir():
        others = [p.relative_to(source).as_posix() for p in visible_files(source, recursive=True)
                  if not is_image_file(p)]
        if others:
            shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            log.warning("skipping %d file(s) that are not images we read (%s): %s", len(others),
                        " ".join(IMAGE_EXTENSIONS), shown)
    if not files:
        raise ConfigError(f"no images ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)}) found in {source}")
    return files


def check_output_folder(source: Path, out_dir: Path) -> None:
    """Never write into the photos being denoised: the output may not be the input folder or inside it."""
    if not source.exists():
        return                                    # photo_files names the missing input
    src = source.resolve() if source.is_dir() else source.resolve().parent
    out = out_dir.resolve()
    if out == src or src in out.parents:
        where = "the input folder" if out == src else "inside the input folder"
        raise ConfigError(f"output folder {out_dir} is {where} {source}: choose another, so the originals are "
                          "never overwritten")


def _input_channels(method) -> int:
    """Input channels of the method's network (first conv), 3 if unknown: ``amcfd.archs.input_channels``."""
    from amcfd.archs import input_channels

    return input_channels(method.net)


def main_test(argv=None) -> int:
    return _run(_test, sys.argv[1:] if argv is None else argv)
