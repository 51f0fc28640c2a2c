"""Benchmark submissions: SIDD sRGB blocks (Kaggle CSV and ``SubmitSrgb.mat``) and DND sRGB boxes.

SIDD (``write_sidd_submission``): the CSV of the public Kaggle competition "sidd-benchmark-srgb-psnr" and
the ``SubmitSrgb.mat`` of the original SIDD website, from the blocks of ``BenchmarkNoisyBlocksSrgb.mat``.

DND: no ground truth is public, results are evaluated by the DND server. The submission kit's format,
reproduced here from its Python scripts (``dnd_denoise.py`` / ``bundle_submissions.py``):

- ``denoise_dnd`` writes one file per box, ``NNNN_KK.mat`` (1-based image and box numbers) holding
  ``Idenoised_crop``: the denoised box, float32 H x W x 3 in [0, 1].
- ``bundle_dnd_submission`` gathers them into ``bundled/NNNN.mat`` per image, holding
  ``Idenoised`` (1x20 cell of the crops), ``israw`` (false for sRGB) and ``eval_version`` ("1.0");
  the content of ``bundled/`` is what gets uploaded.
"""
from __future__ import annotations

import base64
import os
import time
from pathlib import Path
from typing import Callable, Union

import numpy as np
import scipy.io
import torch

from amcfd.data.dnd import DND
from amcfd.data.imageio import atomic_write
from amcfd.data.sidd import check_blocks, load_mat_variable
from amcfd.registry import InputNotFound

PathLike = Union[str, os.PathLike]
DenoiseFn = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- SIDD benchmark blocks

