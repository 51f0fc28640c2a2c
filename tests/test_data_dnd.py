"""DND: a tiny tree in the official layout (v7.3 info.mat with box references), boxes, submission round trip."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.io
import torch

from amcfd.data.dnd import DND, read_dnd_boxes
from amcfd.data.submission import bundle_dnd_submission, denoise_dnd, read_dnd_bundle
from amcfd.registry import DATASETS, ConfigError

IMAGE_H, IMAGE_W = 40, 56
BOXES = [  # MATLAB convention: 1-based inclusive [row1, col1, row2, col2]
    np.array([[1, 1, 16, 16], [25, 41, 40, 56], [5, 9, 20, 32]]),
    np.array([[10, 3, 25, 18], [1, 20, 32, 51], [21, 33, 36, 48]]),
]


def write_matlab_header(path):
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    with open(path, "r+b") as handle:
        handle.write(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM")


def make_dnd(root, rng):
    """info.mat: struct info with a cell 'boundingboxes' (HDF5 object references), as MATLAB -v7.3 writes."""
    root.mkdir(parents=True, exist_ok=True)
    with h5py.File(root / "info.mat", "w", userblock_size=512) as handle:
        refs = handle.create_group("#refs#")
        cells = handle.create_group("info").create_dataset("boundingboxes", (1, len(BOXES)), dtype=h5py.ref_dtype)
        for i, boxes in enumerate(BOXES):
            cells[0, i] = refs.create_dataset(f"b{i}", data=boxes.T.astype(np.float64)).ref   # MATLAB 20x4 -> (4, 20)
    write_matlab_header(root / "info.mat")
    images = []
    for i in range(len(BOXES)):
        image = rng.random((IMAGE_H, IMAGE_W, 3), dtype=np.float32)
        path = root / "images_srgb" / f"{i + 1:04d}.mat"
        path.parent.mkdir(exist_ok=True)
        with h5py.File(path, "w", userblock_size=512) as handle:
            handle.create_dataset("InoisySRGB", data=np.transpose(image), chunks=(3, 8, 8))   # (3, W, H)
        write_matlab_header(path)
        images.append(image)
    return images


@pytest.fixture
def dnd(tmp_path):
    images = make_dnd(tmp_path / "dnd", np.random.default_rng(0))
    return tmp_path / "dnd", images


def test_boxes_follow_the_official_indexing(dnd):
    root, images = dnd
    boxes = read_dnd_boxes(root)
    assert [b.tolist() for b in boxes][0][1] == [24, 40, 40, 56]
    ds = DATASETS.build({"type": "DND", "root": str(root)}, where="datasets.test_dnd")
    assert len(ds) == 6 and [ds[i]["name"] for i in (0, 5)] == ["0001_01", "0002_03"]
    for index, (i, k) in enumerate([(i, k) for i in range(2) for k in range(3)]):
        r1, c1, r2, c2 = BOXES[i][k]
        expected = images[i][r1 - 1:r2, c1 - 1:c2]                 # the kit: Inoisy[r1-1:r2, c1-1:c2]
        item = ds[index]
        assert set(item) == {"noisy", "name"}
        np.testing.assert_array_equal(item["noisy"].permute(1, 2, 0).numpy(), expected)
    crops = DND(root, crop_size=8, augment=True, max_images=1)
    assert len(crops) == 3 and crops[1]["noisy"].shape == (3, 8, 8)


def test_submission_round_trip(dnd, tmp_path):
    root, images = dnd
    out = tmp_path / "submission"
    calls = []

    def darken(x):
        calls.append(tuple(x.shape))
        return x * 0.5

    written = denoise_dnd(root, out, darken)
    assert [p.name for p in written][:2] == ["0001_01.mat", "0001_02.mat"] and len(calls) == 6
    crop = scipy.io.loadmat(out / "0002_02.mat")["Idenoised_crop"]
    r1, c1, r2, c2 = BOXES[1][1]
    assert crop.dtype == np.float32 and crop.shape == (r2 - r1 + 1, c2 - c1 + 1, 3)
    np.testing.assert_allclose(crop, images[1][r1 - 1:r2, c1 - 1:c2] * 0.5, rtol=0, atol=1e-7)
    denoise_dnd(root, out, darken)                                 # resumes: nothing left to do
    assert len(calls) == 6
    bundled = bundle_dnd_submission(out, num_images=2, boxes_per_image=3)
    content = scipy.io.loadmat(bundled / "0002.mat")
    assert content["Idenoised"].shape == (1, 3) and not content["israw"].item()
    assert str(content["eval_version"][0]) == "1.0"
    for k, crop_back in enumerate(read_dnd_bundle(bundled / "0002.mat")):
        np.testing.assert_array_equal(crop_back, scipy.io.loadmat(out / f"0002_{k + 1:02d}.mat")["Idenoised_crop"])


def test_denoiser_output_is_checked_and_clipped(dnd, tmp_path):
    root, _ = dnd
    with pytest.raises(ValueError, match="denoiser returned shape"):
        denoise_dnd(root, tmp_path / "a", lambda x: x[:, :, 1:])
    denoise_dnd(root, tmp_path / "b", lambda x: x * 3 - 1)
    crop = scipy.io.loadmat(tmp_path / "b" / "0001_01.mat")["Idenoised_crop"]
    assert crop.min() == 0.0 and crop.max() == 1.0
    with pytest.raises(FileNotFoundError, match="0001_01.mat"):
        bundle_dnd_submission(tmp_path / "empty", num_images=1, boxes_per_image=1)


def test_bad_files_name_the_file_and_what_was_expected(dnd, tmp_path):
    root, _ = dnd
    with pytest.raises(ConfigError, match="does not exist"):
        DND(tmp_path / "nowhere")
    (root / "images_srgb" / "0002.mat").unlink()
    with pytest.raises(ConfigError, match="0002.mat"):
        DND(root)
    assert len(DND(root, max_images=1)) == 3
    scipy.io.savemat(root / "images_srgb" / "0002.mat", {"InoisySRGB": np.zeros((4, 4, 3))})   # MATLAB v5
    with pytest.raises(ValueError, match="0002.mat: expected a MATLAB v7.3"):
        DND(root)[4]
    with h5py.File(root / "images_srgb" / "0002.mat", "w") as handle:
        handle.create_dataset("Inoisy", data=np.zeros((3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="expected the variable 'InoisySRGB', found: Inoisy"):
        DND(root)[4]
    data = (root / "images_srgb" / "0001.mat").read_bytes()
    (root / "images_srgb" / "0001.mat").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="0001.mat"):
        DND(root)[0]
    with h5py.File(root / "info.mat", "w") as handle:
        handle.create_group("info").create_dataset("bbox", data=np.zeros(3))
    with pytest.raises(ValueError, match="info.mat: expected the struct field 'info.boundingboxes', found: bbox"):
        DND(root)
    (root / "info.mat").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="info.mat"):
        read_dnd_boxes(root)


def test_denoised_boxes_can_come_back_from_any_device(dnd, tmp_path):
    root, _ = dnd
    written = denoise_dnd(root, tmp_path / "c", lambda x: x.to(torch.float64))
    assert len(written) == 6
