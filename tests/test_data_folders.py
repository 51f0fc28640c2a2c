"""Folder datasets: real PolyU/CC pairs, crops and augmentation that stay aligned, 16-bit photos, errors."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from conftest import shared_path
from torch.utils.data import DataLoader, default_collate

from amcfd.data.folders import NoisyFolder, PairedFolder
from amcfd.data.imageio import write_image
from amcfd.metrics import psnr
from amcfd.ops.augment import augment_inverse
from amcfd.registry import DATASETS, ConfigError


def position_image(h, w):
    """16-bit RGB image whose red/green channels encode the pixel's row/column exactly."""
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([rows, cols, np.full_like(rows, 7)], axis=2).astype(np.float32) / 65535


def make_pairs(root, n=3, h=40, w=48, clean_ext=".png"):
    for i in range(n):
        clean = position_image(h, w)
        write_image(root / "clean" / f"img{i}{clean_ext}", clean, bit_depth=16)
        write_image(root / "noisy" / f"img{i}.png", clean + 5 / 65535, bit_depth=16)


def decode_positions(t):
    """(3, h, w) tensor of position_image values -> integer rows, cols."""
    return torch.round(t[0] * 65535).long(), torch.round(t[1] * 65535).long()


@pytest.mark.parametrize("name, expected_psnr", [("cc15", 33.41), ("polyu", 35.97)])
def test_real_pairs_load_and_give_the_published_noisy_psnr(name, expected_psnr):
    ds = PairedFolder(shared_path("data", name))
    assert len(ds) == {"cc15": 15, "polyu": 100}[name]
    loader = DataLoader(ds, batch_size=1, num_workers=2)
    values = []
    for batch in loader:
        assert batch["noisy"].shape == batch["clean"].shape == (1, 3, 512, 512)
        assert batch["noisy"].dtype == torch.float32 and 0 <= batch["noisy"].min() <= batch["noisy"].max() <= 1
        values.append(psnr(batch["noisy"], batch["clean"]).item())
    assert abs(np.mean(values) - expected_psnr) < 0.02
    assert ds[0]["name"] == sorted(p.stem for p in (ds.root / "noisy").iterdir())[0]


def test_crops_and_flips_keep_noisy_and_clean_aligned(tmp_path):
    make_pairs(tmp_path, clean_ext=".tif")                     # pairs matched by stem across formats
    ds = PairedFolder(tmp_path, crop_size=16, augment=True, repeat=20)
    assert len(ds) == 60
    seen_tops = set()
    for index in range(len(ds)):
        item = ds[index]
        assert item["noisy"].shape == item["clean"].shape == (3, 16, 16)
        torch.testing.assert_close(item["noisy"] - item["clean"], torch.full((3, 16, 16), 5 / 65535),
                                   atol=1e-7, rtol=0)
        # the clean crop is a contiguous window of the original after undoing one of the 8 modes
        matches = []
        for mode in range(8):
            rows, cols = decode_positions(augment_inverse(item["clean"], mode))
            top, left = rows[0, 0].item(), cols[0, 0].item()
            expected_rows = torch.arange(top, top + 16)[:, None].expand(16, 16)
            expected_cols = torch.arange(left, left + 16)[None, :].expand(16, 16)
            if torch.equal(rows, expected_rows) and torch.equal(cols, expected_cols):
                matches.append(mode)
                seen_tops.add((top, left))
        assert len(matches) == 1
    assert len(seen_tops) > 20                                  # crops really are random


def test_crops_follow_the_torch_seed(tmp_path):
    make_pairs(tmp_path, n=1)
    ds = PairedFolder(tmp_path, crop_size=8, augment=True)
    torch.manual_seed(3)
    a = ds[0]["noisy"]
    torch.manual_seed(3)
    assert torch.equal(ds[0]["noisy"], a)
    assert any(not torch.equal(ds[0]["noisy"], a) for _ in range(5))


