"""Noise level and spatial correlation of the noisy images in a folder, and the choices they suggest.

    python scripts/noise_report.py FOLDER [--max-images N] [--json OUT]

Prints one row per image (noise std in 8-bit levels, normalised noise correlation at lags 1, 2, 3 px), the
medians and the choices of ``amcfd.noise.estimate.suggest_choices`` (what ``auto`` options pick in training).
Measured from the noisy images alone (method and its bias: amcfd/noise/estimate.py). Bad input: one line
``error: ...`` on stderr and exit code 2; files that are not images, or cannot be read or measured, are skipped
with a warning.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amcfd.cli import EXIT_CONFIG  # noqa: E402
from amcfd.data.imageio import is_image_file, list_images  # noqa: E402
from amcfd.noise.estimate import measure_folder  # noqa: E402

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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="folder of noisy images (or one image file)")
    parser.add_argument("--max-images", type=int, default=None, help="measure only the first N images (sorted)")
    parser.add_argument("--json", default=None, help="also write the measurements to this JSON file")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    if args.max_images is not None and args.max_images < 1:
        print(f"error: --max-images must be at least 1, got {args.max_images}", file=sys.stderr)
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
    result = measure_folder(files, lags=LAGS, max_images=args.max_images,
                            on_skip=lambda name, why: print(f"warning: skipping {name}: {why}", file=sys.stderr))
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
