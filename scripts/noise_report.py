"""Noise level and spatial correlation of the noisy images in a folder, and the choices they suggest.

    python scripts/noise_report.py FOLDER [--max-images N] [--json OUT] [--clean CLEAN_FOLDER [--write-docs NAME]]
    python scripts/noise_report.py --make-synthetic DIR      # synthetic camera-noise pairs (PNG and JPEG) for --clean

Prints one row per image (noise std in 8-bit levels, normalised noise correlation at lags 1, 2, 3 px), the
medians and the choices of ``amcfd.noise.estimate.suggest_choices`` (what ``auto`` options pick in training).
Measured from the noisy images alone (method and its bias: amcfd/noise/estimate.py). Bad input: one line
``error: ...`` on stderr and exit code 2; files that are not images, or cannot be read or measured, are skipped
with a warning.

With ``--clean``, the estimators are checked against the clean images of the same names (or, failing that, the
same name up to the extension, e.g. a JPEG and its PNG original): per image, the image-wide level
(``image_noise_level``, what a denoiser is given), the flat-tile level (``noise_level``), the true noise std
std(noisy - clean) over all channels and pixels (8-bit levels) and both ratios to it; then the median, 10th and
90th percentile of the ratios.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amcfd.cli import EXIT_CONFIG  # noqa: E402
from amcfd.data.imageio import ImageReadError, is_image_file, list_images, read_image, to_tensor  # noqa: E402
from amcfd.noise.estimate import image_noise_level, measure_folder, noise_level  # noqa: E402

LAGS = (1, 2, 3)


def format_report(result: dict) -> str:
    """The table of ``measure_folder``'s result (levels in 8-bit levels)."""
    width = max([len("image")] + [len(r["name"]) for r in result["images"]])
    head = f"{'image':<{width}}  {'std (8-bit)':>11}  " + "  ".join(f"{f'corr lag {s}':>10}" for s in LAGS)
    lines = [head, "-" * len(head)]
    for r in result["images"]:
        lines.append(f"{r['name']:<{width}}  {r['level'] * 255:>11.2f}  "
                     + "  ".join(f"{r['corr'][s]:>10.3f}" for s in LAGS))
    lines.append("-" * len(head))
    lines.append(f"{'median':<{width}}  {result['median_level'] * 255:>11.2f}  "
                 + "  ".join(f"{result['median_corr'][s]:>10.3f}" for s in LAGS))
    c = result["choices"]
    lines.append(f"{len(result['images'])} images; suggested: pd_train {c['pd_train']}, pd_test {c['pd_test']}, "
                 f"recharge {str(c['recharge']).lower()}")
    return "\n".join(lines)


def _clean_match(noisy: Path, clean: dict) -> Path | None:
    """The clean image of ``noisy``: same file name, else the same name up to the extension (if unique)."""
    if noisy.name in clean:
        return clean[noisy.name]
    same_stem = [p for p in clean.values() if p.stem == noisy.stem]
    return same_stem[0] if len(same_stem) == 1 else None


def compare_with_clean(files: list, clean_folder: Path, on_skip, learned=None) -> list:
    """Per image: {"name", "level" (image_noise_level), "old" (noise_level, nan if it cannot measure),
    "true" (std of noisy - clean)}, all in [0, 1] units, and "learned" (the noise a posterior network learned,
    ``learned.image_noise_level``) when ``learned`` is given; images without a clean match are skipped."""
    clean = {p.name: p for p in list_images(clean_folder)}
    rows = []
    for path in files:
        match = _clean_match(path, clean)
        if match is None:
            on_skip(path.name, f"no clean image of that name in {clean_folder}")
            continue
        try:
            noisy, target = to_tensor(read_image(path)[0]), to_tensor(read_image(match)[0])
            if noisy.shape != target.shape:
                raise ValueError(f"size {tuple(noisy.shape)} differs from the clean image's {tuple(target.shape)}")
            level = image_noise_level(noisy)
        except (ImageReadError, ValueError) as exc:
            on_skip(path.name, str(exc))
            continue
        try:
            old = noise_level(noisy)
        except ValueError:
            old = float("nan")
        row = {"name": path.name, "level": level, "old": old, "true": float((noisy - target).std())}
        if learned is not None:
            row["learned"] = learned.image_noise_level(noisy.float())
        rows.append(row)
    return rows


def learned_noise_model(checkpoint: str):
    """The Posterior network (archs/posterior.py) of a checkpoint trained with AMSNet's ``posterior``."""
    from amcfd.archs import build_arch
    from amcfd.engine.checkpoint import load_checkpoint
    from amcfd.engine.inference import load_network_weights

    ckpt = load_checkpoint(checkpoint)
    network = (ckpt.get("opt") or {}).get("network") or {}
    if network.get("type") != "Posterior":
        raise ValueError(f"--learned: {checkpoint} is not a Posterior network (network.type {network.get('type')})")
    net = build_arch(network)
    load_network_weights(net, ckpt, strict=True, use_ema=True, source=checkpoint)
    return net.eval()


