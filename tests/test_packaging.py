"""The wheel: option files shipped as package data; console scripts and option file names work from any folder."""
from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from amcfd.data.imageio import write_image
from amcfd.options import CONFIG_DIR

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(cmd: list, cwd: Path) -> str:
    """Run ``cmd`` in ``cwd`` without PYTHONPATH; its stdout, or a failure showing both streams."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """The repository built into a wheel and installed (no dependencies) into a fresh venv. The running
    environment's site-packages (torch, numpy, ...) are appended to the venv's path by a .pth file, which adds
    the folders without running their own .pth files, so the checkout's editable install stays out."""
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"  # a copy, so the build's build/ and *.egg-info stay out of the checkout
    src.mkdir()
    for path in REPO.iterdir():
        if path.is_file() and not path.name.startswith("."):
            shutil.copy2(path, src / path.name)
    shutil.copytree(REPO / "amcfd", src / "amcfd", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", tmp / "dist", src], tmp)
    wheel = next((tmp / "dist").glob("amcfd-*.whl"))
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], tmp)
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel], tmp)
    purelib = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp).strip())
    outer = site.getsitepackages() + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])
    (purelib / "zz_outer_environment.pth").write_text("".join(f"{p}\n" for p in outer))
    return {"wheel": wheel, "venv": venv, "python": python, "purelib": purelib}


def test_wheel_ships_every_option_file(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    expected = {f"amcfd/configs/{p.relative_to(CONFIG_DIR).as_posix()}" for p in CONFIG_DIR.rglob("*.yml")}
    assert "amcfd/configs/train/demo.yml" in expected and expected <= names
    assert "amcfd/hub/registry.yml" in names                       # released weights by name


def test_installed_copy_is_the_one_imported(installed, tmp_path):
    code = "import amcfd, amcfd.options as o; print(amcfd.__file__); print(o.CONFIG_DIR)"
    module, configs = run([installed["python"], "-I", "-c", code], tmp_path).split()
    assert Path(module).parent == installed["purelib"] / "amcfd"
    assert Path(configs) == installed["purelib"] / "amcfd" / "configs"
    for script in ("amcfd-denoise", "amcfd-train", "amcfd-valid", "amcfd-test", "amcfd-weights"):  # the venv's python
        first = (installed["venv"] / "bin" / script).read_text().splitlines()[0]
        assert first == f"#!{installed['python']}", first


def test_console_scripts_work_from_another_folder(installed, tmp_path):
    bin_dir = installed["venv"] / "bin"
    assert "usage: amcfd-denoise" in run([bin_dir / "amcfd-denoise", "--help"], tmp_path)
    assert "| tmbsn-sidd | parkjun210/TM-BSN/ckpt/NBSN_SIDD.pth |" in run([bin_dir / "amcfd-weights", "list"], tmp_path)
    out = run([bin_dir / "amcfd-train", "-opt", "options/train/demo.yml", "--debug", "--set", "train.total_iter=2",
               "train.warmup_iter=0", "datasets.train.images=[astronaut]", "datasets.train.crop_size=48",
               "datasets.val.images=[coffee]", "datasets.val.center_crop=64", "logger.use_tb_logger=false",
               "logger.progress_bar=false"], tmp_path)
    assert "done:" in out
    checkpoints = list((tmp_path / "experiments" / "debug_demo").rglob("iter_*.pth"))
    assert checkpoints, out
    write_image(tmp_path / "photos" / "p0.png", np.random.default_rng(0).random((40, 48, 3)))
    denoised = run([bin_dir / "amcfd-denoise", "photos", "--output", "out", "--pretrained", checkpoints[0]], tmp_path)
    assert (tmp_path / "out" / "p0.png").is_file(), denoised
    # training reads the packaged stage option files (and times their networks) before it refuses a tiny budget
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    refused = subprocess.run([str(bin_dir / "amcfd-denoise"), "photos", "--output", "out2", "--budget-minutes",
                              "0.001", "--device", "cpu"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode == 2 and "is too small for 1 photo(s)" in refused.stderr, refused.stderr[-2000:]
