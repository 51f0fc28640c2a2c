"""End to end through the command line: train.py -> valid.py -> test.py on a user's photo folder."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / script), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny AMSNet trained through train.py (in a temporary working folder)."""
    work = tmp_path_factory.mktemp("cli")
    opt = {
        "name": "cli", "device": "cpu",
        "network": {"type": "DnCNN", "in_nc": 3, "out_nc": 3, "nc": 8, "nb": 3},
        "method": {"type": "AMSNet", "pd_train": 2},
        "datasets": {"train": {"type": "SyntheticCameraNoise", "images": ["astronaut"], "scale": 0.25,
                               "crop_size": 32, "repeat": 4, "batch_size": 2}},
        "train": {"total_iter": 4},
        "logger": {"print_freq": 2, "save_checkpoint_freq": 4, "progress_bar": False},
    }
    (work / "train.yml").write_text(yaml.safe_dump(opt))
    result = run("train.py", "-opt", "train.yml", cwd=work)
    assert result.returncode == 0, result.stderr
    assert (work / "experiments/cli/models/iter_00000004.pth").exists()
    assert (work / "experiments/cli/train.log").read_text().count("iter 4") == 1
    assert list((work / "experiments/cli/tb").glob("events.*"))
    test_opt = {"name": "cli", "path": {"pretrain_network": "experiments/cli/models/iter_00000004.pth"},
                "datasets": {"val_synth": {"type": "SyntheticCameraNoise", "images": ["chelsea"],
                                           "with_clean": True, "scale": 0.25}},
                "test": {"tile": 48, "tile_overlap": 8}}
    (work / "test.yml").write_text(yaml.safe_dump(test_opt))
    return work


def test_valid_writes_metrics_table_and_json(trained):
    result = run("valid.py", "-opt", "test.yml", cwd=trained)
    assert result.returncode == 0, result.stderr
    assert "SSIM (skimage)" in result.stdout and "SSIM (MATLAB)" in result.stdout
    metrics = json.loads((trained / "results/cli/metrics.json").read_text())["val_synth"]
    assert metrics["n"] == 1 and 0 < metrics["psnr"] < 100
    assert 0 < metrics["ssim_skimage"] <= 1 and 0 < metrics["ssim_matlab"] <= 1 and metrics["sec_per_image"] > 0


def test_test_denoises_a_folder_keeping_bit_depth_and_channels(trained):
    photos = trained / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(photos / "rgb8.png"), rng.integers(0, 256, (37, 61, 3), dtype=np.uint8))
    cv2.imwrite(str(photos / "rgb16.png"), rng.integers(0, 65536, (50, 41, 3), dtype=np.uint16))
    cv2.imwrite(str(photos / "gray.png"), rng.integers(0, 256, (33, 30), dtype=np.uint8))
    cv2.imwrite(str(photos / "rgba.png"), rng.integers(0, 256, (40, 40, 4), dtype=np.uint8))
    cv2.imwrite(str(photos / "photo.jpg"), rng.integers(0, 256, (100, 90, 3), dtype=np.uint8))
    (photos / "broken.png").write_bytes(b"\x89PNG not really")
    result = run("test.py", "-opt", "test.yml", "--input", "photos", "--output", "out", cwd=trained)
    assert result.returncode == 0, result.stderr
    assert "broken.png" in result.stderr  # skipped with a warning naming it
    out = trained / "out"
    expect = {"rgb8.png": ((37, 61, 3), np.uint8), "rgb16.png": ((50, 41, 3), np.uint16),
              "gray.png": ((33, 30), np.uint8), "rgba.png": ((40, 40, 4), np.uint8),
              "photo.png": ((100, 90, 3), np.uint8)}
    for name, (shape, dtype) in expect.items():
        img = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
        assert img is not None and img.shape == shape and img.dtype == dtype, name
    alpha_in = cv2.imread(str(photos / "rgba.png"), cv2.IMREAD_UNCHANGED)[..., 3]
    assert np.array_equal(cv2.imread(str(out / "rgba.png"), cv2.IMREAD_UNCHANGED)[..., 3], alpha_in)


def test_test_with_missing_input_is_a_one_line_error(trained):
    result = run("test.py", "-opt", "test.yml", "--input", "nowhere", cwd=trained)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "nowhere" in result.stderr.strip().splitlines()[-1]


