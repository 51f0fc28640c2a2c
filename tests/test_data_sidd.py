"""SIDD: Medium tree -> tiles -> training dataset; block .mat files (v5 and v7.3); submission round trips."""
from __future__ import annotations

import base64

import h5py
import numpy as np
import pytest
import scipy.io
import torch

from amcfd.data.imageio import read_image_raw, write_image_raw
from amcfd.data.sidd import (
    SIDDBlocks,
    SIDDMediumTrain,
    find_sidd_medium_frames,
    load_mat_variable,
    prepare_sidd_tiles,
    tile_positions,
)
from amcfd.data.submission import (
    denoise_sidd_blocks,
    read_sidd_submission_csv,
    read_sidd_submission_mat,
    write_sidd_submission,
)
from amcfd.registry import DATASETS, ConfigError

SCENES = ["0001_001_S6_00100_00060_3200_L", "0002_001_GP_00800_00400_5500_N"]
FRAME_H, FRAME_W = 40, 52


def save_mat_v73(path, **arrays):
    """A MATLAB v7.3 file as MATLAB writes it: HDF5 with a 512-byte header, arrays with reversed axes."""
    with h5py.File(path, "w", userblock_size=512) as handle:
        for key, array in arrays.items():
            dataset = handle.create_dataset(key, data=np.transpose(array))
            dataset.attrs["MATLAB_class"] = np.bytes_(array.dtype.name)
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    with open(path, "r+b") as handle:
        handle.write(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM")


def make_sidd_medium(root, rng):
    """Tiny SIDD_Medium_Srgb tree in the official layout; noisy = GT + 3 levels (clipped)."""
    data = root / "SIDD_Medium_Srgb" / "Data"
    frames = {}
    for scene in SCENES:
        ident = scene[:4]
        for frame in ("010", "011"):
            gt = rng.integers(0, 250, (FRAME_H, FRAME_W, 3), dtype=np.uint8)
            write_image_raw(data / scene / f"{ident}_GT_SRGB_{frame}.PNG", gt)
            write_image_raw(data / scene / f"{ident}_NOISY_SRGB_{frame}.PNG", gt + 3)
            frames[f"{ident}_{frame}"] = gt
    (data.parent / "Scene_Instances.txt").write_text("\n".join(SCENES) + "\n")
    return root / "SIDD_Medium_Srgb", frames


def make_blocks(rng, n_img=2, n_blk=3, size=16):
    gt = rng.integers(0, 256, (n_img, n_blk, size, size, 3), dtype=np.uint8)
    noisy = np.clip(gt.astype(int) + rng.integers(-20, 21, gt.shape), 0, 255).astype(np.uint8)
    return noisy, gt


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ----------------------------------------------------------------------------- tiles

def test_tile_positions_cover_the_frame_and_end_at_the_border():
    assert tile_positions(40, 16, 8) == [0, 8, 16, 24]
    assert tile_positions(41, 16, 8) == [0, 8, 16, 24, 25]
    assert tile_positions(10, 16, 8) == [0]
    assert tile_positions(3000, 512, 256)[-1] == 3000 - 512


@pytest.mark.parametrize("workers", [0, 2])
def test_prep_tiles_match_the_frames(tmp_path, rng, workers):
    medium, frames = make_sidd_medium(tmp_path, rng)
    assert len(find_sidd_medium_frames(medium)) == 4 == len(find_sidd_medium_frames(medium / "Data"))
    meta = prepare_sidd_tiles(medium, tmp_path / "tiles", size=16, stride=8, workers=workers, with_gt=True)
    rows = [line.split() for line in meta.read_text().splitlines() if not line.startswith("#")]
    per_frame = len(tile_positions(FRAME_H, 16, 8)) * len(tile_positions(FRAME_W, 16, 8))
    assert len(rows) == 4 * per_frame
    for noisy_rel, gt_rel in rows[:: per_frame // 3]:
        ident, top, left = noisy_rel[len("noisy/"):-4].rsplit("_", 2)
        top, left = int(top), int(left)
        gt_tile = read_image_raw(tmp_path / "tiles" / gt_rel)[0]
        np.testing.assert_array_equal(gt_tile, frames[ident][top:top + 16, left:left + 16])
        noisy_tile = read_image_raw(tmp_path / "tiles" / noisy_rel)[0]
        np.testing.assert_array_equal(noisy_tile, gt_tile + 3)


def test_prep_is_resumable_and_refuses_other_settings(tmp_path, rng):
    medium, _ = make_sidd_medium(tmp_path, rng)
    out = tmp_path / "tiles"
    meta = prepare_sidd_tiles(medium, out, size=16, stride=8, workers=0)
    first = meta.read_text()
    kept = out / "noisy" / "0001_010_00000_00000.png"
    kept_mtime = kept.stat().st_mtime_ns
    # an interrupted run: one frame's marker and one of its tiles are missing
    (out / ".done" / "0002_011.txt").unlink()
    (out / "noisy" / "0002_011_00008_00008.png").unlink()
    prepare_sidd_tiles(medium, out, size=16, stride=8, workers=0)
    assert meta.read_text() == first
    assert (out / "noisy" / "0002_011_00008_00008.png").is_file()
    assert kept.stat().st_mtime_ns == kept_mtime                    # done frames are not redone
    with pytest.raises(ConfigError, match="stride=8"):
        prepare_sidd_tiles(medium, out, size=16, stride=4, workers=0)
    with pytest.raises(ConfigError, match="no SIDD-Medium frames"):
        prepare_sidd_tiles(tmp_path / "nothing", tmp_path / "t2")


def test_medium_train_reads_tiles_or_full_frames(tmp_path, rng):
    medium, _ = make_sidd_medium(tmp_path, rng)
    prepare_sidd_tiles(medium, tmp_path / "tiles", size=16, stride=8, workers=0, with_gt=True)
    tiles = DATASETS.build({"type": "SIDDMediumTrain", "root": str(tmp_path / "tiles"), "crop_size": 8,
                            "load_gt": True, "cache": True}, where="datasets.train")
    item = tiles[5]
    assert item["noisy"].shape == item["clean"].shape == (3, 8, 8)
    torch.testing.assert_close(item["noisy"] - item["clean"], torch.full((3, 8, 8), 3 / 255))
    frames = SIDDMediumTrain(medium, crop_size=None, augment=False, repeat=2)
    assert len(frames) == 8 and set(frames[0]) == {"noisy", "name"}
    assert frames[0]["noisy"].shape == (3, FRAME_H, FRAME_W) and frames[0]["name"] == "0001_NOISY_SRGB_010"
    assert SIDDMediumTrain(medium)[0]["noisy"].shape == (3, 160, 160)    # the AMSNet default crop: padded up to it
    prepare_sidd_tiles(medium, tmp_path / "nogt", size=16, stride=8, workers=0)
    with pytest.raises(ConfigError, match="--gt"):
        SIDDMediumTrain(tmp_path / "nogt", load_gt=True)
    with pytest.raises(ConfigError, match="neither"):
        SIDDMediumTrain(tmp_path)


# ----------------------------------------------------------------------------- block files

@pytest.mark.parametrize("version", ["v5", "v7.3"])
def test_blocks_read_in_both_mat_versions(tmp_path, rng, version):
    noisy, gt = make_blocks(rng)
    paths = {"noisy": tmp_path / "ValidationNoisyBlocksSrgb.mat", "gt": tmp_path / "ValidationGtBlocksSrgb.mat"}
    if version == "v5":
        scipy.io.savemat(paths["noisy"], {"ValidationNoisyBlocksSrgb": noisy})
        scipy.io.savemat(paths["gt"], {"ValidationGtBlocksSrgb": gt})
    else:
        save_mat_v73(paths["noisy"], ValidationNoisyBlocksSrgb=noisy)
        save_mat_v73(paths["gt"], ValidationGtBlocksSrgb=gt)
        assert h5py.is_hdf5(paths["noisy"])
    ds = SIDDBlocks(paths["noisy"], paths["gt"])
    assert len(ds) == 6 and [ds[i]["name"] for i in (0, 4)] == ["0000_00", "0001_01"]
    item = ds[4]
    np.testing.assert_array_equal(np.round(item["noisy"].permute(1, 2, 0).numpy() * 255), noisy[1, 1])
    np.testing.assert_array_equal(np.round(item["clean"].permute(1, 2, 0).numpy() * 255), gt[1, 1])
    noisy_only = SIDDBlocks(paths["noisy"], max_blocks=4)
    assert len(noisy_only) == 4 and set(noisy_only[3]) == {"noisy", "name"}


def test_wrong_key_or_shape_says_what_was_expected_and_found(tmp_path, rng):
    noisy, _ = make_blocks(rng)
    scipy.io.savemat(tmp_path / "two.mat", {"foo": noisy, "bar": noisy})
    with pytest.raises(ValueError, match="expected one of the variables ValidationNoisyBlocksSrgb.*found: foo, bar"):
        SIDDBlocks(tmp_path / "two.mat")
    with pytest.raises(ValueError, match="no variable 'BenchmarkNoisyBlocksSrgb' \\(found: foo, bar\\)"):
        SIDDBlocks(tmp_path / "two.mat", noisy_key="BenchmarkNoisyBlocksSrgb")
    save_mat_v73(tmp_path / "flat.mat", BenchmarkNoisyBlocksSrgb=noisy.reshape(6, 16, 16, 3))
    with pytest.raises(ValueError, match=r"expected uint8 blocks of shape \(images, blocks, height, width, 3\)"
                                         r".*found uint8 of shape \(6, 16, 16, 3\)"):
        SIDDBlocks(tmp_path / "flat.mat")
    scipy.io.savemat(tmp_path / "float.mat", {"ValidationGtBlocksSrgb": noisy / 255.0})
    with pytest.raises(ValueError, match="found float64"):
        SIDDBlocks(tmp_path / "float.mat")
    scipy.io.savemat(tmp_path / "gt.mat", {"ValidationGtBlocksSrgb": noisy[:1]})
    scipy.io.savemat(tmp_path / "noisy.mat", {"ValidationNoisyBlocksSrgb": noisy})
    with pytest.raises(ValueError, match="do not match"):
        SIDDBlocks(tmp_path / "noisy.mat", tmp_path / "gt.mat")


@pytest.mark.parametrize("version", ["v5", "v7.3"])
def test_corrupt_or_truncated_mat_names_the_file(tmp_path, rng, version):
    noisy, _ = make_blocks(rng, n_img=4, n_blk=4, size=32)
    good = tmp_path / "good.mat"
    if version == "v5":
        scipy.io.savemat(good, {"BenchmarkNoisyBlocksSrgb": noisy})
    else:
        save_mat_v73(good, BenchmarkNoisyBlocksSrgb=noisy)
    data = good.read_bytes()
    bad = tmp_path / "BenchmarkNoisyBlocksSrgb_cut.mat"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="BenchmarkNoisyBlocksSrgb_cut.mat"):
        load_mat_variable(bad, "BenchmarkNoisyBlocksSrgb")
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"definitely not a mat file" * 10)
    with pytest.raises(ValueError, match="junk.mat"):
        SIDDBlocks(junk)
    with pytest.raises(FileNotFoundError, match="missing.mat"):
        SIDDBlocks(tmp_path / "missing.mat")