def ratio_rows(rows: list) -> list:
    """(key, label) of the estimates the rows hold, for the ratio tables."""
    keys = [("level", "image-wide"), ("old", "flat-tile")]
    return keys + ([("learned", "learned")] if rows and "learned" in rows[0] else [])


def ratio_percentiles(rows: list, key: str) -> tuple | None:
    """(p10, median, p90, count) of the finite ratios ``row[key] / row['true']``, or None when there are none."""
    ratios = np.array([r[key] / r["true"] for r in rows])
    ratios = ratios[np.isfinite(ratios)]
    return (*np.percentile(ratios, [10, 50, 90]), len(ratios)) if len(ratios) else None


def format_clean_report(rows: list) -> str:
    """The table of ``compare_with_clean``'s rows (std in 8-bit levels) and the percentiles of the ratios."""
    keys = ratio_rows(rows)
    width = max([len("image")] + [len(r["name"]) for r in rows])
    head = f"{'image':<{width}}" + "".join(f"  {label:>10}" for _, label in keys) + f"  {'true':>7}" + "".join(
        f"  {label + '/true':>15}" for _, label in keys)
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['name']:<{width}}" + "".join(f"  {r[k] * 255:>10.2f}" for k, _ in keys)
                     + f"  {r['true'] * 255:>7.2f}" + "".join(f"  {r[k] / r['true']:>15.3f}" for k, _ in keys))
    lines.append("-" * len(head))
    for key, label in keys:
        stats = ratio_percentiles(rows, key)
        lines.append(f"{label}/true median {stats[1]:.3f}  p10 {stats[0]:.3f}  p90 {stats[2]:.3f}  "
                     f"({stats[3]} images)" if stats else f"{label}/true: no finite ratios")
    lines.append("image-wide: image_noise_level, flat-tile: noise_level (flattest tiles), true: std(noisy - clean);"
                 " std in 8-bit levels")
    return "\n".join(lines)


SYNTHETIC_LEVELS = {"low": (1.5e-3, 6e-5), "mid": (8e-3, 3e-4), "high": (3e-2, 1.2e-3)}   # (shot, read) variances
SYNTHETIC_FORMATS = {"png": None, "q95": 95, "q85": 85}                                   # JPEG quality


