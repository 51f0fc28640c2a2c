"""amcfd-denoise: photos -> teacher -> coarse -> fine student -> denoised photos, resumable, with a summary."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from amcfd.data.imageio import read_image_raw, write_image

REPO = Path(__file__).resolve().parents[1]
TINY = {"network": {"type": "DnCNN", "in_nc": 3, "out_nc": 3, "nc": 8, "nb": 3},
        "logger": {"print_freq": 2, "save_checkpoint_freq": 4, "progress_bar": False}}


def _tiny_options(folder: Path) -> Path:
    """The repository's stage option files with a tiny network, tiny crops and 4 steps each."""
    (folder / "train").mkdir(parents=True)
    for name in ("photos.yml", "distill_coarse_cpu.yml", "distill_fine_cpu.yml"):
        tiny = {"base": str(REPO / "options/train" / name), **TINY, "train": {"total_iter": 4, "warmup_iter": 0},
                "datasets": {"train": {"crop_size": 32, "repeat": 2, "batch_size": 2}}}
        if name == "photos.yml":
            tiny["method"] = {"pd_train": 2}           # 'auto' for the rest
        (folder / "train" / name).write_text(yaml.safe_dump(tiny))
    return folder


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "amcfd.denoise", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("denoise")
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:56] / 48
    for i in range(3):
        clean = np.clip(np.stack([0.2 + 0.5 * x, 0.4 + 0.3 * y, 0.3 + 0.1 * i + 0 * x], -1), 0, 1)
        write_image(work / "clean" / f"p{i}.png", clean)
        write_image(work / "noisy" / f"p{i}.png", np.clip(clean + 0.05 * rng.standard_normal(clean.shape), 0, 1))
    (work / "noisy" / "notes.txt").write_text("not a photo")
    _tiny_options(work / "opts")
    return work


def test_whole_pipeline_then_rerun_skips_finished_stages(photos):
    args = ("noisy", "--output", "out", "--options", "opts", "--clean", "clean", "--work", "runs", "--device", "cpu")
    first = run(*args, cwd=photos)
    assert first.returncode == 0, first.stderr[-3000:]
    for stage in ("teacher", "coarse", "fine"):
        assert (photos / "runs" / stage / "models" / "iter_00000004.pth").is_file()
        assert f"| {stage} | 4 |" in first.stdout
    assert "Against the clean references (3 images)" in first.stdout and "| output |" in first.stdout
    assert "notes.txt" in first.stderr                                      # skipped with a warning
    teacher_opts = yaml.safe_load((photos / "runs/teacher/options.yml").read_text())
    assert teacher_opts["method"]["pd_test"] in (1, 2)                      # 'auto' resolved from the photos
    for i in range(3):                                                      # same size, bit depth, upright
        raw, info = read_image_raw(photos / "out" / f"p{i}.png")
        assert raw.shape == (48, 56, 3) and raw.dtype == np.uint8 and info.get("orientation", 1) == 1
    second = run(*args, "--keep", "student", cwd=photos)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stderr.count("finished before") == 3 and "| teacher | 4 | kept |" in second.stdout
    assert not (photos / "runs/teacher").exists() and (photos / "runs/fine").is_dir()


def test_pretrained_model_skips_training(photos):
    if not (photos / "runs/fine/models/iter_00000004.pth").is_file():
        pytest.skip("needs the pipeline test's student")
    result = run("noisy/p0.png", "--output", "out_pre", "--pretrained", "runs/fine/models/iter_00000004.pth",
                 cwd=photos)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (photos / "out_pre/p0.png").is_file() and "| teacher |" not in result.stdout


@pytest.mark.parametrize("args, message", [
    (("noisy", "--output", "noisy/out"), "never overwritten"),
    (("missing", "--output", "o"), "not found: missing"),
    (("noisy/p0.png", "--output", "o"), "training needs a folder"),
    (("noisy", "--output", "o", "--budget-minutes", "0"), "--budget-minutes must be > 0"),
    (("noisy", "--output", "o", "--pretrained", "nope.pth"), "--pretrained: file does not exist"),
])
def test_bad_input_is_one_line_and_writes_nothing(photos, args, message):
    result = run(*args, cwd=photos)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and last.startswith("error: ") and message in last
    assert result.stderr.count("error") == 1 and "Traceback" not in result.stderr
    assert not (photos / "o").exists() and not (photos / "noisy/out").exists()
