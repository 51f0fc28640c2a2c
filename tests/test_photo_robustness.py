"""A user's photo folder as it comes: small images, truncated or corrupt files, sub-folders, 12-MP targets."""
from __future__ import annotations

import logging
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from test_distill import save_teacher
from torch.utils.data import DataLoader

import amcfd.ops.bilateral as bilateral
from amcfd.cli import check_output_folder, denoise_files, photo_files
from amcfd.data.folders import NoisyFolder, PairedFolder
from amcfd.data.imageio import raw_to_float, read_image_raw, write_image
from amcfd.data.transforms import make_item
from amcfd.engine.teacher import FrozenTeacher, TeacherTargetCache, TeacherTargets
from amcfd.options import validate
from amcfd.registry import ConfigError

BF = {"d": 5, "sigma_color": 20.0, "sigma_space": 3.0}


def photo(path: Path, h: int, w: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    return write_image(path, rng.integers(0, 256, (h, w, 3)) / 255)


def truncated(path: Path, source: Path) -> Path:
    """``path`` holding ``source``'s bytes less the last third."""
    data = source.read_bytes()
    path.write_bytes(data[:len(data) * 2 // 3])
    return path


def huge_png(path: Path, source: Path) -> Path:
    """``source`` (a PNG) with a header claiming 100000 x 100000 pixels: OpenCV raises instead of returning None."""
    header = b"IHDR" + struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    data = source.read_bytes()
    path.write_bytes(data[:12] + header + struct.pack(">I", zlib.crc32(header)) + data[33:])
    return path


def bad_files(folder: Path) -> list[str]:
    """A truncated PNG and JPEG, garbage and an oversized header in ``folder``; their names."""
    png, jpg = photo(folder / "src.png", 16, 16), photo(folder / "src.jpg", 16, 16)
    bad = [truncated(folder / "cut.png", png), truncated(folder / "cut.jpg", jpg), huge_png(folder / "huge.png", png)]
    (folder / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image IEND\xaeB`\x82")
    png.unlink()
    jpg.unlink()
    return [p.name for p in bad] + ["junk.png"]


def pixels(path: Path) -> torch.Tensor:
    """(C, H, W) float32 of an image file, as the datasets read it."""
    return torch.from_numpy(raw_to_float(read_image_raw(path)[0])).permute(2, 0, 1)


def single_pass(tmp_path: Path) -> dict:
    """Test options denoising with a tiny untrained network."""
    path = save_teacher(tmp_path / "net.pth", identity=True)
    return validate({"name": "t", "device": "cpu", "path": {"pretrain_network": str(path)}}, "test")


# ----------------------------------------------------------------------------- images smaller than the crop
def test_images_smaller_than_the_crop_are_reflected_up_to_it(tmp_path):
    photo(tmp_path / "a_wide.png", 5, 40)
    photo(tmp_path / "b_tiny.png", 1, 3)
    photo(tmp_path / "c_big.png", 40, 40)
    ds = NoisyFolder(tmp_path, crop_size=16, augment=True, cache=False)
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["noisy"].shape == (3, 3, 16, 16)
    plain = NoisyFolder(tmp_path, crop_size=16)
    assert torch.equal(plain[1]["noisy"], pixels(tmp_path / "b_tiny.png")[:, :, [0, 1, 2, 1] * 4].expand(3, 16, 16))
    wide, rows = plain[0]["noisy"], [0, 1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]
    assert torch.equal(wide, wide[:, :5][:, rows])             # reflected rows below the image


def test_noisy_clean_and_teacher_targets_get_the_same_padding(tmp_path):
    for folder, offset in (("noisy", 3), ("clean", 0)):
        (tmp_path / folder).mkdir()
        write_image(tmp_path / folder / "x.png", (np.arange(7 * 9 * 3).reshape(7, 9, 3) % 200 + offset) / 255)
    item = PairedFolder(tmp_path, crop_size=12, augment=True)[0]
    torch.testing.assert_close(item["noisy"] - item["clean"], torch.full((3, 12, 12), 3 / 255))
    targets = TeacherTargets(FrozenTeacher(str(save_teacher(tmp_path / "identity.pth", identity=True))), [1], BF)
    dataset = NoisyFolder(tmp_path / "noisy", crop_size=12, augment=True)
    item = TeacherTargetCache(dataset, targets, tmp_path / "cache", torch.device("cpu"), progress=False)[0]
    assert item["guide"].shape == item["target"].shape == (3, 12, 12)
    assert torch.equal(item["target"], item["noisy"].half().float())
    assert torch.equal(item["target_aug"], item["noisy"].half().float())


def test_crops_of_larger_images_are_drawn_as_before(tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (30, 41, 3), dtype=np.uint8)
    torch.manual_seed(5)
    item = make_item({"noisy": image}, "x", 16, False, "x")
    torch.manual_seed(5)
    top, left = int(torch.randint(30 - 16 + 1, (1,))), int(torch.randint(41 - 16 + 1, (1,)))
    assert torch.equal(item["noisy"], torch.from_numpy(raw_to_float(image[top:top + 16, left:left + 16]))
                       .permute(2, 0, 1))


def test_float16_arrays_become_float32_tensors():
    item = make_item({"noisy": np.full((4, 4, 3), 128, np.uint8), "target": np.full((4, 4, 3), 0.3, np.float16)},
                     "x", 2, True, "x")
    assert item["target"].dtype == torch.float32
    assert torch.equal(item["target"], torch.full((3, 2, 2), float(np.float16(0.3))))


# ----------------------------------------------------------------------------- truncated and corrupt files
@pytest.mark.parametrize("cache", [False, True])
def test_training_skips_unreadable_files_with_one_warning_each(tmp_path, caplog, cache):
    names = bad_files(tmp_path)
    photo(tmp_path / "sub" / "good.png", 20, 20)
    with caplog.at_level(logging.WARNING, logger="amcfd"):
        ds = NoisyFolder(tmp_path, crop_size=8, cache=cache)
    assert ds.names == ["sub_good"] and len(list(DataLoader(ds, batch_size=1))) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(names)
    for name in names:
        assert sum(name in w for w in warnings) == 1, (name, warnings)


def test_a_folder_of_unreadable_files_is_a_one_line_error(tmp_path):
    bad_files(tmp_path)
    with pytest.raises(ConfigError, match=re.escape(f"none of the 4 images in {tmp_path} can be read")) as error:
        NoisyFolder(tmp_path, crop_size=8)
    assert "\n" not in str(error.value)


def test_an_unreadable_pair_is_a_one_line_error_at_construction(tmp_path):
    for folder in ("noisy", "clean"):
        photo(tmp_path / folder / "a.png", 8, 8)
    truncated(tmp_path / "noisy" / "b.jpg", photo(tmp_path / "b.jpg", 16, 16))
    photo(tmp_path / "clean" / "b.png", 16, 16)
    with pytest.raises(ConfigError, match=r"noisy/b\.jpg: truncated JPEG") as error:
        PairedFolder(tmp_path, crop_size=8, cache=False)
    assert "\n" not in str(error.value)


def test_denoising_skips_truncated_files_and_fails_when_none_reads(tmp_path, caplog):
    photos, out = tmp_path / "photos", tmp_path / "out"
    photo(photos / "good.png", 12, 12)
    png, jpg = photo(tmp_path / "x.png", 12, 12), photo(tmp_path / "x.jpg", 12, 12)
    truncated(photos / "cut.png", png)
    truncated(photos / "cut.jpg", jpg)
    opt = single_pass(tmp_path)
    with caplog.at_level(logging.WARNING, logger="amcfd"):
        assert denoise_files(opt, photo_files(photos), photos, out) == 1
    assert [p.name for p in out.iterdir()] == ["good.png"]
    assert sum("cut.png" in r.getMessage() or "cut.jpg" in r.getMessage() for r in caplog.records) == 2
    (photos / "good.png").unlink()
    with pytest.raises(ConfigError, match=re.escape(f"none of the 2 images in {photos} can be read")) as error:
        denoise_files(opt, photo_files(photos), photos, tmp_path / "out2")
    assert "\n" not in str(error.value)


# ----------------------------------------------------------------------------- sub-folders
def test_photos_in_sub_folders_are_denoised_into_the_same_tree(tmp_path, caplog):
    photos = tmp_path / "photos"
    for name in ("a.png", "trip/b.jpg", "trip/day2/c.png", ".thumbs/d.png", "trip/.e.png"):
        photo(photos / name, 10, 10)
    for name in ("notes.txt", "trip/readme.md", ".git/config"):
        (photos / name).parent.mkdir(parents=True, exist_ok=True)
        (photos / name).write_text("x")
    with caplog.at_level(logging.WARNING, logger="amcfd"):
        files = photo_files(photos)
    assert [p.relative_to(photos).as_posix() for p in files] == ["a.png", "trip/b.jpg", "trip/day2/c.png"]
    warning = next(r.getMessage() for r in caplog.records if "not images" in r.getMessage())
    assert "2 file(s)" in warning and "notes.txt" in warning and "trip/readme.md" in warning
    assert NoisyFolder(photos).names == ["a", "trip_b", "trip_day2_c"]
    out = tmp_path / "out"
    assert denoise_files(single_pass(tmp_path), files, photos, out) == 3
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == \
        ["a.png", "trip/b.png", "trip/day2/c.png"]
    for inside in (photos, photos / "trip" / "denoised"):
        with pytest.raises(ConfigError, match="input folder"):
            check_output_folder(photos, inside)


# ----------------------------------------------------------------------------- teacher targets of big photos
def test_cached_targets_are_float16(tmp_path):
    photo(tmp_path / "photos" / "a.png", 20, 24)
    teacher = FrozenTeacher(str(save_teacher(tmp_path / "teacher.pth")), method={"r3": False})
    dataset = NoisyFolder(tmp_path / "photos", crop_size=None)
    cache = TeacherTargetCache(dataset, TeacherTargets(teacher, [1], BF), tmp_path / "cache", torch.device("cpu"),
                               progress=False)
    stored = {part: np.load(files[0]) for part, files in cache.files.items()}
    assert {a.dtype for a in stored.values()} == {np.dtype(np.float16)}
    expected = bilateral.bilateral_filter(pixels(tmp_path / "photos" / "a.png")[None], **BF)[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(stored["guide"][0], expected.astype(np.float16))
    item = cache[0]
    assert item["target"].dtype == item["guide"].dtype == torch.float32


@pytest.mark.parametrize("shape", [(1, 3, 37, 29), (2, 1, 11, 50)])
def test_bilateral_bands_give_the_same_result_and_gradient(monkeypatch, shape):
    x = torch.rand(shape, requires_grad=True)
    whole = bilateral.bilateral_filter(x, d=7, sigma_color=30.0, sigma_space=3.0)
    (grad,) = torch.autograd.grad(whole.square().sum(), x)
    monkeypatch.setattr(bilateral, "BAND_PIXELS", 3 * shape[-1] * shape[0] - 1)     # bands of 2 rows
    banded = bilateral.bilateral_filter(x, d=7, sigma_color=30.0, sigma_space=3.0)
    assert torch.equal(banded, whole)
    torch.testing.assert_close(torch.autograd.grad(banded.square().sum(), x)[0], grad)


def test_regions_cover_large_images_evenly_within_bounds():
    from amcfd.data.folders import regions

    boxes = regions(3000, 4000, 512, 1 << 20)
    assert len(boxes) == 4 and len(set(boxes)) == 4
    assert all(0 <= t and t + s <= 3000 and 0 <= left and left + s <= 4000 and s == 512 for t, left, s in boxes)
    assert regions(300, 200, 512, 1000) == [(50, 0, 200)]                   # one region, clipped to the short side


def test_noisy_folder_bounds_large_images_by_regions(tmp_path):
    from amcfd.data.folders import NoisyFolder

    rng = np.random.default_rng(0)
    write_image(tmp_path / "big.png", rng.random((100, 120, 3)))
    write_image(tmp_path / "small.png", rng.random((40, 50, 3)))
    whole = NoisyFolder(tmp_path)
    bounded = NoisyFolder(tmp_path, max_pixels=4096, region_size=32)
    assert whole.names == ["big", "small"] and len(bounded.names) == 5      # 4 regions of big, small whole
    shapes = [bounded.image_arrays(i)[0]["noisy"].shape for i in range(5)]
    assert shapes[:4] == [(32, 32, 3)] * 4 and shapes[4] == (40, 50, 3)
    big = whole.image_arrays(0)[0]["noisy"]
    for i, name in enumerate(bounded.names[:4]):
        top, left = map(int, name.split("@")[1].split("x"))
        assert np.array_equal(bounded.image_arrays(i)[0]["noisy"], big[top:top + 32, left:left + 32])


def test_two_photos_with_one_output_name_are_refused_before_anything_is_written(tmp_path):
    import subprocess
    import sys

    from amcfd.cli import check_output_names

    write_image(tmp_path / "photos" / "a.png", np.full((40, 40, 3), 0.5))
    write_image(tmp_path / "photos" / "a.jpg", np.full((40, 40, 3), 0.5))
    files = sorted((tmp_path / "photos").iterdir())
    with pytest.raises(ConfigError, match="a.png would both be written to"):
        check_output_names(files, tmp_path / "photos", tmp_path / "out")
    result = subprocess.run([sys.executable, "-m", "amcfd.denoise", "photos", "--output", "out"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "rename one of them" in result.stderr.strip().splitlines()[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]