def test_checkpoint_that_does_not_fit_is_a_one_line_error(trained):
    bad = trained / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    result = run("valid.py", "-opt", "test.yml", "--set", "path.pretrain_network=bad.pth", cwd=trained)
    assert result.returncode == 2 and "cannot read checkpoint bad.pth" in result.stderr
    other = run("valid.py", "-opt", "test.yml", "--set", "network.type=UNet", "network.n_feature=8", cwd=trained)
    assert other.returncode == 2 and "does not fit UNet" in other.stderr and "Traceback" not in other.stderr


def test_test_output_depends_only_on_the_image_and_the_seed(trained):
    rng = np.random.default_rng(1)
    both, alone = trained / "seed_both", trained / "seed_alone"
    both.mkdir()
    alone.mkdir()
    image = rng.integers(0, 256, (40, 44, 3), dtype=np.uint8)
    cv2.imwrite(str(both / "a_first.png"), rng.integers(0, 256, (30, 30, 3), dtype=np.uint8))
    cv2.imwrite(str(both / "b_second.png"), image)
    cv2.imwrite(str(alone / "b_second.png"), image)
    outputs = {}
    for name, folder, extra in (("both", both, []), ("alone", alone, []),
                                ("seed1", alone, ["--set", "seed=1"])):
        result = run("test.py", "-opt", "test.yml", "--input", folder.name, "--output", f"out_{name}",
                     "--set", "method.r3=true", *extra, cwd=trained)
        assert result.returncode == 0, result.stderr
        outputs[name] = cv2.imread(str(trained / f"out_{name}" / "b_second.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(outputs["both"], outputs["alone"])          # not affected by the image before it
    assert not np.array_equal(outputs["alone"], outputs["seed1"])     # other seed, other masks


def test_method_keys_without_type_apply_to_the_checkpoints_method(trained):
    result = run("valid.py", "-opt", "test.yml", "--set", "method.r3_copies=2", "--set", "method.r3=true",
                 cwd=trained)
    assert result.returncode == 0, result.stderr
    result = run("valid.py", "-opt", "test.yml", "--set", "method.r3_copie=2", cwd=trained)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "method.r3_copie" in result.stderr.strip().splitlines()[-1]


def test_folder_named_with_digits_and_files_that_are_not_images(trained):
    folder = trained / "20240101"
    folder.mkdir()
    rng = np.random.default_rng(2)
    cv2.imwrite(str(folder / "a.png"), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    for name in ("raw.dng", "phone.heic", "notes.txt"):
        (folder / name).write_bytes(b"not an image we read")
    result = run("test.py", "-opt", "test.yml", "--input", "20240101", "--output", "20240102", cwd=trained)
    assert result.returncode == 0, result.stderr
    assert (trained / "20240102" / "a.png").is_file()
    assert "skipping 3 file(s)" in result.stderr and "raw.dng" in result.stderr and "phone.heic" in result.stderr
    single = run("test.py", "-opt", "test.yml", "--input", "20240101/phone.heic", "--output", "x", cwd=trained)
    assert single.returncode == 2 and "Traceback" not in single.stderr
    assert single.stderr.strip().count("\n") == 0 and "phone.heic is not an image file" in single.stderr


@pytest.mark.parametrize("output", ["photos_in", "photos_in/denoised", "./photos_in/../photos_in/sub/deeper"])
def test_output_in_the_input_folder_is_refused(trained, output):
    folder = trained / "photos_in"
    folder.mkdir(exist_ok=True)
    original = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / "keep.png"), original)
    before = sorted(p.name for p in folder.rglob("*"))
    result = run("test.py", "-opt", "test.yml", "--input", "photos_in", "--output", output, cwd=trained)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "never overwritten" in result.stderr and result.stderr.strip().count("\n") == 0
    assert sorted(p.name for p in folder.rglob("*")) == before
    assert np.array_equal(cv2.imread(str(folder / "keep.png"), cv2.IMREAD_UNCHANGED), original)


def test_valid_computes_the_metrics_the_options_name(trained):
    result = run("valid.py", "-opt", "test.yml", "--set", "name=cli_metrics", "val.metrics=[psnr, ssim_matlab]",
                 cwd=trained)
    assert result.returncode == 0, result.stderr
    assert "SSIM (MATLAB)" in result.stdout and "SSIM (skimage)" not in result.stdout
    metrics = json.loads((trained / "results/cli_metrics/metrics.json").read_text())["val_synth"]
    assert {"psnr", "ssim_matlab"} <= set(metrics) and "ssim_skimage" not in metrics and "ssim" not in metrics
    assert all(set(scores) == {"psnr", "ssim_matlab"} for scores in metrics["per_image"].values())


def test_train_with_a_gray_network_on_rgb_data_is_a_one_line_error(tmp_path):
    opt = {"name": "gray_net", "device": "cpu",
           "network": {"type": "DnCNN", "in_nc": 1, "out_nc": 1, "nc": 8, "nb": 3},
           "method": {"type": "AMSNet", "pd_train": 2},
           "datasets": {"train": {"type": "SyntheticCameraNoise", "images": ["astronaut"], "scale": 0.25,
                                  "crop_size": 32, "batch_size": 2}},
           "train": {"total_iter": 2}}
    (tmp_path / "train.yml").write_text(yaml.safe_dump(opt))
    result = run("train.py", "-opt", "train.yml", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "option 'network': DnCNN takes 1-channel images but datasets.train gives 3-channel" in result.stderr
    assert not (tmp_path / "experiments").exists()


def test_test_py_carries_the_icc_profile_to_the_output(trained):
    from amcfd.data.imageio import read_image, write_image

    folder = trained / "with_icc"
    icc = b"\x00\x00\x01\x00test-profile" + bytes(range(64))
    write_image(folder / "p.png", np.random.default_rng(4).random((32, 40, 3)), icc=icc)
    assert read_image(folder / "p.png")[1]["icc"] == icc
    result = run("test.py", "-opt", "test.yml", "--input", "with_icc", "--output", "out_icc", cwd=trained)
    assert result.returncode == 0, result.stderr
    image, info = read_image(trained / "out_icc" / "p.png")
    assert image.shape == (32, 40, 3) and info["icc"] == icc


def test_test_py_does_not_need_the_option_files_validation_sets(trained):
    """options/test/nbsn.yml names SIDD's .mat files: test.py on a user's photos must not ask for them."""
    opt = yaml.safe_load((trained / "test.yml").read_text())
    opt["datasets"] = {"val_sidd": {"type": "SIDDBlocks", "noisy_mat": "no/Noisy.mat", "gt_mat": "no/Gt.mat"}}
    (trained / "sidd_test.yml").write_text(yaml.safe_dump(opt))
    photos = trained / "photos_sidd"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.png"), np.random.default_rng(2).integers(0, 256, (30, 30, 3), dtype=np.uint8))
    result = run("test.py", "-opt", "sidd_test.yml", "--input", "photos_sidd", "--output", "out_sidd", cwd=trained)
    assert result.returncode == 0, result.stderr
    assert cv2.imread(str(trained / "out_sidd" / "a.png")).shape == (30, 30, 3)
    valid = run("valid.py", "-opt", "sidd_test.yml", cwd=trained)
    assert valid.returncode == 2 and "option 'datasets.val_sidd." in valid.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("flag", ["--auto-resume", "--auto_resume"])
def test_train_takes_auto_resume_in_both_spellings(flag, monkeypatch, tmp_path):
    import amcfd.engine.trainer
    from amcfd.cli import main_train

    seen = {}

    class Recorder:
        exp_dir = tmp_path

        def __init__(self, opt, launcher="none", auto_resume=False):
            seen["auto_resume"] = auto_resume

        def train(self):
            pass

    monkeypatch.setattr(amcfd.engine.trainer, "Trainer", Recorder)
    (tmp_path / "t.yml").write_text(f"name: t\nnetwork: {{type: DnCNN}}\npath: {{experiments_root: {tmp_path}}}\n"
                                    "datasets: {train: {type: SyntheticCameraNoise, images: [astronaut]}}\n")
    assert main_train(["-opt", str(tmp_path / "t.yml"), flag]) == 0
    assert seen == {"auto_resume": True}


def test_progress_bars_written_to_a_file_update_rarely():
    code = ("import time\nfrom amcfd.progress import progress_bar\n"
            "for _ in progress_bar(range(60), desc='work'):\n    time.sleep(0.01)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "60/60" in out.stderr
    assert out.stderr.count("\r") <= 3                     # the first and the last state, not one per 0.1 s


@pytest.mark.parametrize("module, words", [("amcfd.denoise", ["--keep", "AMCFD_CACHE", "lock", "classical"]),
                                           ("amcfd.hub.cli", ["AMCFD_WEIGHTS_MIRROR", "tmbsn-sidd", "export"])])
def test_help_describes_the_command_without_rest_markup(module, words):
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "``" not in out.stdout
    assert all(word in out.stdout for word in words), out.stdout
