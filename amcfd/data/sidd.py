"""SIDD (Smartphone Image Denoising Dataset, Abdelhamed et al., CVPR 2018), sRGB track.

Official downloads, used unchanged:

- SIDD-Medium sRGB: ``SIDD_Medium_Srgb/Data/<scene>/<id>_NOISY_SRGB_010.PNG`` and ``..._011.PNG``
  (320 noisy frames of 160 scene instances; ``<id>_GT_SRGB_01x.PNG`` beside them).
  ``prepare_sidd_tiles`` (CLI: ``scripts/prep_sidd.py``) cuts them into overlapping tiles, as the
  AMSNet authors did (512x512, stride 256, the last row/column aligned with the border), and
  writes ``meta_info.txt``; ``SIDDMediumTrain`` reads either the tiles or the full frames.
- Validation / benchmark blocks: ``ValidationNoisyBlocksSrgb.mat``, ``ValidationGtBlocksSrgb.mat``,
  ``BenchmarkNoisyBlocksSrgb.mat``: one uint8 variable of the same name, shape
  (40 images, 32 blocks, 256, 256, 3). MATLAB v5 files are read with scipy, v7.3 (HDF5) files
  with h5py (detected from the file; HDF5 stores MATLAB arrays with the axes reversed).
- Benchmark submission: ``amcfd.data.submission.write_sidd_submission``.
"""
from __future__ import annotations

import os
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Union

import h5py
import numpy as np
import scipy.io
from torch.utils.data import Dataset

from amcfd.data.imageio import atomic_write, read_image_raw, write_image_raw
from amcfd.data.transforms import RawImageStore, check_crop_size, check_positive_int, make_item
from amcfd.registry import DATASETS, ConfigError, InputNotFound

PathLike = Union[str, os.PathLike]

SIDD_BLOCK_KEYS = ("ValidationNoisyBlocksSrgb", "ValidationGtBlocksSrgb", "BenchmarkNoisyBlocksSrgb")
META_FILE = "meta_info.txt"
_FRAME_RE = re.compile(r"(\d+)_NOISY_SRGB_(\d+)\.png", re.IGNORECASE)


# --------------------------------------------------------------------------- .mat files

def _choose_key(names: list[str], key: str | None, candidates: Iterable[str], path: Path) -> str:
    if key is not None:
        if key not in names:
            raise ValueError(f"{path}: no variable '{key}' (found: {', '.join(names) or 'none'})")
        return key
    present = [c for c in candidates if c in names]
    if len(present) == 1:
        return present[0]
    if len(names) == 1:
        return names[0]
    raise ValueError(f"{path}: expected one of the variables {', '.join(candidates)}, "
                     f"found: {', '.join(names) or 'none'} (name it with the 'key' option)")


