"""DND (Darmstadt Noise Dataset, Plötz & Roth, CVPR 2017), sRGB track: 50 images x 20 boxes of 512x512.

Official download layout (all MATLAB v7.3 = HDF5 files, read with h5py):

- ``info.mat``: struct ``info`` whose field ``boundingboxes`` is a cell array with one entry per
  image, each a 20x4 double matrix of 1-based inclusive ``[row1, col1, row2, col2]`` (so a box is
  ``image[row1-1:row2, col1-1:col2]``, as in the official ``dnd_denoise.py``).
- ``images_srgb/0001.mat`` ... ``0050.mat``: ``InoisySRGB``, single precision in [0, 1], stored by
  HDF5 as (3, W, H) (MATLAB's H x W x 3 with the axes reversed).

No ground truth is public: results are evaluated by the DND server; the submission files are written by
``amcfd.data.submission`` (``denoise_dnd``, ``bundle_dnd_submission``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import h5py
import numpy as np
from torch.utils.data import Dataset

from amcfd.data.transforms import check_crop_size, check_positive_int, make_item
from amcfd.registry import DATASETS, ConfigError, InputNotFound

PathLike = Union[str, os.PathLike]

IMAGE_KEY = "InoisySRGB"
IMAGE_FOLDER = "images_srgb"


def _open_hdf5(path: Path, what: str) -> h5py.File:
    if not path.is_file():
        raise InputNotFound(f"DND {what} not found: {path}")
    if not h5py.is_hdf5(path):
        raise ValueError(f"{path}: expected a MATLAB v7.3 (HDF5) file as in the DND download; "
                         f"found another format (corrupt or converted?)")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path}: cannot open (corrupt or truncated?): {exc}") from exc


def read_dnd_boxes(root: PathLike) -> list[np.ndarray]:
    """Boxes of every image from ``root/info.mat``: one (boxes, 4) int array per image of
    0-based half-open ``[top, left, bottom, right]``."""
    path = Path(root) / "info.mat"
    with _open_hdf5(path, "info file") as handle:
        try:
            cells = handle["info"]["boundingboxes"]
        except KeyError:
            info = handle.get("info")
            found = ", ".join((info if isinstance(info, h5py.Group) else handle).keys()) or "nothing"
            raise ValueError(f"{path}: expected the struct field 'info.boundingboxes', found: {found}") from None
        try:
            refs = np.asarray(cells).ravel()                     # one HDF5 object reference per image
            matrices = [np.transpose(np.asarray(handle[ref])) for ref in refs]   # (boxes, 4) each
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: cannot read 'info.boundingboxes' (corrupt?): {exc}") from exc
    boxes = []
    for index, matrix in enumerate(matrices, start=1):
        if matrix.ndim != 2 or matrix.shape[1] != 4:
            raise ValueError(f"{path}: bounding boxes of image {index} should be a (boxes, 4) matrix, "
                             f"found shape {matrix.shape}")
        rows1, cols1, rows2, cols2 = matrix.astype(np.int64).T
        boxes.append(np.stack([rows1 - 1, cols1 - 1, rows2, cols2], axis=1))
    if not boxes:
        raise ValueError(f"{path}: 'info.boundingboxes' lists no images")
    return boxes


def read_dnd_box(image_path: Path, box: np.ndarray) -> np.ndarray:
    """One box of a DND image as float32 (h, w, 3), reading only that region of the file."""
    top, left, bottom, right = (int(v) for v in box)
    with _open_hdf5(image_path, "image") as handle:
        if IMAGE_KEY not in handle:
            raise ValueError(f"{image_path}: expected the variable '{IMAGE_KEY}', "
                             f"found: {', '.join(handle.keys()) or 'none'}")
        data = handle[IMAGE_KEY]                                  # (3, W, H)
        if data.ndim != 3 or data.shape[0] != 3:
            raise ValueError(f"{image_path}: '{IMAGE_KEY}' should be an H x W x 3 image, found HDF5 shape "
                             f"{data.shape} (MATLAB {tuple(reversed(data.shape))})")
        width, height = data.shape[1:]
        if not (0 <= top < bottom <= height and 0 <= left < right <= width):
            raise ValueError(f"{image_path}: box rows {top}:{bottom}, cols {left}:{right} lies outside the "
                             f"{height}x{width} image")
        try:
            region = data[:, left:right, top:bottom]              # (3, w, h)
        except OSError as exc:
            raise ValueError(f"{image_path}: cannot read '{IMAGE_KEY}' (corrupt or truncated?): {exc}") from exc
    return np.ascontiguousarray(np.transpose(region, (2, 1, 0)), dtype=np.float32)   # (h, w, 3)


@DATASETS.register()
class DND(Dataset):
    """DND sRGB boxes (noisy only): 50 x 20 items named ``NNNN_KK`` (1-based, as the submission files).

    Args:
        root: the DND folder holding ``info.mat`` and ``images_srgb/``.
        crop_size, augment: for self-supervised training on the boxes (off by default).
        max_images: only the boxes of the first N images.
    """

    def __init__(self, root: PathLike, crop_size: int | None = None, augment: bool = False,
                 max_images: int | None = None):
        where = "datasets.DND"
        self.root = Path(root)
        if not self.root.is_dir():
            raise ConfigError(f"option '{where}.root': folder {self.root} does not exist")
        self.crop_size = check_crop_size(crop_size, where)
        self.augment = bool(augment)
        self.boxes = read_dnd_boxes(self.root)
        if max_images is not None:
            self.boxes = self.boxes[:check_positive_int(max_images, "max_images", where)]
        self.image_paths = [self.root / IMAGE_FOLDER / f"{i + 1:04d}.mat" for i in range(len(self.boxes))]
        missing = [p.name for p in self.image_paths if not p.is_file()]
        if missing:
            raise ConfigError(f"{self.root / IMAGE_FOLDER}: {len(missing)} image file(s) listed in info.mat are "
                              f"missing, e.g. {', '.join(missing[:3])}")
        self.index = [(i, k) for i, boxes in enumerate(self.boxes) for k in range(len(boxes))]

    def __len__(self) -> int:
        return len(self.index)

    def name(self, index: int) -> str:
        i, k = self.index[index]
        return f"{i + 1:04d}_{k + 1:02d}"

    def __getitem__(self, index: int) -> dict:
        i, k = self.index[index]
        noisy = read_dnd_box(self.image_paths[i], self.boxes[i][k])
        return make_item({"noisy": noisy}, self.name(index), self.crop_size, self.augment,
                         f"{self.image_paths[i]} box {k + 1}")
