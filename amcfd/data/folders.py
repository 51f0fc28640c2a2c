"""Folder datasets: noisy/clean pairs (PolyU, CC, ...) and noisy-only photos of a user.

Items: ``{'noisy': (C, H, W) float in [0, 1], 'clean': same (pairs only), 'name': str}``.
With ``crop_size`` set, each item is a random crop (training); with ``crop_size: null`` whole
images are returned (validation, batch size 1 when sizes differ); an image smaller than the crop is
padded up to it (reflected). 16-bit files keep their precision (divided by 65535). Alpha channels are
dropped. Every file is decoded once when the dataset is built: NoisyFolder skips truncated or corrupt
files with a warning, PairedFolder stops with a one-line error naming the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import cv2
import numpy as np
from torch.utils.data import Dataset

from amcfd.data.imageio import list_images, warn_skipped
from amcfd.data.transforms import RawImageStore, check_crop_size, check_positive_int, make_item
from amcfd.registry import DATASETS, ConfigError


def _item_name(path: Path, root: Path) -> str:
    """File path relative to root without extension, '/' joined by '_' (unique, readable)."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = Path(path.name)
    return "_".join(rel.with_suffix("").parts)


def _find_images(folder: Path, where: str, recursive: bool) -> list[Path]:
    if not folder.is_dir() and not folder.is_file():
        raise ConfigError(f"option '{where}': folder {folder} does not exist")
    paths = list_images(folder, recursive=recursive)
    if not paths:
        raise ConfigError(f"option '{where}': no images found in {folder}")
    return paths


def _images_by_key(folder: Path, suffix: str, where: str) -> dict[str, Path]:
    """Images of a folder whose stem ends with ``suffix``, keyed by the stem without it."""
    found: dict[str, Path] = {}
    for path in _find_images(folder, where, recursive=False):
        if not path.stem.endswith(suffix):
            continue
        key = path.stem[:len(path.stem) - len(suffix)]
        if key in found:
            raise ConfigError(f"{folder}: two images share the name '{key}' ({found[key].name}, {path.name})")
        found[key] = path
    if not found:
        raise ConfigError(f"option '{where}': no images named *{suffix}.<ext> in {folder}")
    return found


@DATASETS.register()
class PairedFolder(Dataset):
    """Noisy/clean pairs matched by name: ``root/noisy/NAME.*`` with ``root/clean/NAME.*`` (any format).

    The official PolyU and CC downloads keep both in one folder as ``NAME_real.*`` (noisy) and
    ``NAME_mean.*`` (clean); read them unchanged with ``noisy_folder: .``, ``clean_folder: .``,
    ``noisy_suffix: _real``, ``clean_suffix: _mean``.

    Args:
        root: folder holding the images.
        noisy_folder, clean_folder: sub-folders of root (or absolute paths).
        noisy_suffix, clean_suffix: end of the file stems, removed before matching.
        crop_size: random square crop size for training; None = whole images.
        augment: random flip/rotation (one of 8, the same for noisy and clean).
        cache: decode all images once in the constructor and keep them in memory (null, the default: when
            they take at most 1 GiB, data/transforms.py ``should_cache``; false: decode at every use).
        max_images: use only the first N pairs (sorted by name).
        repeat: each epoch visits every pair this many times (useful with crops of few images).
    """

    def __init__(self, root: Union[str, Path], noisy_folder: str = "noisy", clean_folder: str = "clean",
                 noisy_suffix: str = "", clean_suffix: str = "", crop_size: int | None = None,
                 augment: bool = False, cache: bool | None = None, max_images: int | None = None, repeat: int = 1):
        where = f"datasets.{type(self).__name__}"
        self.root = Path(root)
        self.crop_size = check_crop_size(crop_size, where)
        self.augment = bool(augment)
        self.repeat = check_positive_int(repeat, "repeat", where)
        noisy_dir, clean_dir = self.root / noisy_folder, self.root / clean_folder
        if noisy_dir.resolve() == clean_dir.resolve() and noisy_suffix == clean_suffix:
            raise ConfigError(f"option '{where}': noisy and clean images are the same files in {noisy_dir}; "
                              f"set noisy_suffix/clean_suffix (e.g. _real/_mean) or separate folders")
        noisy = _images_by_key(noisy_dir, noisy_suffix, f"{where}.root")
        clean = _images_by_key(clean_dir, clean_suffix, f"{where}.root")
        if noisy_dir.resolve() == clean_dir.resolve():            # a stem may end with both suffixes
            noisy = {k: p for k, p in noisy.items() if p not in clean.values()}
        missing = [p.name for k, p in noisy.items() if k not in clean]
        if missing:
            raise ConfigError(f"{clean_dir}: no clean image (*{clean_suffix}) for {len(missing)} noisy "
                              f"image(s), e.g. {', '.join(missing[:3])}")
        keys = sorted(noisy)
        if max_images is not None:
            keys = keys[:check_positive_int(max_images, "max_images", where)]
        self.names = keys
        self.noisy = RawImageStore([noisy[k] for k in keys], cache=cache, check=True)
        self.clean = RawImageStore([clean[k] for k in keys], cache=cache, check=True)
        unreadable = self.noisy.unreadable + self.clean.unreadable
        if unreadable:
            raise ConfigError(f"option '{where}.root': {unreadable[0]} (pairs must match: fix or remove it)")

    def __len__(self) -> int:
        return len(self.names) * self.repeat

    def image_arrays(self, i: int) -> tuple[dict, str, str]:
        """Whole image ``i`` (not repeated): ({'noisy', 'clean'} arrays, name, source for errors)."""
        return ({"noisy": self.noisy[i], "clean": self.clean[i]}, self.names[i],
                f"{self.noisy.paths[i]} / {self.clean.paths[i]}")

    def __getitem__(self, index: int) -> dict:
        arrays, name, source = self.image_arrays(index % len(self.names))
        return make_item(arrays, name, self.crop_size, self.augment, source)