def make_synthetic_pairs(root: Path, side: int = 512) -> int:
    """The demo's camera pipeline (amcfd.data.synthetic: mosaic, Poisson-Gaussian noise, demosaicing, gamma) on
    the central ``side`` crop of each scikit-image sample at each of ``SYNTHETIC_LEVELS``, saved as PNG and as JPEG
    (``SYNTHETIC_FORMATS``): root/noisy/IMAGE_LEVEL_FORMAT.png|jpg and root/clean/IMAGE_LEVEL_FORMAT.png."""
    import cv2

    from amcfd.data.synthetic import SAMPLE_IMAGES, camera_pipeline, load_sample_image

    (root / "noisy").mkdir(parents=True, exist_ok=True)
    (root / "clean").mkdir(parents=True, exist_ok=True)
    count = 0
    for li, (level, (shot, read)) in enumerate(SYNTHETIC_LEVELS.items()):
        for i, name in enumerate(SAMPLE_IMAGES):
            image = load_sample_image(name)
            top, left = (max(0, (n - side) // 2) for n in image.shape[:2])
            image = image[top:top + side, left:left + side]
            noisy = camera_pipeline(image, shot, read, np.random.default_rng(1000 * li + i))
            clean = camera_pipeline(image, 0, 0, None)
            for fmt, quality in SYNTHETIC_FORMATS.items():
                stem = f"{name}_{level}_{fmt}"
                bgr = np.round(noisy[..., ::-1] * 255).astype(np.uint8)
                cv2.imwrite(str(root / "noisy" / (stem + (".png" if quality is None else ".jpg"))), bgr,
                            [] if quality is None else [cv2.IMWRITE_JPEG_QUALITY, quality])
                cv2.imwrite(str(root / "clean" / f"{stem}.png"), np.round(clean[..., ::-1] * 255).astype(np.uint8))
                count += 1
    return count


def clean_report_markdown(rows: list) -> str:
    """``compare_with_clean``'s rows as a markdown table (8-bit levels) with the ratios' median and p10-p90."""
    keys = ratio_rows(rows)
    lines = ["Per image: the image-wide level (`noise.estimate.image_noise_level`), the flat-tile level "
             "(`noise_level`)" + (", the level a posterior network learned (`archs/posterior.py`)"
                                  if len(keys) > 2 else "") + " and the true std of (noisy - clean), in 8-bit "
             "levels, and their ratios.", "", "| ratio | median | p10 | p90 | images |", "|---|---|---|---|---|"]
    for key, label in keys:
        stats = ratio_percentiles(rows, key)
        if stats:
            lines.append(f"| {label} / true | {stats[1]:.2f} | {stats[0]:.2f} | {stats[2]:.2f} | {stats[3]} |")
    lines += ["", "| image | " + " | ".join(label for _, label in keys) + " | true | "
              + " | ".join(f"{label} / true" for _, label in keys) + " |", "|---" * (2 * len(keys) + 2) + "|"]
    lines += [f"| {r['name']} | " + " | ".join(f"{r[k] * 255:.2f}" for k, _ in keys) + f" | {r['true'] * 255:.2f} | "
              + " | ".join(f"{r[k] / r['true']:.2f}" for k, _ in keys) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", help="folder of noisy images (or one image file)")
    parser.add_argument("--max-images", type=int, default=None, help="measure only the first N images (sorted)")
    parser.add_argument("--json", default=None, help="also write the measurements to this JSON file")
    parser.add_argument("--clean", default=None, metavar="FOLDER",
                        help="clean images of the same names: compare the estimated levels with std(noisy - clean)")
    parser.add_argument("--make-synthetic", default=None, metavar="DIR",
                        help="write synthetic camera-noise pairs (the demo's pipeline at 3 levels, saved as PNG and "
                             "JPEG quality 95 and 85) to DIR/noisy and DIR/clean, for --clean, and stop")
    parser.add_argument("--learned", default=None, metavar="CHECKPOINT",
                        help="with --clean: also the noise level a posterior network learned (AMSNet posterior: true)")
    parser.add_argument("--write-docs", default=None, metavar="NAME",
                        help="with --clean: write the per-image table to docs/results.md, section 'Noise level: NAME'")
    args = parser.parse_args(argv)
    if args.make_synthetic:
        written = make_synthetic_pairs(Path(args.make_synthetic))
        print(f"wrote {written} noisy/clean pairs to {args.make_synthetic}")
        return 0
    if args.folder is None:
        print("error: give the folder of noisy images (or --make-synthetic DIR)", file=sys.stderr)
        return EXIT_CONFIG
    folder = Path(args.folder)
    if args.max_images is not None and args.max_images < 1:
        print(f"error: --max-images must be at least 1, got {args.max_images}", file=sys.stderr)
        return EXIT_CONFIG
    if args.learned is not None and args.clean is None:
        print("error: --learned needs --clean (the learned level is compared with the true noise)", file=sys.stderr)
        return EXIT_CONFIG
    if args.write_docs is not None and args.clean is None:
        print("error: --write-docs needs --clean (the per-image ratios to the true noise)", file=sys.stderr)
        return EXIT_CONFIG
    if args.clean is not None and not Path(args.clean).is_dir():
        print(f"error: --clean {args.clean} is not a folder", file=sys.stderr)
        return EXIT_CONFIG
    try:
        files = list_images(folder)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if folder.is_dir():
        others = sorted(p.name for p in folder.iterdir()
                        if p.is_file() and not is_image_file(p) and not p.name.startswith("."))
        if others:
            shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            print(f"warning: skipping {len(others)} non-image file(s) in {folder}: {shown}", file=sys.stderr)
    if not files:
        print(f"error: no images (png, jpg, tif, bmp, webp) found in {folder}", file=sys.stderr)
        return EXIT_CONFIG
    def skip(name, why):
        print(f"warning: skipping {name}: {why}", file=sys.stderr)

    if args.clean is not None:
        try:
            learned = learned_noise_model(args.learned) if args.learned else None
        except (OSError, ValueError, KeyError) as exc:
            print(f"error: --learned: {exc}".replace("--learned: --learned:", "--learned:"), file=sys.stderr)
            return EXIT_CONFIG
        rows = compare_with_clean(files[:args.max_images] if args.max_images else files, Path(args.clean), skip,
                                  learned)
        if not rows:
            print(f"error: none of the {len(files)} images in {folder} could be compared with {args.clean}",
                  file=sys.stderr)
            return EXIT_CONFIG
        print(format_clean_report(rows))
        if args.write_docs:
            from amcfd.analysis.results_doc import command_line, update_section

            written = update_section(f"Noise level: {args.write_docs}", clean_report_markdown(rows),
                                     command_line(__file__, argv))
            print(f"wrote section 'Noise level: {args.write_docs}' of {written}")
        if args.json:
            out = {"folder": str(folder), "clean": args.clean, "units": "std in [0, 1]", "images": rows}
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        return 0
    result = measure_folder(files, lags=LAGS, max_images=args.max_images, on_skip=skip)
    if not result["images"]:
        print(f"error: none of the {len(files)} images in {folder} could be measured", file=sys.stderr)
        return EXIT_CONFIG
    print(format_report(result))
    if args.json:
        out = {**result, "folder": str(folder), "units": "level: std in [0, 1]",
               "skipped": [{"name": n, "reason": r} for n, r in result["skipped"]]}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
