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
    from amcfd.engine.budget import pixels

    write_image(tmp_path / "a.png", np.zeros((20, 30, 3)))
    (tmp_path / "b.png").write_bytes(b"not an image")
    assert pixels([tmp_path / "a.png"], 10_000) == 600
    assert pixels([tmp_path / "a.png", tmp_path / "b.png"], 10_000) == 10_600


def test_a_missing_path_the_user_gave_is_a_user_error_and_any_other_is_internal():
    from amcfd.cli import EXIT_CONFIG, _run
    from amcfd.registry import InputNotFound

    def given(argv):
        raise InputNotFound("image folder or file not found: photos/")

    def internal(argv):
        raise FileNotFoundError("some/cache/file.npy")

    assert _run(given, []) == EXIT_CONFIG
    with pytest.raises(FileNotFoundError, match="cache"):            # not reported as the user's typo
        _run(internal, [])


def test_an_internal_file_not_found_in_amcfd_denoise_exits_1_with_its_traceback_in_the_log(tmp_path, monkeypatch,
                                                                                           capsys):
    import amcfd.cli
    from amcfd.data.imageio import write_image
    from amcfd.denoise import main

    write_image(tmp_path / "photos" / "a.png", np.full((32, 32, 3), 0.5))

    def broken(*args, **kwargs):
        raise FileNotFoundError("an internal file")

    monkeypatch.setattr(amcfd.cli, "denoise_files", broken)
    code = main([str(tmp_path / "photos"), "--output", str(tmp_path / "out"), "--method", "classical",
                 "--work", str(tmp_path / "work")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and "stage 'denoise' failed" in err[-1] and "denoise.log" in err[-1]
    log = (tmp_path / "work" / "denoise.log").read_text()
    assert "Traceback" in log and "an internal file" in log


def test_a_lock_the_file_system_cannot_take_is_not_reported_as_another_run(tmp_path, monkeypatch):
    import errno
    import fcntl

    from amcfd.engine.runs import WorkLock

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(ConfigError, match="cannot lock the work folder .*No locks available") as info:
        WorkLock(tmp_path).__enter__()
    assert "another run" not in str(info.value)


def test_a_full_disk_while_fetching_weights_is_not_reported_as_a_download_failure(tmp_path, monkeypatch):
    import errno
    import shutil
    import types

    from amcfd.hub import weights

    def full(src, dst, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", full)
    release = types.SimpleNamespace(url=str(tmp_path / "source.pth"), name="tiny")
    with pytest.raises(OSError, match="cannot write the weights 'tiny'") as info:
        weights._download(release, tmp_path / "cache" / "tiny.pth")
    assert info.value.errno == errno.ENOSPC and "download" not in str(info.value)


@pytest.mark.parametrize("code, promise", [(28, True), (5, False)])          # ENOSPC, EIO
def test_disk_errors_promise_intact_files_only_when_they_can(code, promise, capsys):
    from amcfd.cli import EXIT_FAILED, _run

    def failing(argv):
        raise OSError(code, "disk trouble")

    assert _run(failing, []) == EXIT_FAILED
    assert ("intact" in capsys.readouterr().err) == promise


def test_a_run_refused_under_the_work_lock_leaves_no_folder_and_a_finished_one_keeps_it(tmp_path):
    from amcfd.engine.runs import WorkLock

    with pytest.raises(ConfigError):
        with WorkLock(tmp_path / "experiments" / "work"):
            raise ConfigError("--budget-minutes too small")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError):
        with WorkLock(tmp_path / "work"):
            (tmp_path / "work" / "stage").mkdir()
            (tmp_path / "work" / "stage" / "train.log").write_text("written")
            raise ConfigError("later failure")
    assert (tmp_path / "work" / "stage" / "train.log").is_file()         # work written before is never removed
