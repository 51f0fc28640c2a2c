"""Classical guides: filters of the noisy image whose strength follows its noise, never a clean image.

* ``bilateral``: ``ops.bilateral.bilateral_filter`` (OpenCV's algorithm in torch; AM-CFD's BF(I_N)).
* ``nlm``: OpenCV's non-local means (Buades et al. 2005; ``fastNlMeansDenoisingColored``, which filters luma and
  colour in Lab), per image on 8 bits, with filtering parameter h = ``strength`` x the image's own noise level in
  0..255 (``noise.estimate.noise_level``, measured on the noisy image) when ``h`` is ``auto``.

``GUIDES`` names them for ``method.guide`` of coarse distillation and for the benchmark's classical rows.
"""
from __future__ import annotations

import numpy as np
import torch

from amcfd.ops.bilateral import bilateral_filter

AUTO = "auto"


def per_image_uint8(x: torch.Tensor, filter_image, measure: bool) -> torch.Tensor:
    """``filter_image(u8, sigma)`` on each image of (B, C, H, W) in [0, 1] as an HxWxC uint8 array, with
    ``sigma`` its noise level in 0..255 (noise/estimate.py, measured on the noisy image itself; 0 for an image
    too small or saturated to measure) when ``measure``, else None."""
    from amcfd.noise.estimate import noise_level

    out = []
    for image in x:
        u8 = np.round(image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
        sigma = None
        if measure:
            try:
                sigma = float(noise_level(torch.from_numpy(u8).permute(2, 0, 1).float()[None] / 255)) * 255
            except ValueError:      # too small or too saturated to measure (estimate.py): no noise seen
                sigma = 0.0
        filtered = np.ascontiguousarray(filter_image(u8, sigma)).reshape(u8.shape)
        out.append(torch.from_numpy(filtered).permute(2, 0, 1).float() / 255)
    return torch.stack(out).to(x.device)


def nlm_filter(x: torch.Tensor, h: float | str = AUTO, strength: float = 1.0, template: int = 7,
               search: int = 21) -> torch.Tensor:
    """OpenCV non-local means per image of (B, C, H, W) in [0, 1]; ``h: auto`` = ``strength`` x the image's own
    noise level in 0..255, for luma and colour alike; a number is used as it is."""
    import cv2

    if h != AUTO and (isinstance(h, str) or h <= 0):
        raise ValueError(f"h must be 'auto' or > 0, got {h!r}")
    if strength <= 0 or template < 1 or search < template:
        raise ValueError(f"need strength > 0 and 1 <= template <= search, got {strength}, {template}, {search}")

    def one(u8: np.ndarray, sigma: float | None) -> np.ndarray:
        level = strength * sigma if h == AUTO else float(h)
        if u8.shape[-1] == 3:
            return cv2.fastNlMeansDenoisingColored(u8[..., ::-1].copy(), None, level, level, template,
                                                   search)[..., ::-1]
        return cv2.fastNlMeansDenoising(u8[..., 0], None, level, template, search)

    return per_image_uint8(x, one, measure=h == AUTO)


GUIDES = {"bilateral": bilateral_filter, "nlm": nlm_filter}
