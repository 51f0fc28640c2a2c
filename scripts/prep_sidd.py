"""Cut SIDD-Medium sRGB frames into overlapping tiles so that training reads small files.

    python scripts/prep_sidd.py --input datasets/SIDD/SIDD_Medium_Srgb --output datasets/SIDD/medium_512
    python scripts/prep_sidd.py --input ... --output ... --size 512 --stride 256 --workers 8 --gt

Reads ``<input>/Data/<scene>/<id>_NOISY_SRGB_01{0,1}.PNG`` (the official download, unchanged) and
writes ``<output>/noisy/<id>_<frame>_<top>_<left>.png`` (with ``--gt`` also ``<output>/gt/...``)
and ``<output>/meta_info.txt``, which ``SIDDMediumTrain(root: <output>)`` reads. Defaults follow the
AMSNet authors: 512x512 tiles with stride 256 (the last row/column of tiles is aligned with the frame
border, so every pixel is covered). Lossless PNG, 8-bit as the source. The run is resumable: stop it
at any time and start it again with the same arguments; finished frames are skipped.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amcfd.data.sidd import prepare_sidd_tiles  # noqa: E402
from amcfd.registry import ConfigError  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", required=True, help="SIDD_Medium_Srgb folder (or its Data folder)")
    parser.add_argument("--output", required=True, help="folder for the tiles and meta_info.txt")
    parser.add_argument("--size", type=int, default=512, help="tile size in pixels (default 512)")
    parser.add_argument("--stride", type=int, default=256, help="distance between tiles (default 256)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="processes (0 or 1: in this process)")
    parser.add_argument("--gt", action="store_true", help="also tile the ground-truth frames")
    args = parser.parse_args(argv)
    if args.size <= 0 or args.stride <= 0:
        parser.error(f"--size and --stride must be positive, got {args.size} and {args.stride}")
    try:
        meta = prepare_sidd_tiles(args.input, args.output, size=args.size, stride=args.stride,
                                  workers=args.workers, with_gt=args.gt, log=print)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    count = sum(1 for line in meta.read_text().splitlines() if line and not line.startswith("#"))
    print(f"{count} tiles listed in {meta}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
