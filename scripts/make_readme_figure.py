"""The README's before/after picture: noisy | denoised | clean crops of a held-out synthetic demo image.

    python train.py -opt options/train/demo.yml            # the demo model (a few minutes on 2 CPU cores)
    python scripts/make_readme_figure.py                    # -> docs/images/demo_before_after.png

The image is one of the demo's held-out renderings (scikit-image's sample through the simulated camera,
amcfd/data/synthetic.py; no licensed data). The whole image is denoised with ``valid.py``'s code
(``build_denoiser``), then the same crop is cut from the three images; PSNR of the crop is written under each.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from amcfd.data.imageio import to_image, write_image  # noqa: E402
from amcfd.data.synthetic import SyntheticCameraNoise  # noqa: E402
from amcfd.engine.inference import build_denoiser  # noqa: E402
from amcfd.metrics import psnr  # noqa: E402
from amcfd.options import validate  # noqa: E402
from amcfd.registry import ConfigError  # noqa: E402


def labelled(tile: np.ndarray, text: str, band: int = 22) -> np.ndarray:
    """The tile (H, W, 3) in [0, 1] over a white band holding ``text``."""
    out = np.full((tile.shape[0] + band, tile.shape[1], 3), 255, dtype=np.uint8)
    out[:tile.shape[0]] = np.round(np.clip(tile, 0, 1) * 255).astype(np.uint8)
    cv2.putText(out, text, (4, tile.shape[0] + band - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1,
                cv2.LINE_AA)
    return out.astype(np.float32) / 255


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=str(REPO / "experiments/demo/models"),
                   help="a checkpoint or a models/ folder (default: the demo's)")
    p.add_argument("--image", default="chelsea", choices=["coffee", "chelsea"], help="held-out demo image")
    p.add_argument("--crop", type=int, nargs=3, default=[60, 150, 200], metavar=("TOP", "LEFT", "SIZE"))
    p.add_argument("--out", default=str(REPO / "docs/images/demo_before_after.png"))
    args = p.parse_args(argv)
    top, left, size = args.crop
    if min(top, left) < 0 or size < 1:
        p.error(f"--crop: TOP and LEFT must be at least 0 and SIZE at least 1, got {top} {left} {size}")
    try:
        opt = validate({"name": "figure", "device": "cpu", "path": {"pretrain_network": args.checkpoint}}, "test")
        _, denoise = build_denoiser(opt)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    item = next(it for it in SyntheticCameraNoise(images=[args.image], with_clean=True, seed=100))
    with torch.no_grad():
        denoised = denoise(item["noisy"][None])[0]
    window = (slice(None), slice(top, top + size), slice(left, left + size))
    reference = item["clean"][window][None]
    tiles = []
    for name, image in (("noisy input", item["noisy"]), ("denoised", denoised), ("clean", item["clean"])):
        crop = image[window]
        score = "" if name == "clean" else f"  {psnr(crop[None], reference).item():.2f} dB"
        tiles.append(labelled(to_image(crop), name + score))
    gap = np.ones((tiles[0].shape[0], 6, 3), dtype=np.float32)
    figure = np.concatenate([tiles[0], gap, tiles[1], gap, tiles[2]], axis=1)
    out = write_image(args.out, np.clip(figure, 0, 1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