def load_mat_variable(path: PathLike, key: str | None = None, candidates: Iterable[str] = ()) -> np.ndarray:
    """One array from a MATLAB .mat file, v5 (scipy) or v7.3 (h5py, axes put back in MATLAB order).

    ``key`` names the variable; without it, the one of ``candidates`` present (or the only
    variable) is used. Errors name the file and, for a wrong key, the variables found.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFound(f"MATLAB file not found: {path}")
    candidates = tuple(candidates)
    if h5py.is_hdf5(path):
        try:
            with h5py.File(path, "r") as handle:
                names = [n for n in handle.keys() if not n.startswith("#")]
                name = _choose_key(names, key, candidates, path)
                node = handle[name]
                if not isinstance(node, h5py.Dataset):
                    raise ValueError(f"{path}: '{name}' is a MATLAB struct/group, expected a numeric array")
                return np.ascontiguousarray(np.transpose(node[()]))   # HDF5 (C order) -> MATLAB axes
        except (OSError, RuntimeError, KeyError) as exc:
            raise ValueError(f"{path}: cannot read MATLAB v7.3 (HDF5) file (corrupt or truncated?): {exc}") from exc
    try:
        names = [entry[0] for entry in scipy.io.whosmat(str(path))]
    except Exception as exc:                                   # scipy raises many types on bad files
        raise ValueError(f"{path}: not a readable MATLAB .mat file (corrupt or truncated?): "
                         f"{type(exc).__name__}: {exc}") from exc
    name = _choose_key(names, key, candidates, path)
    try:
        return scipy.io.loadmat(str(path), variable_names=[name])[name]
    except Exception as exc:
        raise ValueError(f"{path}: cannot read variable '{name}' (corrupt or truncated file?): "
                         f"{type(exc).__name__}: {exc}") from exc


def load_sidd_blocks(path: PathLike, key: str | None = None) -> np.ndarray:
    """SIDD block file -> uint8 array (images, blocks, H, W, 3), checked."""
    blocks = load_mat_variable(path, key, SIDD_BLOCK_KEYS)
    check_blocks(blocks, f"{path}")
    return blocks


def check_blocks(blocks: np.ndarray, what: str) -> None:
    if blocks.dtype != np.uint8 or blocks.ndim != 5 or blocks.shape[-1] != 3:
        raise ValueError(f"{what}: expected uint8 blocks of shape (images, blocks, height, width, 3), "
                         f"e.g. (40, 32, 256, 256, 3); found {blocks.dtype} of shape {blocks.shape}")


# --------------------------------------------------------------------------- blocks dataset

@DATASETS.register()
class SIDDBlocks(Dataset):
    """SIDD validation or benchmark blocks: 40 x 32 = 1280 items named ``IIII_BB`` (0-based).

    Args:
        noisy_mat: ``ValidationNoisyBlocksSrgb.mat`` or ``BenchmarkNoisyBlocksSrgb.mat``.
        gt_mat: ``ValidationGtBlocksSrgb.mat`` (validation only) or None.
        noisy_key, gt_key: variable names, found automatically for the official files.
        crop_size, augment: for training on the blocks (off by default).
        max_blocks: only the first N blocks (quick checks).
    """

    def __init__(self, noisy_mat: PathLike, gt_mat: PathLike | None = None, noisy_key: str | None = None,
                 gt_key: str | None = None, crop_size: int | None = None, augment: bool = False,
                 max_blocks: int | None = None):
        where = "datasets.SIDDBlocks"
        self.crop_size = check_crop_size(crop_size, where)
        self.augment = bool(augment)
        self.noisy = load_sidd_blocks(noisy_mat, noisy_key)
        self.clean = None
        if gt_mat is not None:
            self.clean = load_sidd_blocks(gt_mat, gt_key)
            if self.clean.shape != self.noisy.shape:
                raise ValueError(f"{gt_mat}: ground-truth blocks of shape {self.clean.shape} do not match the "
                                 f"noisy blocks {self.noisy.shape} of {noisy_mat}")
        self.num_images, self.blocks_per_image = self.noisy.shape[:2]
        total = self.num_images * self.blocks_per_image
        self.length = min(total, check_positive_int(max_blocks, "max_blocks", where)) if max_blocks else total
        self.source = str(noisy_mat)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(index)
        i, j = divmod(index, self.blocks_per_image)
        arrays = {"noisy": self.noisy[i, j]}                     # (H, W, 3) uint8
        if self.clean is not None:
            arrays["clean"] = self.clean[i, j]
        return make_item(arrays, f"{i:04d}_{j:02d}", self.crop_size, self.augment, f"{self.source}[{i},{j}]")


# --------------------------------------------------------------------------- SIDD-Medium frames and tiles

def find_sidd_medium_frames(root: PathLike) -> list[Path]:
    """Noisy sRGB frames under ``root`` (SIDD_Medium_Srgb or its Data folder), sorted."""
    root = Path(root)
    base = root / "Data" if (root / "Data").is_dir() else root
    if not base.is_dir():
        return []
    frames = []
    for scene in sorted(p for p in base.iterdir() if p.is_dir()):
        frames += sorted(p for p in scene.iterdir() if _FRAME_RE.fullmatch(p.name))
    return frames


def gt_path_for(noisy_path: Path) -> Path:
    """``0001_NOISY_SRGB_010.PNG`` -> ``0001_GT_SRGB_010.PNG`` in the same folder."""
    return noisy_path.with_name(re.sub("_NOISY_", "_GT_", noisy_path.name, flags=re.IGNORECASE))


def frame_id(noisy_path: Path) -> str:
    """``.../0001_NOISY_SRGB_010.PNG`` -> ``0001_010`` (scene instance and frame)."""
    match = _FRAME_RE.fullmatch(noisy_path.name)
    if match is None:
        raise ValueError(f"{noisy_path}: not a SIDD noisy sRGB frame name (<id>_NOISY_SRGB_<nnn>.PNG)")
    return f"{match.group(1)}_{match.group(2)}"


def tile_positions(length: int, size: int, stride: int) -> list[int]:
    """Starts of tiles along one axis: 0, stride, 2*stride, ... plus one ending at the border."""
    if size <= 0 or stride <= 0:
        raise ValueError(f"tile size and stride must be positive, got {size} and {stride}")
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def tile_frame(noisy_path: Path, out_dir: Path, size: int, stride: int, with_gt: bool) -> list[str]:
    """Cut one frame (and its GT) into tiles; returns meta lines. Idempotent (skips done frames)."""
    ident = frame_id(noisy_path)
    marker = out_dir / ".done" / f"{ident}.txt"
    if marker.is_file():
        return marker.read_text().splitlines()
    sources = {"noisy": noisy_path}
    if with_gt:
        sources["gt"] = gt_path_for(noisy_path)
    images = {kind: read_image_raw(path)[0] for kind, path in sources.items()}
    height, width = images["noisy"].shape[:2]
    if with_gt and images["gt"].shape != images["noisy"].shape:
        raise ValueError(f"{sources['gt']}: size {images['gt'].shape} differs from {noisy_path} "
                         f"{images['noisy'].shape}")
    lines = []
    for top in tile_positions(height, size, stride):
        for left in tile_positions(width, size, stride):
            name = f"{ident}_{top:05d}_{left:05d}.png"
            for kind, image in images.items():
                write_image_raw(out_dir / kind / name, image[top:top + size, left:left + size])
            lines.append(" ".join(f"{kind}/{name}" for kind in images))
    atomic_write(marker, lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
    return lines


def prepare_sidd_tiles(input_root: PathLike, out_dir: PathLike, size: int = 512, stride: int = 256,
                       workers: int = 4, with_gt: bool = False,
                       log: Callable[[str], None] | None = None) -> Path:
    """Tile all SIDD-Medium noisy frames (resumable, multiprocess); returns the meta file.

    Output: ``out_dir/noisy/<id>_<frame>_<top>_<left>.png`` (and ``gt/`` with ``with_gt``), and
    ``out_dir/meta_info.txt``: '#' comment lines with the settings, then one line per tile with
    the noisy tile path relative to ``out_dir`` (and the GT tile path after a space).
    A frame counts as done once ``out_dir/.done/<id>_<frame>.txt`` exists; tiles are written
    atomically, so an interrupted run can simply be started again.
    """
    frames = find_sidd_medium_frames(input_root)
    if not frames:
        raise ConfigError(f"no SIDD-Medium frames (<scene>/<id>_NOISY_SRGB_01x.PNG) under {input_root} "
                          f"or {Path(input_root) / 'Data'}")
    out_dir = Path(out_dir)
    meta = out_dir / META_FILE
    if meta.is_file():
        settings = [line for line in meta.read_text().splitlines() if line.startswith("# tiles")]
        wanted = f"# tiles size={size} stride={stride} gt={int(with_gt)}"
        if settings and settings[0] != wanted:
            raise ConfigError(f"{meta} was written with '{settings[0][2:]}', not '{wanted[2:]}': "
                              f"use another output folder")
    log = log or (lambda message: None)
    results: dict[Path, list[str]] = {}
    if workers <= 1:
        for done, frame in enumerate(frames, start=1):
            results[frame] = tile_frame(frame, out_dir, size, stride, with_gt)
            log(f"[{done}/{len(frames)}] {frame.name}: {len(results[frame])} tiles")
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            jobs = {frame: pool.submit(tile_frame, frame, out_dir, size, stride, with_gt) for frame in frames}
            for done, (frame, job) in enumerate(jobs.items(), start=1):
                results[frame] = job.result()
                log(f"[{done}/{len(frames)}] {frame.name}: {len(results[frame])} tiles")
    header = [f"# SIDD-Medium sRGB tiles from {Path(input_root).resolve()}",
              f"# tiles size={size} stride={stride} gt={int(with_gt)}"]
    lines = [line for frame in frames for line in results[frame]]
    atomic_write(meta, lambda tmp: tmp.write_text("\n".join(header + lines) + "\n"))
    return meta


def read_tile_meta(meta: Path) -> list[list[str]]:
    """Rows of relative paths ([noisy] or [noisy, gt]) from a meta file."""
    rows = [line.split() for line in meta.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if not rows:
        raise ConfigError(f"{meta} lists no tiles")
    return rows


@DATASETS.register()
class SIDDMediumTrain(Dataset):
    """SIDD-Medium sRGB noisy images for (self-supervised) training: random crops and flips/rotations.

    ``root`` is either a folder written by ``scripts/prep_sidd.py`` (holding ``meta_info``) or the
    official ``SIDD_Medium_Srgb`` folder (full frames: slower, every crop decodes a 12-MP PNG).
    Defaults follow the AMSNet authors: 160x160 crops with random flips/rotations.

    Args:
        crop_size: crop size (None = whole tiles/frames).
        augment: random dihedral transform (8 modes).
        cache: decode every tile once up front and keep it in memory (~0.8 MB per 512 tile).
        load_gt: also return the ground truth as 'clean' (the tiles need ``--gt``).
        repeat: each epoch visits every tile/frame this many times.
        max_images: use only the first N tiles/frames.
        meta_info: name of the meta file inside ``root``.
    """

    def __init__(self, root: PathLike, crop_size: int | None = 160, augment: bool = True, cache: bool = False,
                 load_gt: bool = False, repeat: int = 1, max_images: int | None = None,
                 meta_info: str = META_FILE):
        where = "datasets.SIDDMediumTrain"
        self.root = Path(root)
        self.crop_size = check_crop_size(crop_size, where)
        self.augment = bool(augment)
        self.repeat = check_positive_int(repeat, "repeat", where)
        meta = self.root / meta_info
        if meta.is_file():
            rows = read_tile_meta(meta)
            noisy = [self.root / row[0] for row in rows]
            if load_gt and any(len(row) < 2 for row in rows):
                raise ConfigError(f"option '{where}.load_gt': {meta} lists no GT tiles "
                                  f"(run scripts/prep_sidd.py with --gt)")
            clean = [self.root / row[1] for row in rows] if load_gt else []
        else:
            noisy = find_sidd_medium_frames(self.root)
            if not noisy:
                raise ConfigError(f"option '{where}.root': {self.root} holds neither {meta_info} "
                                  f"(tiles from scripts/prep_sidd.py) nor SIDD-Medium frames "
                                  f"(Data/<scene>/<id>_NOISY_SRGB_01x.PNG)")
            clean = [gt_path_for(p) for p in noisy] if load_gt else []
        if max_images is not None:
            keep = check_positive_int(max_images, "max_images", where)
            noisy, clean = noisy[:keep], clean[:keep]
        self.names = [p.stem for p in noisy]
        self.noisy = RawImageStore(noisy, cache=cache)
        self.clean = RawImageStore(clean, cache=cache) if load_gt else None

    def __len__(self) -> int:
        return len(self.names) * self.repeat

    def image_arrays(self, i: int) -> tuple[dict, str, str]:
        """Whole tile/frame ``i`` (not repeated): ({'noisy'[, 'clean']} arrays, name, source for errors)."""
        arrays = {"noisy": self.noisy[i]}
        if self.clean is not None:
            arrays["clean"] = self.clean[i]
        return arrays, self.names[i], str(self.noisy.paths[i])

    def __getitem__(self, index: int) -> dict:
        arrays, name, source = self.image_arrays(index % len(self.names))
        return make_item(arrays, name, self.crop_size, self.augment, source)
