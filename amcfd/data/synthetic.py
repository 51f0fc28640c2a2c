"""Synthetic "real-like" camera noise on the sample images that scikit-image ships.

Camera pipeline (after Brooks et al., "Unprocessing images for learned raw denoising", 2019):
sRGB -> inverse gamma -> inverse colour matrix -> inverse white balance -> RGGB mosaic ->
Poisson-Gaussian noise (variance = shot * x + read) -> bilinear demosaic -> white balance ->
colour matrix -> gamma -> optional JPEG. Demosaicing and the colour matrix spread each raw
sample's noise over its neighbours and channels, so the sRGB noise is spatially correlated and
signal dependent, like a phone photo. The clean image is the same pipeline without noise.
Everything is reproducible from ``seed``; training items never carry the clean image.
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy.ndimage import convolve
from torch.utils.data import Dataset

from amcfd.data.transforms import make_item
from amcfd.registry import DATASETS, ConfigError

# A typical camera-to-sRGB colour matrix (rows sum to 1) and white-balance gains (R, G, B).
CAMERA_TO_SRGB = np.array([[1.72, -0.58, -0.14], [-0.22, 1.55, -0.33], [0.02, -0.54, 1.52]], np.float32)
WB_GAINS = np.array([2.0, 1.0, 1.6], np.float32)
SAMPLE_IMAGES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
                 "retina", "colorwheel")


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)


def mosaic_rggb(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (H, W) raw with the RGGB Bayer pattern."""
    raw = np.empty(rgb.shape[:2], rgb.dtype)
    raw[0::2, 0::2] = rgb[0::2, 0::2, 0]
    raw[0::2, 1::2] = rgb[0::2, 1::2, 1]
    raw[1::2, 0::2] = rgb[1::2, 0::2, 1]
    raw[1::2, 1::2] = rgb[1::2, 1::2, 2]
    return raw


def demosaic_bilinear(raw: np.ndarray) -> np.ndarray:
    """Bilinear demosaicing of an RGGB raw image: (H, W) -> (H, W, 3)."""
    h, w = raw.shape
    masks = np.zeros((3, h, w), raw.dtype)
    masks[0, 0::2, 0::2] = 1
    masks[1, 0::2, 1::2] = 1
    masks[1, 1::2, 0::2] = 1
    masks[2, 1::2, 1::2] = 1
    k_rb = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], raw.dtype) / 4
    k_g = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], raw.dtype) / 4
    planes = [convolve(raw * masks[c], k_g if c == 1 else k_rb, mode="mirror") for c in range(3)]
    return np.stack(planes, axis=-1)


def camera_pipeline(clean_srgb: np.ndarray, shot: float, read: float, rng: np.random.Generator | None,
                    jpeg_quality: int | None = None) -> np.ndarray:
    """Noisy (or, with rng=None, noise-free) sRGB rendering of a clean sRGB image in [0,1]."""
    h, w = (clean_srgb.shape[0] // 2) * 2, (clean_srgb.shape[1] // 2) * 2
    linear = srgb_to_linear(clean_srgb[:h, :w].astype(np.float32))
    cam = np.clip(linear @ np.linalg.inv(CAMERA_TO_SRGB).T, 0, 1) / WB_GAINS
    raw = mosaic_rggb(cam.astype(np.float32))
    if rng is not None:
        raw = raw + rng.standard_normal(raw.shape).astype(np.float32) * np.sqrt(shot * raw + read)
        raw = np.clip(raw, 0, 1)  # the sensor clips at black and white level
    rgb = demosaic_bilinear(raw.astype(np.float32)) * WB_GAINS
    out = linear_to_srgb(rgb @ CAMERA_TO_SRGB.T).astype(np.float32)
    if jpeg_quality:
        ok, buf = cv2.imencode(".jpg", np.round(out[..., ::-1] * 255).astype(np.uint8),
                               [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255
    return np.round(out * 255) / 255  # 8-bit sRGB, like a saved photo


def load_sample_image(name: str, scale: float = 1.0) -> np.ndarray:
    """A scikit-image sample as float32 RGB in [0,1], optionally resized by ``scale``."""
    import skimage.data

    if name not in SAMPLE_IMAGES:
        raise ConfigError(f"unknown sample image '{name}'; choose from {', '.join(SAMPLE_IMAGES)}")
    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = img[..., :3].astype(np.float32) / 255
    if scale != 1.0:
        size = (max(8, round(img.shape[1] * scale)), max(8, round(img.shape[0] * scale)))
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return img


@DATASETS.register()
class SyntheticCameraNoise(Dataset):
    """Noisy renderings of scikit-image samples through a simulated camera (the embedded demo).

    Args:
        images: sample names (see ``SAMPLE_IMAGES``).
        with_clean: return the clean rendering too (validation only; training must not see it).
        crop_size: random square crop per item (training); None = whole image.
        center_crop: fixed central crop (fast validation); None = whole image.
        augment: random flips / 90-degree rotations (8 dihedral modes).
        repeat: items per image in one epoch (random crops of small sets).
        scale: resize factor of the sample images before rendering.
        shot_noise, read_noise: [min, max] of the Poisson (variance = shot * x) and Gaussian
            (variance = read) raw noise levels, drawn per image.
        jpeg_quality: JPEG-compress the noisy rendering (e.g. 90); None = no compression.
        seed: the noise and levels of image i come from seed + i.
    """

    def __init__(self, images: list = SAMPLE_IMAGES[:6], with_clean: bool = False, crop_size: int = None,
                 center_crop: int = None, augment: bool = False, repeat: int = 1, scale: float = 1.0,
                 shot_noise: list = (0.004, 0.012), read_noise: list = (1e-4, 5e-4),
                 jpeg_quality: int = None, seed: int = 0):
        self.with_clean, self.crop_size, self.augment, self.repeat = with_clean, crop_size, augment, repeat
        self.names, self.noisy, self.clean = [], [], []
        for i, name in enumerate(images):
            rng = np.random.default_rng(seed + i)
            shot, read = rng.uniform(*shot_noise), rng.uniform(*read_noise)
            img = load_sample_image(name, scale)
            if center_crop:
                top, left = (max(0, (n - center_crop) // 2) for n in img.shape[:2])
                img = img[top:top + center_crop, left:left + center_crop]
            self.names.append(name)
            self.noisy.append(camera_pipeline(img, shot, read, rng, jpeg_quality))  # (H, W, 3) float32
            if with_clean:
                self.clean.append(camera_pipeline(img, 0, 0, None))
            if crop_size and min(self.noisy[-1].shape[:2]) < crop_size:
                raise ConfigError(f"option 'crop_size: {crop_size}' is larger than sample image '{name}' "
                                  f"({self.noisy[-1].shape[:2]})")

    def __len__(self) -> int:
        return len(self.names) * self.repeat

    def image_arrays(self, i: int) -> tuple[dict, str, str]:
        """Whole image ``i`` (not repeated): ({'noisy'[, 'clean']} arrays, name, source for errors)."""
        arrays = {"noisy": self.noisy[i], **({"clean": self.clean[i]} if self.with_clean else {})}
        return arrays, self.names[i], f"sample image {self.names[i]}"

    def __getitem__(self, index: int) -> dict:
        arrays, name, source = self.image_arrays(index % len(self.names))
        return make_item(arrays, name, self.crop_size, self.augment, source)
