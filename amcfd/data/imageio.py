"""Image files <-> float arrays in [0, 1], with bit depth and alpha kept.

Reading and writing go through OpenCV (``cv2.imdecode`` / ``cv2.imencode`` on bytes, so any
path works, including non-ASCII ones). Arrays are RGB (OpenCV's BGR is converted), HxWxC
float32 in [0, 1]: 8-bit files are divided by 255, 16-bit files by 65535 (16-bit is kept, not
reduced to 8). Gray images have C=1. An alpha channel is split off into ``info['alpha']`` so
that networks see RGB only; ``write_image`` can re-attach it.

Photos as users have them (``metadata``): the EXIF orientation is applied on read, so arrays are upright as
viewers show them (``info['orientation']`` says what was applied). The ICC profile and the EXIF block (its
orientation reset to 1) are returned in ``info['icc']`` / ``info['exif']``; ``write_image(..., icc=, exif=)``
writes them back for PNG, JPEG and TIFF. BMP and WebP: orientation not read, metadata not written.
Metadata that does not parse is skipped with a warning; it never stops an image from being read.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Callable, Union

import cv2
import numpy as np
import torch

from amcfd.data.metadata import apply_orientation, embed_metadata, read_metadata
from amcfd.registry import InputNotFound

PathLike = Union[str, os.PathLike]
log = logging.getLogger("amcfd")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


class ImageReadError(ValueError):
    """An image file that is missing, truncated, corrupt or in an unsupported format."""


_REPORTED: set[str] = set()


def warn_skipped(exc: ImageReadError) -> None:
    """Warn that an unreadable image is skipped, once per file and process (a command that reads a folder in
    several stages names each bad file once)."""
    if str(exc) not in _REPORTED:
        _REPORTED.add(str(exc))
        log.warning("skipped unreadable image: %s", exc)


def is_image_file(path: PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def visible_files(folder: PathLike, recursive: bool = False) -> list[Path]:
    """Sorted files of a folder (with ``recursive``: and of its sub-folders), hidden files and folders (names
    starting with '.') left out."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")] if recursive else []
        found += [Path(root) / n for n in names if not n.startswith(".")]
    return sorted(p for p in found if p.is_file())


def list_images(folder_or_file: PathLike, recursive: bool = False) -> list[Path]:
    """Sorted image files in a folder (or ``[file]`` for one image file).

    Hidden files and folders (names starting with '.') are skipped. Raises FileNotFoundError naming the
    path when it does not exist, ValueError for a file that is not an image.
    """
    path = Path(folder_or_file)
    if not path.exists():
        raise InputNotFound(f"image folder or file not found: {path}")
    if path.is_file():
        if not is_image_file(path):
            raise ValueError(f"{path} is not an image file (extensions: {', '.join(IMAGE_EXTENSIONS)})")
        return [path]
    return [p for p in visible_files(path, recursive) if is_image_file(p)]


def _check_complete(data: bytes, path: Path) -> None:
    """Catch truncated PNG/JPEG files, which OpenCV may decode partially without an error."""
    if data.startswith(b"\x89PNG"):
        if b"IEND" not in data[-16:]:
            raise ImageReadError(f"{path}: truncated PNG (no IEND chunk at the end)")
    elif data.startswith(b"\xff\xd8"):
        # The main image's end-of-image marker follows its last start-of-scan marker; entropy-coded
        # data never contains these byte pairs (0xFF is stuffed as FF00).
        last_scan = data.rfind(b"\xff\xda")
        if last_scan < 0 or data.find(b"\xff\xd9", last_scan) < 0:
            raise ImageReadError(f"{path}: truncated JPEG (no end-of-image marker after the last scan)")


