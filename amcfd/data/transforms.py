"""Shared steps of the datasets: load (optionally cached), random crop, dihedral augmentation.

Randomness comes only from torch's global RNG, which the DataLoader seeds differently in every
worker (and the engine seeds per run), never from Python's ``random`` or NumPy's global state.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from amcfd.data.imageio import ImageReadError, raw_to_float, read_image_raw, to_tensor
from amcfd.ops.augment import augment as dihedral_transform
from amcfd.ops.augment import random_mode
from amcfd.registry import ConfigError


def check_crop_size(crop_size, where: str) -> int | None:
    """None (whole images) or a positive int; ConfigError otherwise."""
    if crop_size is None:
        return None
    if isinstance(crop_size, bool) or not isinstance(crop_size, int) or crop_size <= 0:
        raise ConfigError(f"option '{where}.crop_size' must be a positive integer or null, got {crop_size!r}")
    return crop_size


def check_positive_int(value, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"option '{where}.{name}' must be a positive integer, got {value!r}")
    return value


def random_crop_box(height: int, width: int, crop_size: int) -> tuple[int, int]:
    """Top-left corner of a uniformly drawn crop_size x crop_size window (torch RNG); 0 along a side shorter
    than the crop (``pad_to`` fills the rest)."""
    top = int(torch.randint(max(height - crop_size, 0) + 1, (1,)))
    left = int(torch.randint(max(width - crop_size, 0) + 1, (1,)))
    return top, left


def pad_to(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """HxWxC array padded at the bottom and right to at least height x width: reflected (repeatedly, when the
    pad is longer than the image; a 1-pixel side repeats its pixel)."""
    pad_h, pad_w = max(height - arr.shape[0], 0), max(width - arr.shape[1], 0)
    if not pad_h and not pad_w:
        return arr
    return np.pad(arr, ((0, pad_h), (0, pad_w)) + ((0, 0),) * (arr.ndim - 2), mode="reflect")


def make_item(arrays: dict[str, np.ndarray], name: str, crop_size: int | None, augment: bool,
              source: str) -> dict:
    """HxWxC arrays (same size; uint8/uint16, or floats in [0, 1]) -> {key: (C, H, W) float32 tensor in [0, 1],
    'name': name}.

    All arrays get the same crop and the same dihedral transform; an image smaller than ``crop_size`` is padded
    up to it (``pad_to``), so batches still stack. ``source`` names the files in errors.
    """
    shapes = {key: arr.shape[:2] for key, arr in arrays.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"{source}: image sizes differ: " + ", ".join(f"{k} {h}x{w}" for k, (h, w) in
                                                                         shapes.items()))
    if crop_size is not None:
        height, width = next(iter(shapes.values()))
        top, left = random_crop_box(height, width, crop_size)
        arrays = {k: pad_to(a[top:top + crop_size, left:left + crop_size], crop_size, crop_size)
                  for k, a in arrays.items()}
    item = {key: to_tensor(arr if arr.dtype.kind == "f" else raw_to_float(arr))
            for key, arr in arrays.items()}                      # (C, h, w) float32 each
    if augment:
        mode = random_mode()
        item = {k: dihedral_transform(t, mode).contiguous() for k, t in item.items()}
    item["name"] = name
    return item


def read_raw_pixels(path: Path) -> np.ndarray:
    return read_image_raw(path)[0]


AUTO_CACHE_BYTES = 1 << 30   # cache: null decodes up front when the images take at most this much memory


def decoded_bytes(path: Path) -> int | None:
    """Upper bound of an image's decoded size (at least 3 channels; 16-bit samples except in JPEG, which has 8)
    from its header only; None when the header cannot be read."""
    try:
        from PIL import Image  # a scikit-image dependency; only image headers are read here

        with Image.open(path) as image:
            width, height = image.size
            sample_bytes = 1 if image.format == "JPEG" else 2
            return width * height * max(3, len(image.getbands())) * sample_bytes
    except Exception:                # noqa: BLE001 - unknown format: no estimate
        return None


def should_cache(paths: Sequence[Path], cache: bool | None) -> bool:
    """``cache`` true/false as given; null (automatic): true when every header reads and the decoded images
    take at most AUTO_CACHE_BYTES (a few hundred photos of 1 MP; re-decoding each crop made a tenth of the
    photos recipe's CPU step a wait for data, scripts/profile_step.py)."""
    if cache is not None:
        if not isinstance(cache, bool):
            raise ConfigError(f"option 'cache' must be true, false or null (automatic), got {cache!r}")
        return cache
    total = 0
    for path in paths:
        size = decoded_bytes(path)
        if size is None or total + size > AUTO_CACHE_BYTES:
            return False
        total += size
    return True


class RawImageStore:
    """Reads images as stored (uint8/uint16 RGB); with ``cache`` all are decoded once, up front
    (``should_cache``: null = when they fit in AUTO_CACHE_BYTES).

    Caching happens in the constructor (threads; OpenCV decodes outside the GIL), so DataLoader
    workers forked afterwards share the decoded arrays instead of decoding them again each.
    Memory: H*W*C bytes per 8-bit image (twice that for 16-bit).

    With ``check`` every file is decoded once in the constructor, cached or not: those that do not read
    (truncated, corrupt) are left out of ``paths`` and their ImageReadErrors kept in ``unreadable``. Without
    it an unreadable file raises ImageReadError when read (in the constructor when cached).
    """

    def __init__(self, paths: Sequence[Path], cache: bool | None = False,
                 reader: Callable[[Path], np.ndarray] | None = None, check: bool = False):
        self.paths = list(paths)
        self._read = reader or read_raw_pixels                  # module-level: picklable for workers
        self._cache: list[np.ndarray] | None = None
        self.unreadable: list[ImageReadError] = []
        self.shapes: list[tuple] | None = None          # (H, W, C) of each image, known when checked or cached
        keep = should_cache(self.paths, cache)
        if keep or check:
            with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
                loaded = list(pool.map(lambda path: self._load(path, keep, check), self.paths))
            self.unreadable = [r for r in loaded if isinstance(r, ImageReadError)]
            kept = [(p, r) for p, r in zip(self.paths, loaded) if not isinstance(r, ImageReadError)]
            self.paths = [p for p, _ in kept]
            self.shapes = [r.shape for _, r in kept]
            if keep:
                self._cache = [r for _, r in kept]

    def _load(self, path: Path, keep: bool, check: bool) -> np.ndarray | ImageReadError:
        """The pixels when kept, else an empty array of their shape (only checked); with ``check`` an
        ImageReadError is returned."""
        try:
            pixels = self._read(path)
        except ImageReadError as exc:
            if check:
                return exc
            raise
        return pixels if keep else np.empty(pixels.shape, pixels.dtype)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        if self._cache is not None:
            return self._cache[index]
        return self._read(self.paths[index])
