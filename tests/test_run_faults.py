"""Faults of training and of the one command: unreadable checkpoints, a full disk, unexpected errors, the lock,
budgets (fill, warm-up, refusal) and stage identity."""
from __future__ import annotations

import errno
import io
from pathlib import Path

import numpy as np
import pytest
from test_engine import tiny_options

from amcfd.cli import main_test
from amcfd.data import imageio
from amcfd.data.imageio import write_image
from amcfd.engine import checkpoint
from amcfd.engine.checkpoint import finished_run, iteration_checkpoints, load_checkpoint
from amcfd.engine.runs import WorkLock, stage_record, what_differs
from amcfd.engine.trainer import Trainer
from amcfd.registry import ConfigError


def _full_disk_after(calls: int, real):
    """A writer that works ``calls`` times, then writes a few bytes and fails as a full disk does."""
    count = {"n": 0}

    def write(*args, **kwargs):
        count["n"] += 1
        if count["n"] > calls:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    return write


def test_resume_passes_over_a_truncated_checkpoint(tmp_path, capsys):
    trainer = Trainer(tiny_options(tmp_path, total_iter=4), auto_resume=False)
    trainer.train()
    (_, older), (_, newest) = iteration_checkpoints(trainer.ckpt_dir)[-2:]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    capsys.readouterr()
    resumed = Trainer(tiny_options(tmp_path, total_iter=6), auto_resume=True)
    assert resumed.iteration == load_checkpoint(older)["iteration"] == 3
    bad = [line for line in capsys.readouterr().err.splitlines() if "unreadable checkpoint" in line]
    assert len(bad) == 1 and newest.name in bad[0]
    assert finished_run(trainer.exp_dir) is None                     # iteration 3 of 4: not finished


class FullDiskFile(io.FileIO):
    """A file on a disk that fills up after ``room`` bytes: the write that does not fit writes what fits, then
    fails with ENOSPC, as a real full disk does."""
    room = 4096

    def write(self, data) -> int:
        if self.tell() + len(data) > self.room:
            super().write(bytes(data)[: max(0, self.room - self.tell())])
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