def tensor_to_uint8(image: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) or (C, H, W) float in [0, 1] -> HxWxC uint8 (round(clip(x) * 255), as the metrics)."""
    t = image.detach()
    t = t[0] if t.ndim == 4 else t
    return torch.round(t.clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def denoise_sidd_blocks(blocks: np.ndarray, denoise_fn: DenoiseFn,
                        progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, float]:
    """Denoise every block; returns uint8 blocks of the same shape and seconds per megapixel.

    ``denoise_fn`` gets a (1, 3, H, W) float CPU tensor in [0, 1] and returns one of the same shape.
    """
    check_blocks(blocks, "denoise_sidd_blocks input")
    out = np.empty_like(blocks)
    n_img, n_blk = blocks.shape[:2]
    seconds = 0.0
    for i in range(n_img):
        for j in range(n_blk):
            noisy = torch.from_numpy(blocks[i, j].astype(np.float32) / 255).permute(2, 0, 1)[None]
            start = time.perf_counter()
            with torch.no_grad():
                denoised = denoise_fn(noisy)
            if denoised.is_cuda:
                torch.cuda.synchronize(denoised.device)
            seconds += time.perf_counter() - start
            if denoised.shape != noisy.shape:
                raise ValueError(f"denoiser returned shape {tuple(denoised.shape)} for block {i},{j}; "
                                 f"expected {tuple(noisy.shape)}")
            out[i, j] = tensor_to_uint8(denoised)
            if progress is not None:
                progress(i * n_blk + j + 1, n_img * n_blk)
    megapixels = blocks[..., 0].size / 1e6
    return out, seconds / megapixels


def write_sidd_submission(blocks_uint8: np.ndarray, out_dir: PathLike, time_mp: float = 0.0,
                          method_info: dict | None = None, csv_name: str = "SubmitSrgb.csv",
                          mat_name: str = "SubmitSrgb.mat") -> dict[str, Path]:
    """Write denoised benchmark blocks (uint8, (40, 32, 256, 256, 3)) in both submission formats.

    - ``SubmitSrgb.csv`` (Kaggle "sidd-benchmark-srgb-psnr"): header ``ID,BLOCK``; one row per
      block, ``ID`` = image * 32 + block (0..1279, images then blocks, as in the .mat); ``BLOCK``
      = base64 of the block's raw bytes (uint8, C order, 256x256x3 = 196,608 bytes).
    - ``SubmitSrgb.mat`` (SIDD website, MATLAB v5): ``DenoisedBlocksSrgb`` a 40x32 cell array of
      256x256x3 uint8, ``TimeMPSrgb`` (seconds per megapixel) and ``OptionalData`` (struct with
      MethodName, Authors, PaperTitle, Venue).
    """
    check_blocks(blocks_uint8, "write_sidd_submission")
    out_dir = Path(out_dir)
    n_img, n_blk = blocks_uint8.shape[:2]

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            handle.write("ID,BLOCK\n")
            for i in range(n_img):
                for j in range(n_blk):
                    encoded = base64.b64encode(np.ascontiguousarray(blocks_uint8[i, j]).tobytes()).decode("ascii")
                    handle.write(f"{i * n_blk + j},{encoded}\n")

    cells = np.empty((n_img, n_blk), dtype=object)              # MATLAB cell array
    for i in range(n_img):
        for j in range(n_blk):
            cells[i, j] = np.ascontiguousarray(blocks_uint8[i, j])
    info = {"MethodName": "", "Authors": "", "PaperTitle": "", "Venue": ""}
    info.update({k: str(v) for k, v in (method_info or {}).items()})
    content = {"DenoisedBlocksSrgb": cells, "TimeMPSrgb": float(time_mp), "OptionalData": info}

    paths = {"csv": out_dir / csv_name, "mat": out_dir / mat_name}
    atomic_write(paths["csv"], write_csv)
    atomic_write(paths["mat"], lambda tmp: scipy.io.savemat(str(tmp), content, do_compression=True))
    return paths


def read_sidd_submission_csv(path: PathLike, block_shape: tuple[int, int, int] = (256, 256, 3),
                             blocks_per_image: int = 32) -> np.ndarray:
    """Read a Kaggle CSV back as uint8 blocks (images, blocks_per_image, *block_shape)."""
    path = Path(path)
    expected = int(np.prod(block_shape))
    blocks = {}
    with open(path) as handle:
        header = handle.readline().strip()
        if header != "ID,BLOCK":
            raise ValueError(f"{path}: expected the header 'ID,BLOCK', found '{header[:40]}'")
        for line_no, line in enumerate(handle, start=2):
            ident, _, encoded = line.strip().partition(",")
            raw = base64.b64decode(encoded)
            if len(raw) != expected:
                raise ValueError(f"{path}:{line_no}: block of {len(raw)} bytes, expected {expected} "
                                 f"({'x'.join(map(str, block_shape))} uint8)")
            blocks[int(ident)] = np.frombuffer(raw, np.uint8).reshape(block_shape)
    if sorted(blocks) != list(range(len(blocks))) or len(blocks) % blocks_per_image:
        raise ValueError(f"{path}: IDs must be 0..N-1 with N a multiple of {blocks_per_image}, "
                         f"found {len(blocks)} rows")
    stacked = np.stack([blocks[k] for k in range(len(blocks))])
    return stacked.reshape(len(blocks) // blocks_per_image, blocks_per_image, *block_shape)


def read_sidd_submission_mat(path: PathLike) -> np.ndarray:
    """Read ``SubmitSrgb.mat`` back as uint8 blocks (images, blocks, H, W, 3)."""
    cells = load_mat_variable(path, "DenoisedBlocksSrgb")
    if cells.dtype != object or cells.ndim != 2:
        raise ValueError(f"{path}: 'DenoisedBlocksSrgb' should be a 2-D cell array, found {cells.dtype} "
                         f"of shape {cells.shape}")
    return np.stack([np.stack(list(row)) for row in cells])


# --------------------------------------------------------------------------- DND boxes

def denoise_dnd(root: PathLike, out_dir: PathLike, denoise_fn: DenoiseFn, overwrite: bool = False,
                progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """Denoise every DND box and write ``out_dir/NNNN_KK.mat`` (``Idenoised_crop``, float32 HxWx3).

    ``denoise_fn`` gets a (1, 3, H, W) float CPU tensor in [0, 1] and returns the same shape; the
    result is clipped to [0, 1]. Boxes whose file exists are skipped unless ``overwrite`` (so an
    interrupted run resumes).
    """
    dataset = DND(root)
    out_dir = Path(out_dir)
    written = []
    for index in range(len(dataset)):
        path = out_dir / f"{dataset.name(index)}.mat"
        written.append(path)
        if path.is_file() and not overwrite:
            continue
        noisy = dataset[index]["noisy"][None]                    # (1, 3, H, W)
        with torch.no_grad():
            denoised = denoise_fn(noisy)
        if tuple(denoised.shape) != tuple(noisy.shape):
            raise ValueError(f"denoiser returned shape {tuple(denoised.shape)} for box {dataset.name(index)}; "
                             f"expected {tuple(noisy.shape)}")
        crop = denoised[0].detach().clamp(0, 1).permute(1, 2, 0).to("cpu", torch.float32).numpy()
        atomic_write(path, lambda tmp, crop=crop: scipy.io.savemat(str(tmp), {"Idenoised_crop": crop}))
        if progress is not None:
            progress(index + 1, len(dataset))
    return written


def bundle_dnd_submission(out_dir: PathLike, num_images: int = 50, boxes_per_image: int = 20) -> Path:
    """Gather ``out_dir/NNNN_KK.mat`` into ``out_dir/bundled/NNNN.mat`` (the files to upload)."""
    out_dir = Path(out_dir)
    names = [[f"{i:04d}_{k:02d}.mat" for k in range(1, boxes_per_image + 1)] for i in range(1, num_images + 1)]
    missing = [n for row in names for n in row if not (out_dir / n).is_file()]
    if missing:
        raise InputNotFound(f"{out_dir}: {len(missing)} denoised box file(s) missing, e.g. "
                                f"{', '.join(missing[:3])} (run denoise_dnd first)")
    bundled = out_dir / "bundled"
    for i, row in enumerate(names, start=1):
        crops = np.empty((boxes_per_image,), dtype=object)      # saved as a 1 x boxes cell array
        for k, name in enumerate(row):
            try:
                crops[k] = scipy.io.loadmat(str(out_dir / name))["Idenoised_crop"]
            except Exception as exc:
                raise ValueError(f"{out_dir / name}: cannot read 'Idenoised_crop': {type(exc).__name__}: "
                                 f"{exc}") from exc
        content = {"Idenoised": crops, "israw": False, "eval_version": "1.0"}
        atomic_write(bundled / f"{i:04d}.mat", lambda tmp, c=content: scipy.io.savemat(str(tmp), c))
    return bundled


def read_dnd_bundle(path: PathLike) -> list[np.ndarray]:
    """The denoised crops of one bundled file (for checks)."""
    content = scipy.io.loadmat(str(path))
    return [np.asarray(c) for c in content["Idenoised"].ravel()]