def read_image_raw(path: PathLike) -> tuple[np.ndarray, dict]:
    """Read an image as stored: uint8 or uint16 HxWxC RGB (C = 1 or 3), plus ``info``.

    Compact (for caches and cropping before conversion); ``raw_to_float`` makes it [0, 1].
    Raises ImageReadError naming the file when it cannot be read.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(f"cannot read image {path}: {exc.strerror or exc}") from exc
    if not data:
        raise ImageReadError(f"{path}: empty file")
    _check_complete(data, path)
    meta, data = read_metadata(data, path)
    try:
        raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:                                    # e.g. a corrupt header's huge image size
        raise ImageReadError(f"{path}: not a readable image ({str(exc).strip().splitlines()[-1]})") from None
    if raw is None:
        raise ImageReadError(f"{path}: not a readable image (corrupt, or a format OpenCV cannot decode)")
    if raw.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(f"{path}: unsupported sample type {raw.dtype} (expected 8- or 16-bit)")
    bit_depth = 8 if raw.dtype == np.uint8 else 16
    if raw.ndim == 2:
        raw = raw[:, :, None]                                   # (H, W, 1)
    raw = apply_orientation(raw, meta["orientation"])          # stored -> upright (H and W swap for 5-8)
    channels = raw.shape[2]
    alpha = None
    if channels == 4:
        alpha = raw[:, :, 3] / np.float32(_peak(bit_depth))
        raw = cv2.cvtColor(raw, cv2.COLOR_BGRA2RGB)             # (H, W, 3)
    elif channels == 3:
        raw = cv2.cvtColor(raw, cv2.COLOR_BGR2RGB)
    elif channels != 1:
        raise ImageReadError(f"{path}: unsupported channel count {channels} (expected 1, 3 or 4)")
    return raw, {"bit_depth": bit_depth, "channels": channels, "alpha": alpha, "path": str(path), **meta}


def _peak(bit_depth: int) -> int:
    return 255 if bit_depth == 8 else 65535


def raw_to_float(raw: np.ndarray) -> np.ndarray:
    """uint8 / uint16 array -> float32 in [0, 1] (divided by 255 / 65535)."""
    if raw.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"raw_to_float: expected uint8 or uint16, got {raw.dtype}")
    return raw.astype(np.float32) / np.float32(_peak(8 if raw.dtype == np.uint8 else 16))


def read_image(path: PathLike) -> tuple[np.ndarray, dict]:
    """Read an image as float32 HxWxC RGB in [0, 1] plus ``info``.

    ``info``: ``bit_depth`` (8 or 16), ``channels`` (channel count in the file: 1, 3 or 4),
    ``alpha`` (HxW float32 in [0, 1] or None), ``path``, ``orientation`` (the EXIF orientation 1-8 that
    was applied; 1 when none), ``icc`` (ICC profile bytes or None), ``exif`` (EXIF block, a TIFF
    structure without the ``Exif\\0\\0`` prefix, orientation reset to 1; or None).
    Raises ImageReadError naming the file when it cannot be read.
    """
    raw, info = read_image_raw(path)
    return raw_to_float(raw), info


def _quantize(arr: np.ndarray, bit_depth: int) -> np.ndarray:
    peak = _peak(bit_depth)
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    return np.clip(np.rint(arr.astype(np.float64) * peak), 0, peak).astype(dtype)


def write_image(path: PathLike, img: np.ndarray, bit_depth: int = 8, alpha: np.ndarray | None = None,
                icc: bytes | None = None, exif: bytes | None = None) -> Path:
    """Write float HxWxC (C = 1 or 3) or HxW in [0, 1]; values are rounded and clipped.

    ``bit_depth`` 8 or 16 (16 only for PNG/TIFF). ``alpha`` (HxW or HxWx1 in [0, 1]) is
    re-attached as a fourth channel (RGB images only). ``icc`` / ``exif`` (as ``read_image`` puts
    them in ``info``) are written where the format holds them (PNG, JPEG, TIFF), the EXIF with
    orientation 1: the pixels are written as given, upright. Parent folders are created, and the file
    appears atomically (written to a temporary file in the same folder, then renamed).
    """
    path = Path(path)
    if bit_depth not in (8, 16):
        raise ValueError(f"write_image: bit_depth must be 8 or 16, got {bit_depth}")
    img = np.asarray(img)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3):
        raise ValueError(f"write_image({path}): expected HxW, HxWx1 or HxWx3, got shape {img.shape}")
    if not np.isfinite(img).all():
        raise ValueError(f"write_image({path}): image contains NaN or infinite values")
    out = _quantize(img, bit_depth)                              # (H, W, C) uint8 / uint16
    if alpha is not None:
        alpha = np.asarray(alpha)
        alpha = alpha[:, :, 0] if alpha.ndim == 3 else alpha
        if alpha.shape != img.shape[:2] or img.shape[2] != 3:
            raise ValueError(f"write_image({path}): alpha of shape {alpha.shape} does not fit image "
                             f"{img.shape} (needs HxW and an RGB image)")
        out = np.concatenate([out, _quantize(alpha, bit_depth)[:, :, None]], axis=2)   # (H, W, 4) RGBA
    return write_image_raw(path, out, icc=icc, exif=exif)


def write_image_raw(path: PathLike, raw: np.ndarray, icc: bytes | None = None, exif: bytes | None = None) -> Path:
    """Write a uint8/uint16 HxWxC array (C = 1, 3 RGB or 4 RGBA) as is, atomically (``icc``/``exif``: see
    ``write_image``)."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise ValueError(f"cannot write {path}: unknown image extension "
                         f"(use one of {', '.join(IMAGE_EXTENSIONS)})")
    if raw.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"write_image_raw({path}): expected uint8 or uint16, got {raw.dtype}")
    if raw.dtype == np.uint16 and ext not in (".png", ".tif", ".tiff"):
        raise ValueError(f"cannot write {path} with 16 bits: only .png and .tif/.tiff hold 16-bit images")
    if raw.ndim == 2:
        raw = raw[:, :, None]
    conversions = {1: None, 3: cv2.COLOR_RGB2BGR, 4: cv2.COLOR_RGBA2BGRA}
    if raw.ndim != 3 or raw.shape[2] not in conversions:
        raise ValueError(f"write_image_raw({path}): expected HxWxC with C in 1, 3, 4, got shape {raw.shape}")
    code = conversions[raw.shape[2]]
    out = cv2.cvtColor(np.ascontiguousarray(raw), code) if code is not None else raw[:, :, 0]
    ok, encoded = cv2.imencode(ext, out)
    if not ok:
        raise ValueError(f"OpenCV could not encode {path}")
    data = embed_metadata(encoded.tobytes(), ext, icc, exif, path)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    return path


def atomic_write(path: PathLike, write: Callable[[Path], None]) -> Path:
    """Let ``write`` fill a temporary file beside ``path`` (same suffix), then rename it into place.

    Readers never see a half-written file, and an interrupted run leaves no file at ``path``.
    Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """HxWxC (or HxW) array -> (C, H, W) float32 tensor."""
    arr = np.asarray(img, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"to_tensor: expected HxW or HxWxC, got shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def to_image(tensor: torch.Tensor) -> np.ndarray:
    """(C, H, W) or (1, C, H, W) tensor -> HxWxC float32 array (on the CPU)."""
    t = tensor.detach()
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise ValueError(f"to_image: a batch must hold one image, got shape {tuple(t.shape)}")
        t = t[0]
    if t.ndim != 3:
        raise ValueError(f"to_image: expected (C, H, W) or (1, C, H, W), got shape {tuple(t.shape)}")
    return np.ascontiguousarray(t.to("cpu", torch.float32).numpy().transpose(1, 2, 0))