# ----------------------------------------------------------------------------- submissions

def test_submission_round_trips_in_both_formats(tmp_path, rng):
    noisy, _ = make_blocks(rng, n_img=2, n_blk=32)
    denoised, time_mp = denoise_sidd_blocks(noisy, lambda x: x)
    np.testing.assert_array_equal(denoised, noisy)                   # identity stays exact through float
    assert time_mp >= 0
    paths = write_sidd_submission(denoised, tmp_path / "sub", time_mp=time_mp,
                                  method_info={"MethodName": "AMSNet"})
    np.testing.assert_array_equal(read_sidd_submission_csv(paths["csv"], block_shape=(16, 16, 3)), noisy)
    np.testing.assert_array_equal(read_sidd_submission_mat(paths["mat"]), noisy)
    # the format itself, independent of our reader: header, ID = image * 32 + block, base64 of C-order bytes
    lines = paths["csv"].read_text().splitlines()
    assert lines[0] == "ID,BLOCK" and len(lines) == 1 + 64
    ident, encoded = lines[33].split(",")
    assert ident == "32" and base64.b64decode(encoded) == noisy[1, 0].tobytes()
    mat = scipy.io.loadmat(paths["mat"])
    assert mat["DenoisedBlocksSrgb"].shape == (2, 32) and mat["DenoisedBlocksSrgb"][1, 0].dtype == np.uint8
    assert mat["OptionalData"]["MethodName"][0, 0][0] == "AMSNet"
    assert mat["TimeMPSrgb"].item() == pytest.approx(time_mp)


def test_submission_quantises_like_the_metrics_and_checks_shapes(tmp_path, rng):
    noisy, _ = make_blocks(rng, n_img=1, n_blk=2)
    shifted, _ = denoise_sidd_blocks(noisy, lambda x: x + 0.6 / 255)  # rounds up by one level
    np.testing.assert_array_equal(shifted, np.clip(noisy.astype(int) + 1, 0, 255))
    with pytest.raises(ValueError, match="denoiser returned shape"):
        denoise_sidd_blocks(noisy, lambda x: x[..., :8])
    with pytest.raises(ValueError, match="found float32"):
        write_sidd_submission(noisy.astype(np.float32), tmp_path)
    (tmp_path / "bad.csv").write_text("id,block\n0,AAAA\n")
    with pytest.raises(ValueError, match="ID,BLOCK"):
        read_sidd_submission_csv(tmp_path / "bad.csv")
