"""Bad input gives a one-line error naming the option, file or value (exit code 2), and writes nothing."""
from __future__ import annotations

import numpy as np
import pytest

from amcfd.engine.inference import select_device
from amcfd.options import validate
from amcfd.registry import ConfigError


def _opt(**sections) -> dict:
    opt = {"name": "x", "network": {"type": "DnCNN", "in_nc": 3, "out_nc": 3},
           "datasets": {"train": {"type": "SyntheticCameraNoise", "batch_size": 2}}}
    for key, value in sections.items():
        opt[key] = {**opt.get(key, {}), **value} if isinstance(value, dict) else value
    return opt


@pytest.mark.parametrize("section, key, value, message", [
    ("logger", "print_freq", 0, "option 'logger.print_freq' must be >= 1, got 0"),
    ("logger", "save_checkpoint_freq", -5, "option 'logger.save_checkpoint_freq' must be >= 1, got -5"),
    ("val", "val_freq", -1, "option 'val.val_freq' must be >= 0, got -1"),
    ("val", "tile", -64, "option 'val.tile' must be >= 0"),
    ("test", "tile_overlap", -1, "option 'test.tile_overlap' must be >= 0"),
    ("train", "total_iter", 0, "option 'train.total_iter' must be >= 1"),
    ("train", "lr", -1e-3, "option 'train.lr' must be >= 0.0"),
    ("train", "max_minutes", -2, "option 'train.max_minutes' must be >= 0.0"),
])
def test_out_of_range_numbers(section, key, value, message):
    with pytest.raises(ConfigError) as err:
        validate(_opt(**{section: {key: value}}), "train")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("key, value", [("batch_size", 0), ("batch_size", -2), ("num_workers", -1)])
def test_out_of_range_loader_keys(key, value):
    opt = _opt()
    opt["datasets"]["train"][key] = value
    with pytest.raises(ConfigError, match=f"option 'datasets.train.{key}' must be >= "):
        validate(opt, "train")


def test_tile_overlap_must_be_smaller_than_the_tile():
    with pytest.raises(ConfigError, match=r"'test.tile_overlap' \(64\) must be smaller than 'test.tile' \(64\)"):
        validate(_opt(test={"tile": 64, "tile_overlap": 64}), "train")
    validate(_opt(test={"tile": 0, "tile_overlap": 64}), "train")     # no tiling: the overlap is unused


@pytest.mark.parametrize("device", ["gpu", "cuda3", "CPU", "tpu:0"])
def test_unknown_device_names(device):
    with pytest.raises(ConfigError, match=f"option 'device' must be auto, cpu, cuda or cuda:N, got '{device}'"):
        validate(_opt(device=device), "train")
    with pytest.raises(ConfigError, match="option 'device' must be"):
        select_device(device)


def test_missing_cuda_device():
    import torch

    name = f"cuda:{torch.cuda.device_count() + 2}"
    with pytest.raises(ConfigError, match=f"option 'device: {name}' but"):
        select_device(name)


def test_budget_estimate_counts_an_unreadable_header_as_a_whole_photo(tmp_path):
    from amcfd.data.imageio import write_image
    from amcfd.denoise import pixels

    write_image(tmp_path / "a.png", np.zeros((20, 30, 3)))
    (tmp_path / "b.png").write_bytes(b"not an image")
    assert pixels([tmp_path / "a.png"], 10_000) == 600
    assert pixels([tmp_path / "a.png", tmp_path / "b.png"], 10_000) == 10_600