def test_full_disk_while_checkpointing_keeps_the_earlier_ones(tmp_path, monkeypatch, capsys):
    from amcfd.cli import main_train

    first = Trainer(tiny_options(tmp_path, total_iter=2))
    first.train()
    saved = {p.name: p.read_bytes() for _, p in iteration_checkpoints(first.ckpt_dir)}
    # every file the checkpoint module opens for writing is on the full disk (the data, not the call, fails)
    monkeypatch.setattr(checkpoint, "open", lambda path, mode="r": FullDiskFile(path, mode.replace("b", "")),
                        raising=False)
    options = tmp_path / "tiny.yml"
    import yaml

    opt = tiny_options(tmp_path)
    options.write_text(yaml.safe_dump({**opt, "train": {**opt["train"], "total_iter": 4}}))
    code = main_train(["-opt", str(options), "--auto_resume"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith("error: ") and "No space left" in err[-1] and "Traceback" not in err
    assert {p.name: p.read_bytes() for _, p in iteration_checkpoints(first.ckpt_dir)} == saved
    assert not [p for p in first.ckpt_dir.iterdir() if p.name.startswith(".")]     # no temporary file left


def test_full_disk_while_writing_outputs_keeps_the_earlier_ones(tmp_path, monkeypatch, capsys):
    trainer = Trainer(tiny_options(tmp_path, total_iter=2))
    trainer.train()
    model = iteration_checkpoints(trainer.ckpt_dir)[-1][1]
    for i in range(3):
        write_image(tmp_path / "photos" / f"p{i}.png", np.random.default_rng(i).random((24, 28, 3)))
    args = ["-opt", str(tmp_path / "test.yml"), "--input", str(tmp_path / "photos"), "--output", str(tmp_path / "out")]
    (tmp_path / "test.yml").write_text(f"name: t\npath: {{pretrain_network: {model}}}\n")
    assert main_test(args) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    real = imageio.atomic_write
    monkeypatch.setattr(imageio, "atomic_write",
                        lambda path, write: real(path, _full_disk_after(0, write) if path.name == "p1.png" else write))
    capsys.readouterr()
    assert main_test(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "No space left" in err[-1] and "Traceback" not in "\n".join(err)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before   # p0 rewritten same, p1 intact


def test_unexpected_error_in_a_stage_is_one_line_naming_the_stage_and_its_log(tmp_path, monkeypatch, capsys):
    from test_denoise_cli import tiny_options as stage_options
    from test_denoise_cli import write_photos

    from amcfd import denoise

    write_photos(tmp_path / "noisy", seed=0)
    stage_options(tmp_path / "opts")

    def boom(self):
        raise RuntimeError("boom in the loop")

    monkeypatch.setattr(Trainer, "train", boom)
    code = denoise.main([str(tmp_path / "noisy"), "--output", str(tmp_path / "out"), "--options",
                         str(tmp_path / "opts"), "--work", str(tmp_path / "runs"), "--device", "cpu",
                         "--budget-minutes", "0.05"])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and last.startswith("error: stage 'teacher' failed: RuntimeError: boom in the loop")
    log_file = Path(last.split("traceback in ")[1].rstrip(")"))
    assert log_file.parent.name.startswith("teacher-") and "boom in the loop" in log_file.read_text()
    assert "Traceback" in log_file.read_text() and not (tmp_path / "out").exists()


def test_the_lock_refuses_a_second_holder_and_is_released(tmp_path):
    with WorkLock(tmp_path):
        with pytest.raises(ConfigError, match=r"another run \(pid \d+\) is using the work folder"):
            with WorkLock(tmp_path):
                pass
    with WorkLock(tmp_path):                      # released on exit (and by the kernel when a process dies)
        pass


def test_fill_budget_raises_total_iter_and_fits_warm_up(tmp_path):
    trainer = Trainer(tiny_options(tmp_path, total_iter=5, warmup_iter=1000, max_minutes=0.03, fill_budget=True))
    trainer.train()
    t = trainer.opt["train"]
    assert t["total_iter"] == trainer.iteration > 20                   # ran past its nominal 5 steps
    assert t["warmup_iter"] <= t["total_iter"] // 10                   # warm-up inside the fitted schedule


def test_a_run_that_slows_down_after_its_budget_probe_still_ends_within_its_budget(tmp_path):
    import time

    trainer = Trainer(tiny_options(tmp_path, total_iter=100_000, warmup_iter=0, max_minutes=0.03))
    step = trainer._step

    def slower(batch):                  # a busy machine: after the probe, every step takes 40 ms more
        if trainer.iteration > 30:
            time.sleep(0.04)
        return step(batch)

    trainer._step = slower
    trainer.train()
    assert trainer.spent_seconds() < 0.03 * 60 + 0.5            # the probe alone would have run for minutes
    assert finished_run(trainer.exp_dir) is not None             # and it ended as a finished run


def test_a_budget_that_shortens_a_multistep_schedule_keeps_its_shape(tmp_path):
    trainer = Trainer(tiny_options(tmp_path, total_iter=100_000, scheduler="multistep", milestones=[40_000, 80_000],
                                   warmup_iter=0, max_minutes=0.01))
    trainer.train()
    t = trainer.opt["train"]
    assert 20 <= t["total_iter"] < 100_000                              # fitted to the budget
    assert t["milestones"] == [round(0.4 * t["total_iter"]), round(0.8 * t["total_iter"])]


def test_without_fill_budget_the_budget_only_shortens(tmp_path):
    trainer = Trainer(tiny_options(tmp_path, total_iter=5, max_minutes=5.0))
    trainer.train()
    assert trainer.iteration == 5


def test_identity_covers_images_options_and_the_stage_before():
    images = {"a.png": [10, "x"], "b.png": [10, "y"]}
    base = stage_record("teacher", images, {"train": {"total_iter": 4}}, None)
    assert stage_record("teacher", dict(images), {"train": {"total_iter": 4}}, None)["identity"] == base["identity"]
    other_images = stage_record("teacher", {**images, "b.png": [11, "z"], "c.png": [1, "w"]},
                                {"train": {"total_iter": 4}}, None)
    other_options = stage_record("teacher", images, {"train": {"total_iter": 9}}, None)
    other_from = stage_record("teacher", images, {"train": {"total_iter": 4}}, {"teacher": "abc"})
    assert len({r["identity"] for r in (base, other_images, other_options, other_from)}) == 4
    assert what_differs(base, other_images) == "images: 1 changed, 1 added"
    assert what_differs(base, other_options) == "options: train.total_iter 4 -> 9"
    assert what_differs(base, other_from) == "the stage it starts from differs"


def test_identity_hashes_the_defaults_constants_and_version_but_not_logging(monkeypatch):
    import amcfd
    from amcfd.engine.runs import identity_options
    from amcfd.options import DEFAULTS

    recipe = {"network": {"type": "NAFNet", "preset": "cpu_student"}, "method": {"type": "AMSNet"},
              "datasets": {"train": {"type": "NoisyFolder", "root": None}}, "train": {"max_minutes": 4.5},
              "logger": {"print_freq": 10}}

    def identity(options=recipe, constants=None):
        return stage_record("teacher", {}, identity_options(options, constants), None)["identity"]

    base = identity()
    assert identity({**recipe, "logger": {"print_freq": 500}, "val": {"val_freq": 7}}) == base   # no effect
    assert identity({**recipe, "train": {"max_minutes": 9}, "device": "cuda"}) == base    # the budget: extends
    assert identity(constants={"TEACHER_R3": True}) != base
    monkeypatch.setitem(DEFAULTS["train"], "ema_decay", 0.5)                  # a changed default
    assert identity() != base
    monkeypatch.undo()
    assert identity() == base
    monkeypatch.setattr(amcfd, "__version__", "9.9.9")                        # an upgrade
    assert identity() != base
    options = identity_options(recipe)
    assert options["network"]["width"] == 8 and "pd_train" in options["method"]     # presets and class defaults


def test_cuda_rule_picks_the_published_networks_for_the_packaged_options_only(tmp_path):
    from test_denoise_cli import tiny_options

    from amcfd.stages import CUDA_NETWORKS, SHARE, stage_options

    for stage in SHARE:
        cpu, cuda = stage_options(stage, None, "cpu"), stage_options(stage, None, "cuda")
        assert cuda["network"] == CUDA_NETWORKS[stage] != cpu["network"]
        assert cuda["train"]["fill_budget"] and cpu["train"]["fill_budget"]
    assert stage_options("teacher", tiny_options(tmp_path / "opts"), "cuda")["network"]["type"] == "DnCNN"
