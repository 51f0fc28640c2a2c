"""Classical references of the benchmark: OpenCV's non-local means and bilateral filter, per image, on 8 bits.

Their strength follows each image's own noise level (``amcfd.noise.estimate``, measured on the noisy image only)
unless a fixed value is given; ``CLASSICAL`` names them for ``classical:`` entries of a benchmark option file.
"""
from __future__ import annotations

import numpy as np
import torch

AUTO = "auto"


def _per_image_uint8(x: torch.Tensor, filter_image, measure: bool) -> torch.Tensor:
    """``filter_image(u8, sigma)`` on each image of (B, C, H, W) in [0, 1] as an HxWxC uint8 array, with
    ``sigma`` its noise level in 0..255 (noise/estimate.py, measured on the noisy image itself) when ``measure``,
    else None."""
    from amcfd.noise.estimate import noise_level

    out = []
    for image in x:
        u8 = np.round(image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
        sigma = None
        if measure:
            sigma = float(noise_level(torch.from_numpy(u8).permute(2, 0, 1).float()[None] / 255)) * 255
        filtered = np.ascontiguousarray(filter_image(u8, sigma)).reshape(u8.shape)
        out.append(torch.from_numpy(filtered).permute(2, 0, 1).float() / 255)
    return torch.stack(out).to(x.device)


def nlm(x: torch.Tensor, h: float | str = AUTO, template: int = 7, search: int = 21) -> torch.Tensor:
    """OpenCV non-local means (``fastNlMeansDenoisingColored``), per image; ``h: auto`` = the image's own noise
    level in 0..255 (measured on the noisy image only), for luma and colour alike."""
    import cv2

    def one(u8: np.ndarray, sigma: float) -> np.ndarray:
        strength = sigma if h == AUTO else float(h)
        if u8.shape[-1] == 3:
            return cv2.fastNlMeansDenoisingColored(u8[..., ::-1].copy(), None, strength, strength, template,
                                                   search)[..., ::-1]
        return cv2.fastNlMeansDenoising(u8[..., 0], None, strength, template, search)

    return _per_image_uint8(x, one, measure=h == AUTO)


def bilateral(x: torch.Tensor, diameter: int = 5, sigma_color: float | str = AUTO,
              sigma_space: float = 3.0) -> torch.Tensor:
    """OpenCV bilateral filter, per image; ``sigma_color: auto`` = twice the image's noise level in 0..255.
    With a fixed ``sigma_color`` it is DistillCoarse's BF(I_N) (``ops.bilateral`` reproduces it on 8 bits)."""
    import cv2

    return _per_image_uint8(x, lambda u8, sigma: cv2.bilateralFilter(
        u8, diameter, 2 * sigma if sigma_color == AUTO else float(sigma_color), sigma_space),
        measure=sigma_color == AUTO)


CLASSICAL = {"nlm": nlm, "bilateral": bilateral}
