"""'auto' options (noise/auto.py): chosen from the training images' noise, logged, saved, overridable."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from amcfd.data.folders import NoisyFolder
from amcfd.data.imageio import write_image
from amcfd.engine.inference import build_denoiser
from amcfd.engine.trainer import Trainer
from amcfd.noise.auto import auto_options, resolve_auto
from amcfd.options import load_options, validate
from amcfd.registry import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _photos(folder: Path, std: float, count: int = 2, size: int = 96) -> Path:
    """Smooth images with i.i.d. Gaussian noise of ``std`` (in [0, 1] units), saved as 16-bit PNGs."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:size, 0:size] / size
    for i in range(count):
        clean = np.stack([0.3 + 0.4 * x, 0.5 + 0.2 * y, 0.4 + 0.1 * (x + y) + 0.05 * i], axis=-1)
        write_image(folder / f"photo{i}.png", np.clip(clean + std * rng.standard_normal(clean.shape), 0, 1),
                    bit_depth=16)
    return folder


def _options(tmp_path: Path, root: Path, *overrides: str) -> dict:
    """options/train/photos.yml pointed at ``root``, with a tiny network and 2 iterations."""
    return load_options(REPO / "options/train/photos.yml", [
        f"datasets.train.root={root}", f"path.experiments_root={tmp_path / 'experiments'}", "train.total_iter=2",
        "datasets.train.crop_size=32", "logger.save_checkpoint_freq=2", "logger.progress_bar=false",
        "logger.use_tb_logger=false", *overrides], phase="train")


@pytest.mark.parametrize("std, expected", [(3 / 255, {"pd_train": 2, "pd_test": 2, "recharge": True}),
                                           (20 / 255, {"pd_train": 2, "pd_test": 1, "recharge": False})])
def test_choices_follow_the_noise_and_are_deterministic(tmp_path, std, expected):
    opt = _options(tmp_path, _photos(tmp_path / "photos", std))
    dataset = NoisyFolder(opt["datasets"]["train"]["root"])
    resolved, record = resolve_auto(opt, dataset)
    assert {k: resolved["method"][k] for k in expected} == expected
    assert record["chosen"] == {f"method.{k}": v for k, v in expected.items()}
    assert abs(record["measured"]["noise_level_255"] - std * 255) < 0.15 * std * 255
    assert opt["method"]["pd_train"] == "auto"                   # the given options are not changed
    assert resolve_auto(opt, dataset) == (resolved, record)      # same images, same choices


def test_training_saves_the_choices_and_an_override_wins(tmp_path):
    root = _photos(tmp_path / "photos", 3 / 255)
    trainer = Trainer(_options(tmp_path, root, "method.pd_train=3"))
    trainer.train()
    saved = yaml.safe_load((trainer.exp_dir / "options.yml").read_text())
    run = yaml.safe_load((trainer.exp_dir / "run.yml").read_text())
    assert saved["method"]["pd_train"] == 3 and saved["method"]["pd_test"] == 2 and saved["method"]["recharge"] is True
    assert run["auto"]["chosen"] == {"method.pd_test": 2, "method.recharge": True}
    assert run["auto"]["measured"]["images"] == 2
    assert trainer.method.pd_train == 3 and trainer.method.recharge is True
    assert "auto: method.pd_test = 2" in (trainer.exp_dir / "train.log").read_text()

    # testing: 'auto' means the value training chose; a plain value overrides it
    test = {"name": "t", "path": {"pretrain_network": str(trainer.ckpt_dir / "iter_00000002.pth")},
            "method": {"pd_test": "auto"}}
    method, denoise = build_denoiser(validate(test, "test"))
    assert method.pd_test == 2 and method.recharge is True
    test["method"] = {"pd_test": 1, "recharge": False}
    method, denoise = build_denoiser(validate(test, "test"))
    assert method.pd_test == 1 and method.recharge is False
    assert denoise(torch.rand(1, 3, 40, 40)).shape == (1, 3, 40, 40)


def test_auto_is_refused_where_nothing_chooses_it(tmp_path):
    with pytest.raises(ConfigError, match="method.num_masks' cannot be 'auto'.*pd_train"):
        auto_options({"type": "AMSNet", "num_masks": "auto"})
    with pytest.raises(ConfigError, match="cannot be 'auto' for method APBSN"):
        auto_options({"type": "APBSN", "pd_train": "auto"})
    with pytest.raises(ConfigError, match="num_masks"):
        _options(tmp_path, _photos(tmp_path / "photos", 3 / 255), "method.num_masks=auto")


def test_large_images_are_measured_on_their_central_region(monkeypatch):
    import amcfd.noise.auto as auto

    rng = np.random.default_rng(1)
    image = np.clip(128 + 20 * rng.standard_normal((300, 260, 3)), 0, 255).astype(np.uint8)
    image[:100] = np.clip(128 + 2 * rng.standard_normal((100, 260, 3)), 0, 255)      # light noise at the top

    class Whole:
        names = ["one"]

        def __len__(self):
            return 1

        def image_arrays(self, i):
            return {"noisy": image}, "one", "one"

    whole = auto.measure_dataset(Whole())["median_level"]               # the estimate follows the lightest part
    monkeypatch.setattr(auto, "MAX_SIDE", 96)                           # the central 96 x 96: heavy noise only
    assert auto.measure_dataset(Whole())["median_level"] > 4 * whole
    assert auto.central_region(image, 96).shape == (96, 96, 3) and auto.central_region(image, 999).shape == image.shape
