"""Image I/O: bit depth, channels, alpha, RGB order, corrupt files, listing, tensor conversion."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from amcfd.data.imageio import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    list_images,
    read_image,
    to_image,
    to_tensor,
    write_image,
)


def levels(shape, peak, seed=0):
    """Random image whose values are exact quantisation levels k/peak."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, peak + 1, size=shape) / peak).astype(np.float32)


def test_8bit_rgb_png_round_trip_is_exact(tmp_path):
    img = levels((9, 11, 3), 255)
    write_image(tmp_path / "a.png", img)
    back, info = read_image(tmp_path / "a.png")
    assert back.dtype == np.float32 and back.shape == (9, 11, 3)
    assert info["bit_depth"] == 8 and info["channels"] == 3 and info["alpha"] is None
    np.testing.assert_array_equal(back, img)


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_is_kept(tmp_path, ext):
    img = levels((8, 10, 3), 65535)
    write_image(tmp_path / f"a{ext}", img, bit_depth=16)
    back, info = read_image(tmp_path / f"a{ext}")
    assert info["bit_depth"] == 16
    np.testing.assert_array_equal(back, img)
    assert len(np.unique(np.round(back * 65535) % 257)) > 1   # not 8-bit values in disguise


def test_gray_stays_one_channel(tmp_path):
    img = levels((7, 5, 1), 255)
    write_image(tmp_path / "g.png", img)
    back, info = read_image(tmp_path / "g.png")
    assert back.shape == (7, 5, 1) and info["channels"] == 1
    np.testing.assert_array_equal(back, img)
    write_image(tmp_path / "g2.png", img[:, :, 0])            # HxW accepted too
    np.testing.assert_array_equal(read_image(tmp_path / "g2.png")[0], img)


def test_alpha_is_split_off_and_reattached(tmp_path):
    img, alpha = levels((6, 6, 3), 255, 1), levels((6, 6), 255, 2)
    write_image(tmp_path / "rgba.png", img, alpha=alpha)
    back, info = read_image(tmp_path / "rgba.png")
    assert back.shape == (6, 6, 3) and info["channels"] == 4
    np.testing.assert_array_equal(back, img)
    np.testing.assert_array_equal(info["alpha"], alpha)


def test_rgb_order_not_bgr(tmp_path):
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[..., 2] = 255                                         # red in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    img, _ = read_image(tmp_path / "red.png")
    assert img[..., 0].min() == 1.0 and img[..., 1:].max() == 0.0
    write_image(tmp_path / "red2.png", img)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "red2.png")), bgr)


def test_jpeg_reads_close_and_rejects_16bit(tmp_path):
    img = np.tile(np.linspace(0, 1, 32, dtype=np.float32)[None, :, None], (32, 1, 3))
    write_image(tmp_path / "a.jpg", img)
    back, info = read_image(tmp_path / "a.jpg")
    assert info["bit_depth"] == 8 and np.abs(back - img).max() < 0.05
    with pytest.raises(ValueError, match="16"):
        write_image(tmp_path / "b.jpg", img, bit_depth=16)


def test_write_rounds_clips_and_rejects_nan(tmp_path):
    img = np.array([[[-0.5, 0.5 / 255 + 1e-4, 2.0]]], np.float32)
    write_image(tmp_path / "c.png", img)
    np.testing.assert_array_equal(read_image(tmp_path / "c.png")[0] * 255, [[[0, 1, 255]]])
    with pytest.raises(ValueError, match="NaN"):
        write_image(tmp_path / "n.png", np.full((2, 2, 3), np.nan, np.float32))


def test_write_creates_folders_and_leaves_no_temp_files(tmp_path):
    out = tmp_path / "deep" / "er" / "x.png"
    write_image(out, levels((3, 3, 3), 255))
    assert out.exists() and [p.name for p in out.parent.iterdir()] == ["x.png"]


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_truncated_file_error_names_the_file(tmp_path, ext):
    good = tmp_path / f"good{ext}"
    write_image(good, levels((64, 64, 3), 255))
    data = good.read_bytes()
    bad = tmp_path / f"truncated{ext}"
    bad.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageReadError, match=f"truncated{ext}"):
        read_image(bad)


def test_garbage_empty_and_missing_files_name_the_file(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"this is not an image at all")
    (tmp_path / "empty.png").write_bytes(b"")
    for name in ("junk.png", "empty.png", "missing.png"):
        with pytest.raises(ImageReadError, match=name):
            read_image(tmp_path / name)
    assert issubclass(ImageReadError, ValueError)


def test_list_images_sorted_filtered_recursive(tmp_path):
    for name in ("b.png", "a.JPG", "c.txt", ".hidden.png", "sub/d.tif"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png"]
    assert [p.name for p in list_images(tmp_path, recursive=True)] == ["a.JPG", "b.png", "d.tif"]
    assert list_images(tmp_path / "b.png") == [tmp_path / "b.png"]
    assert ".png" in IMAGE_EXTENSIONS
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_images(tmp_path / "nowhere")


def test_tensor_conversion_round_trip():
    img = levels((5, 7, 3), 255)
    t = to_tensor(img)
    assert t.shape == (3, 5, 7) and t.dtype == torch.float32
    np.testing.assert_array_equal(to_image(t), img)
    np.testing.assert_array_equal(to_image(t[None]), img)
    assert to_tensor(img[:, :, 0]).shape == (1, 5, 7)