def test_noisy_folder_keeps_16bit_and_repeats(tmp_path):
    img = np.random.default_rng(0).integers(0, 65536, (20, 30, 3)) / 65535
    write_image(tmp_path / "photos" / "a.png", img, bit_depth=16)
    write_image(tmp_path / "photos" / "sub" / "b.jpg", np.full((24, 24, 3), 0.5))
    ds = NoisyFolder(tmp_path / "photos")
    assert [ds[i]["name"] for i in range(len(ds))] == ["a", "sub_b"]
    whole = ds[0]
    assert set(whole) == {"noisy", "name"} and whole["noisy"].shape == (3, 20, 30)
    np.testing.assert_allclose(whole["noisy"].permute(1, 2, 0).numpy(), img, atol=1e-7)
    crops = NoisyFolder(tmp_path / "photos", crop_size=12, augment=True, repeat=4, cache=True)
    assert len(crops) == 8 and crops[5]["noisy"].shape == (3, 12, 12)
    assert len(NoisyFolder(tmp_path / "photos", recursive=False)) == 1


def test_registry_builds_folder_datasets(tmp_path):
    make_pairs(tmp_path, n=2)
    ds = DATASETS.build({"type": "PairedFolder", "root": str(tmp_path), "max_images": 1}, where="datasets.val")
    assert len(ds) == 1 and ds[0]["name"] == "img0"
    with pytest.raises(ConfigError, match="datasets.train.crop_sise"):
        DATASETS.build({"type": "NoisyFolder", "root": str(tmp_path), "crop_sise": 8}, where="datasets.train")


def test_configuration_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        NoisyFolder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no images"):
        NoisyFolder(tmp_path / "empty")
    make_pairs(tmp_path / "pairs", n=2)
    (tmp_path / "pairs" / "clean" / "img1.png").unlink()
    with pytest.raises(ConfigError, match="img1.png"):
        PairedFolder(tmp_path / "pairs")
    with pytest.raises(ConfigError, match="crop_size"):
        NoisyFolder(tmp_path / "pairs" / "noisy", crop_size=-4)


def test_bad_files_fail_with_their_name(tmp_path):
    make_pairs(tmp_path, n=1, h=20, w=20)
    assert PairedFolder(tmp_path, crop_size=32)[0]["noisy"].shape == (3, 32, 32)      # padded up to the crop
    (tmp_path / "noisy" / "img0.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(ConfigError, match="img0.png"):
        PairedFolder(tmp_path, cache=False)
    with pytest.raises(ConfigError, match="img0.png"):
        PairedFolder(tmp_path, cache=True)


def test_official_polyu_cc_layout_with_suffixes(tmp_path):
    """PolyU/CC downloads: NAME_real.* (noisy) beside NAME_mean.* (clean) in one folder."""
    folder = tmp_path / "CroppedImages"
    for i in range(3):
        clean = position_image(24, 24)
        write_image(folder / f"Canon80D_8_8_3200_ball_{i}_mean.JPG", clean)
        write_image(folder / f"Canon80D_8_8_3200_ball_{i}_real.JPG", clean)
    ds = DATASETS.build({"type": "PairedFolder", "root": str(folder), "noisy_folder": ".", "clean_folder": ".",
                         "noisy_suffix": "_real", "clean_suffix": "_mean"}, where="datasets.val_polyu")
    assert len(ds) == 3 and ds[2]["name"] == "Canon80D_8_8_3200_ball_2"
    assert ds.noisy.paths[0].name.endswith("_real.JPG") and ds.clean.paths[0].name.endswith("_mean.JPG")
    with pytest.raises(ConfigError, match="same files"):
        PairedFolder(folder, noisy_folder=".", clean_folder=".")
    (folder / "Canon80D_8_8_3200_ball_1_mean.JPG").unlink()
    with pytest.raises(ConfigError, match="ball_1_real.JPG"):
        PairedFolder(folder, noisy_folder=".", clean_folder=".", noisy_suffix="_real", clean_suffix="_mean")


def test_noisy_folder_mixing_gray_and_rgb_batches_as_rgb(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "gray.png"), rng.integers(0, 256, (20, 24), dtype=np.uint8))
    cv2.imwrite(str(folder / "rgb.png"), rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    batch = default_collate([NoisyFolder(folder, crop_size=16)[i] for i in range(2)])
    assert batch["noisy"].shape == (2, 3, 16, 16)
    gray = NoisyFolder(folder, channels=1)
    assert all(gray[i]["noisy"].shape[0] == 1 for i in range(2))
    with pytest.raises(ConfigError, match="channels"):
        NoisyFolder(folder, channels=2)