@DATASETS.register()
class NoisyFolder(Dataset):
    """Noisy-only images (a user's photos: any size, PNG/JPEG/TIFF, 8 or 16 bit) for self-supervised use.

    Args:
        root: a folder (or one image file).
        crop_size: random square crop size for training; None = whole images.
        augment: random flip/rotation (one of 8).
        cache: decode all images once in the constructor and keep them in memory (null, the default: when
            they take at most 1 GiB, data/transforms.py ``should_cache``; false: decode at every use).
        repeat: each epoch visits every image this many times, so that an epoch over a handful of
            large photos still holds many crops.
        recursive: also look in sub-folders (names then include the sub-folder).
        max_images: use only the first N images (sorted by path).
        channels: 3 (gray photos are repeated to RGB, so a folder may mix both), 1 (RGB photos are
            turned gray, for gray denoisers) or None (as stored; all images must then agree).
        max_pixels: an image with more pixels is replaced by square regions of ``region_size`` pixels, as many
            as ``max_pixels`` holds (at least one), centred in the cells of an even grid over it (``regions``):
            it bounds what is computed per image, e.g. cached teacher targets of 12-megapixel photos. None = whole.
        region_size: the side of those regions.
    """

    def __init__(self, root: Union[str, Path], crop_size: int | None = None, augment: bool = False,
                 cache: bool | None = None, repeat: int = 1, recursive: bool = True, max_images: int | None = None,
                 channels: int | None = 3, max_pixels: int | None = None, region_size: int = 512):
        where = f"datasets.{type(self).__name__}"
        if channels not in (None, 1, 3):
            raise ConfigError(f"option '{where}.channels' must be 1, 3 or null, got {channels!r}")
        self.channels = channels
        self.root = Path(root)
        self.crop_size = check_crop_size(crop_size, where)
        self.augment = bool(augment)
        self.repeat = check_positive_int(repeat, "repeat", where)
        paths = _find_images(self.root, f"{where}.root", recursive=bool(recursive))
        if max_images is not None:
            paths = paths[:check_positive_int(max_images, "max_images", where)]
        self.noisy = RawImageStore(paths, cache=cache, check=True)
        for exc in self.noisy.unreadable:
            warn_skipped(exc)
        if not self.noisy.paths:
            raise ConfigError(f"option '{where}.root': none of the {len(paths)} images in {self.root} can be read, "
                              f"e.g. {self.noisy.unreadable[0]}")
        base = self.root if self.root.is_dir() else self.root.parent
        names = [_item_name(p, base) for p in self.noisy.paths]
        if max_pixels is not None:
            check_positive_int(max_pixels, "max_pixels", where)
            check_positive_int(region_size, "region_size", where)
        self.items = []                                  # (image index, region box or None)
        for i, shape in enumerate(self.noisy.shapes):    # the store checked every file: shapes are known
            big = max_pixels is not None and shape[0] * shape[1] > max_pixels
            self.items += [(i, box) for box in (regions(*shape[:2], region_size, max_pixels) if big else [None])]
        self.names = [names[i] if box is None else f"{names[i]}@{box[0]}x{box[1]}" for i, box in self.items]

    def __len__(self) -> int:
        return len(self.names) * self.repeat

    def image_arrays(self, i: int) -> tuple[dict, str, str]:
        """Image (or region) ``i`` (not repeated): ({'noisy'} array, name, source for errors)."""
        index, box = self.items[i]
        arr = self.noisy[index]
        if box is not None:
            top, left, side = box
            arr = arr[top:top + side, left:left + side]
        return {"noisy": _with_channels(arr, self.channels)}, self.names[i], str(self.noisy.paths[index])

    def __getitem__(self, index: int) -> dict:
        arrays, name, source = self.image_arrays(index % len(self.names))
        return make_item(arrays, name, self.crop_size, self.augment, source)


def regions(height: int, width: int, side: int, max_pixels: int) -> list[tuple[int, int, int]]:
    """(top, left, side) of max(1, max_pixels // side**2) squares, centred in the cells of a near-square grid."""
    side = min(side, height, width)
    count = max(1, max_pixels // side ** 2)
    rows = max(1, round((count * height / width) ** 0.5))
    cols = -(-count // rows)
    cells = [(r, c) for r in range(rows) for c in range(cols)][:count]
    return [(round((height - side) * (r + 0.5) / rows), round((width - side) * (c + 0.5) / cols), side)
            for r, c in cells]


SAMPLING_KEYS = ("crop_size", "augment", "repeat", "batch_size", "num_workers")


def training_set_on(images: dict, like: dict, defaults: dict | None = None) -> dict:
    """A training-set entry reading ``images`` (e.g. ``{type: NoisyFolder, root: ...}``) with the crop,
    augmentation, repeat, batch and loader settings of ``like`` (an option file's training set), and
    ``defaults`` for those it does not give."""
    kept = {k: like[k] for k in SAMPLING_KEYS if k in like}
    return {**(defaults or {}), **images, **kept}


def _with_channels(img: np.ndarray, channels: int | None) -> np.ndarray:
    """HxWxC uint image with ``channels`` channels: gray repeated to RGB, or RGB to luminance."""
    if channels is None or img.shape[2] == channels:
        return img
    if channels == 3:
        return np.repeat(img, 3, axis=2)
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[:, :, None]
