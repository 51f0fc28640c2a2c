"""Folder datasets: noisy/clean pairs (PolyU, CC, ...) and noisy-only photos of a user.

Items: ``{'noisy': (C, H, W) float in [0, 1], 'clean': same (pairs only), 'name': str}``.
With ``crop_size`` set, each item is a random crop (training); with ``crop_size: null`` whole
images are returned (validation, batch size 1 when sizes differ). 16-bit files keep their
precision (divided by 65535). Alpha channels are dropped.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

from torch.utils.data import Dataset

from amcfd.data.imageio import list_images
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


@DATASETS.register()
class PairedFolder(Dataset):
    """``root/noisy/NAME`` with ``root/clean/NAME`` (same file stem, any image format).

    Args:
        root: folder holding the two sub-folders.
        noisy_folder, clean_folder: names of the sub-folders (or absolute paths).
        crop_size: random square crop size for training; None = whole images.
        augment: random flip/rotation (one of 8, the same for noisy and clean).
        cache: decode all images once in the constructor and keep them in memory.
        max_images: use only the first N pairs (sorted by name).
        repeat: each epoch visits every pair this many times (useful with crops of few images).
    """

    def __init__(self, root: Union[str, Path], noisy_folder: str = "noisy", clean_folder: str = "clean",
                 crop_size: int | None = None, augment: bool = False, cache: bool = False,
                 max_images: int | None = None, repeat: int = 1):
        where = f"datasets.{type(self).__name__}"
        self.root = Path(root)
        self.crop_size = check_crop_size(crop_size, where)
        self.augment = bool(augment)
        self.repeat = check_positive_int(repeat, "repeat", where)
        noisy = _find_images(self.root / noisy_folder, f"{where}.root", recursive=False)
        clean_by_stem: dict[str, Path] = {}
        for path in _find_images(self.root / clean_folder, f"{where}.root", recursive=False):
            if path.stem in clean_by_stem:
                raise ConfigError(f"{self.root / clean_folder}: two clean images share the name '{path.stem}'")
            clean_by_stem[path.stem] = path
        missing = [p.name for p in noisy if p.stem not in clean_by_stem]
        if missing:
            raise ConfigError(f"{self.root / clean_folder}: no clean image for {len(missing)} noisy image(s), "
                              f"e.g. {', '.join(missing[:3])}")
        if max_images is not None:
            noisy = noisy[:check_positive_int(max_images, "max_images", where)]
        self.names = [p.stem for p in noisy]
        self.noisy = RawImageStore(noisy, cache=cache)
        self.clean = RawImageStore([clean_by_stem[p.stem] for p in noisy], cache=cache)

    def __len__(self) -> int:
        return len(self.names) * self.repeat

    def __getitem__(self, index: int) -> dict:
        i = index % len(self.names)
        source = f"{self.noisy.paths[i]} / {self.clean.paths[i]}"
        return make_item({"noisy": self.noisy[i], "clean": self.clean[i]}, self.names[i],
                         self.crop_size, self.augment, source)


@DATASETS.register()
class NoisyFolder(Dataset):
    """Noisy-only images (a user's photos: any size, PNG/JPEG/TIFF, 8 or 16 bit) for self-supervised use.

    Args:
        root: a folder (or one image file).
        crop_size: random square crop size for training; None = whole images.
        augment: random flip/rotation (one of 8).
        cache: decode all images once in the constructor and keep them in memory.
        repeat: each epoch visits every image this many times, so that an epoch over a handful of
            large photos still holds many crops.
        recursive: also look in sub-folders (names then include the sub-folder).
        max_images: use only the first N images (sorted by path).
    """

    def __init__(self, root: Union[str, Path], crop_size: int | None = None, augment: bool = False,
                 cache: bool = False, repeat: int = 1, recursive: bool = True, max_images: int | None = None):
        where = f"datasets.{type(self).__name__}"
        self.root = Path(root)
        self.crop_size = check_crop_size(crop_size, where)
        self.augment = bool(augment)
        self.repeat = check_positive_int(repeat, "repeat", where)
        paths = _find_images(self.root, f"{where}.root", recursive=bool(recursive))
        if max_images is not None:
            paths = paths[:check_positive_int(max_images, "max_images", where)]
        base = self.root if self.root.is_dir() else self.root.parent
        self.names = [_item_name(p, base) for p in paths]
        self.noisy = RawImageStore(paths, cache=cache)

    def __len__(self) -> int:
        return len(self.names) * self.repeat

    def __getitem__(self, index: int) -> dict:
        i = index % len(self.names)
        return make_item({"noisy": self.noisy[i]}, self.names[i], self.crop_size, self.augment,
                         str(self.noisy.paths[i]))
