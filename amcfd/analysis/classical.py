"""Classical rows of the benchmark: the classical core's filters (``ops/guides.py``, the filters of the
``Classical`` method and of ``method.guide``) and OpenCV's bilateral filter, per image.

Their strength follows each image's own noise level (``amcfd.noise.estimate``, measured on the noisy image only)
unless a fixed value is given; ``CLASSICAL`` names them for ``classical:`` entries of a benchmark option file:
bm3d, classical (the core's choice), nlm, nlm2 (two scales), bilateral.
"""
from __future__ import annotations

import torch

from amcfd.ops.guides import AUTO, GUIDES, per_image_uint8


def bilateral(x: torch.Tensor, diameter: int = 5, sigma_color: float | str = AUTO,
              sigma_space: float = 3.0) -> torch.Tensor:
    """OpenCV bilateral filter, per image; ``sigma_color: auto`` = twice the image's noise level in 0..255.
    With a fixed ``sigma_color`` it is DistillCoarse's BF(I_N) (``ops.bilateral`` reproduces it on 8 bits)."""
    import cv2

    return per_image_uint8(x, lambda u8, sigma: cv2.bilateralFilter(
        u8, diameter, 2 * sigma if sigma_color == AUTO else float(sigma_color), sigma_space),
        measure=sigma_color == AUTO)


CLASSICAL = {**{k: v for k, v in GUIDES.items() if k != "bilateral"}, "bilateral": bilateral}
