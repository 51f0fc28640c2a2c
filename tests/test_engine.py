"""The training engine: resume equivalence, checkpoints, NaN stop, archiving, DDP, tiled inference."""
from __future__ import annotations

import copy
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from amcfd.engine.checkpoint import iteration_checkpoints, load_checkpoint
from amcfd.engine.inference import tiled_denoise
from amcfd.engine.trainer import LossRiseWatch, Trainer, TrainingError, lr_factor
from amcfd.options import validate

REPO = Path(__file__).resolve().parents[1]


def tiny_options(root: Path, **train) -> dict:
    """A few-second AMSNet run: tiny DnCNN on tiny synthetic crops."""
    opt = {
        "name": "tiny",
        "seed": 3,
        "device": "cpu",
        "network": {"type": "DnCNN", "in_nc": 3, "out_nc": 3, "nc": 8, "nb": 3},
        "method": {"type": "AMSNet", "pd_train": 2, "pd_test": 2},
        "datasets": {
            "train": {"type": "SyntheticCameraNoise", "images": ["astronaut", "coffee"], "scale": 0.25,
                      "crop_size": 24, "augment": True, "repeat": 3, "batch_size": 2, "num_workers": 0},
            "val": {"type": "SyntheticCameraNoise", "images": ["chelsea"], "with_clean": True, "scale": 0.25,
                    "center_crop": 40, "seed": 9},
        },
        "train": {"total_iter": 6, "lr": 1e-3, "warmup_iter": 2, "ema_decay": 0.9, **train},
        "val": {"val_freq": 3},
        "logger": {"print_freq": 2, "save_checkpoint_freq": 2, "keep_last": 2, "use_tb_logger": False,
                   "progress_bar": False},
        "path": {"experiments_root": str(root)},
    }
    return validate(opt, "train")


def record_losses(trainer: Trainer) -> list[float]:
    """The total loss of every step ``trainer`` takes from now on (appended as it trains)."""
    losses, step = [], trainer._step

    def record(batch):
        out = step(batch)
        losses.append(float(out["l_total"].detach()))
        return out

    trainer._step = record
    return losses


def test_resumed_run_ends_bitwise_identical(tmp_path):
    straight = Trainer(tiny_options(tmp_path / "a"))
    straight.train()

    first = Trainer(tiny_options(tmp_path / "b"))
    first.train(stop_at=3)  # "crash" after iteration 3 (a checkpoint exists at 2)
    assert [it for it, _ in iteration_checkpoints(first.ckpt_dir)][-1] == 3  # best-improved save at 3
    resumed = Trainer(tiny_options(tmp_path / "b"), auto_resume=True)
    assert resumed.iteration == 3
    resumed.train()

    for key, value in straight.net.state_dict().items():
        assert torch.equal(value, resumed.net.state_dict()[key]), key
    for key, value in straight.ema.state_dict().items():
        assert torch.equal(value, resumed.ema.state_dict()[key]), key
    assert straight.scheduler.get_last_lr() == resumed.scheduler.get_last_lr()


def test_checkpoint_holds_everything_and_keeps_last_n_plus_best(tmp_path):
    trainer = Trainer(tiny_options(tmp_path))
    trainer.train()
    kept = [it for it, _ in iteration_checkpoints(trainer.ckpt_dir)]
    assert kept == [4, 6]
    assert (trainer.ckpt_dir / "best.pth").exists()
    ckpt = load_checkpoint(trainer.ckpt_dir / "iter_00000006.pth")
    for key in ("network", "network_ema", "optimizer", "scheduler", "scaler", "rng", "iteration", "best", "opt"):
        assert key in ckpt, key
    assert set(ckpt["rng"][0]) >= {"python", "numpy", "torch"}
    assert ckpt["iteration"] == 6 and ckpt["opt"]["network"]["type"] == "DnCNN"
    assert not list(trainer.ckpt_dir.glob(".*tmp*"))  # atomic writes leave no temp files
    saved = yaml.safe_load((trainer.exp_dir / "options.yml").read_text())
    assert saved["train"]["total_iter"] == 6
    assert "git_commit" in yaml.safe_load((trainer.exp_dir / "run.yml").read_text())


def test_non_finite_loss_stops_naming_iteration_and_keeps_checkpoint(tmp_path):
    trainer = Trainer(tiny_options(tmp_path))
    trainer.train(stop_at=2)
    good = trainer.ckpt_dir / "iter_00000002.pth"
    before = good.read_bytes()
    with torch.no_grad():
        next(trainer.net.parameters()).fill_(float("nan"))
    with pytest.raises(TrainingError, match="iteration 3"):
        trainer.train()
    assert good.read_bytes() == before


def test_loss_rise_watch_warns_once_on_a_loss_that_stays_up():
    falling = LossRiseWatch(patience=3)
    assert not any(falling.update(i, 0.1 / i + 0.02 * (i % 2)) for i in range(1, 40))   # noisy but falling
    spike = LossRiseWatch(patience=3)
    assert not any(spike.update(i, v) for i, v in enumerate([0.1, 0.09, 0.3, 0.3, 0.08, 0.3, 0.3, 0.09]))
    rising = LossRiseWatch(patience=3)
    messages = [rising.update(i, v) for i, v in enumerate([0.07, 0.06, 0.1, 0.14, 0.14, 0.14, 0.15, 0.14], 1)]
    assert messages[:4] == [None] * 4 and messages[5:] == [None] * 3    # once, at the third window above 0.09
    assert "from 0.06 (mean to iteration 2) to 0.14 (mean to iteration 5)" in messages[4]
    assert "'train.lr'" in messages[4] and rising.message == messages[4]


def test_trainer_warns_when_the_loss_rises_and_not_for_schemes_whose_loss_rises_by_design(tmp_path, caplog):
    opt = tiny_options(tmp_path / "a", total_iter=8)
    opt["logger"]["print_freq"] = 1
    trainer = Trainer(opt)
    trainer.loss_watch = LossRiseWatch(patience=2, min_steps=1)
    method = trainer.model
    trainer.model = lambda batch: {k: v * (1 + trainer.iteration) for k, v in method(batch).items()}   # rises
    with caplog.at_level(logging.WARNING, logger="amcfd"):
        trainer.train()
    assert sum("training loss has risen" in r.message for r in caplog.records) == 1

    opt = tiny_options(tmp_path / "b")
    opt["method"] = {"type": "DistillFine", "refresh_every": 2}
    assert Trainer(opt).loss_watch is None


def test_existing_experiment_folder_is_archived_not_overwritten(tmp_path):
    Trainer(tiny_options(tmp_path)).train(stop_at=2)
    Trainer(tiny_options(tmp_path))
    archived = [p for p in tmp_path.iterdir() if p.name.startswith("tiny_archived_")]
    assert len(archived) == 1 and (archived[0] / "models" / "iter_00000002.pth").exists()


def test_lr_schedules():
    t = {"total_iter": 100, "lr": 1.0, "eta_min": 0.0, "warmup_iter": 10, "scheduler": "cosine",
         "milestones": [50, 80], "gamma": 0.5}
    assert lr_factor(0, t) == pytest.approx(0.1)
    assert lr_factor(10, t) == pytest.approx(1.0)
    assert lr_factor(55, t) == pytest.approx(0.5)
    assert lr_factor(100, t) == pytest.approx(0.0, abs=1e-12)
    t["scheduler"] = "multistep"
    assert [lr_factor(i, t) for i in (20, 50, 80)] == [1.0, 0.5, 0.25]


def test_tiled_inference_matches_whole_image_for_pointwise_fn():
    x = torch.rand(1, 3, 70, 53)
    fn = lambda t: t * 2 + 1  # noqa: E731 - position-independent: tiles must blend back exactly
    assert torch.allclose(tiled_denoise(fn, x, tile=32, overlap=8), fn(x), atol=1e-6)
    seen = []
    tiled_denoise(lambda t: seen.append(t.shape) or t, x, tile=32, overlap=8)
    assert all(s[-2] <= 32 and s[-1] <= 32 for s in seen) and len(seen) > 1


DDP_WORKER = """
import os, sys, torch, yaml
sys.path.insert(0, {repo!r})
from amcfd.engine import dist
from amcfd.engine.trainer import Trainer
from amcfd.options import validate
opt = validate(yaml.safe_load(open({opt!r})), "train")
trainer = Trainer(opt, launcher="pytorch")
trainer.train()
torch.save(trainer.net.state_dict(), os.path.join({out!r}, f"rank{{os.environ['RANK']}}.pt"))
dist.cleanup()  # as train.py does: a process group left to interpreter exit can abort in gloo's threads
"""


@pytest.mark.slow
def test_two_process_gloo_ddp_ends_with_identical_weights(tmp_path):
    opt = tiny_options(tmp_path / "exp")
    opt["val"]["val_freq"] = 0
    (tmp_path / "opt.yml").write_text(yaml.safe_dump(opt))
    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER.format(repo=str(REPO), opt=str(tmp_path / "opt.yml"), out=str(tmp_path)))
    # torchrun --standalone: the launcher users run; it picks a free rendezvous port itself
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(script)], env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    w0, w1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    init = Trainer(copy.deepcopy(tiny_options(tmp_path / "fresh"))).net.state_dict()
    assert any(not torch.equal(init[k], w0[k]) for k in w0)  # it did train
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key


def test_max_minutes_shortens_the_run_to_the_budget(tmp_path):
    opt = tiny_options(tmp_path, total_iter=100000, max_minutes=0.02, warmup_iter=0)
    opt["val"]["val_freq"] = 0
    opt["logger"]["save_checkpoint_freq"] = 100000
    trainer = Trainer(opt)
    trainer.train()
    total = trainer.opt["train"]["total_iter"]
    assert 20 <= trainer.iteration == total < 100000                 # fitted after the probe steps
    assert [it for it, _ in iteration_checkpoints(trainer.ckpt_dir)] == [total]
    assert load_checkpoint(trainer.ckpt_dir / f"iter_{total:08d}.pth")["opt"]["train"]["total_iter"] == total
    assert lr_factor(total, trainer.opt["train"]) == pytest.approx(trainer.opt["train"]["eta_min"] / 1e-3)


def test_a_resumed_budgeted_run_keeps_the_time_spent_before(tmp_path):
    """train.max_minutes is a limit across interruptions: the checkpoint keeps the seconds spent, and a run
    resumed with its budget used up trains only the budget probe's steps, not a new budget."""
    import time

    opt = tiny_options(tmp_path, total_iter=100000, max_minutes=0.02, warmup_iter=0, fill_budget=True)
    opt["val"]["val_freq"] = 0
    opt["logger"]["save_checkpoint_freq"] = 20
    first = Trainer(opt)
    first.train(stop_at=20)                                   # interrupted at the budget probe
    path = first.ckpt_dir / "iter_00000020.pth"
    ckpt = torch.load(path, weights_only=False)
    assert 0 < ckpt["spent_seconds"] < 60
    ckpt["spent_seconds"] = 0.02 * 60                         # as if the whole budget was spent before
    torch.save(ckpt, path)
    start = time.perf_counter()
    resumed = Trainer(tiny_options(tmp_path, total_iter=100000, max_minutes=0.02, warmup_iter=0,
                                   fill_budget=True), auto_resume=True)
    resumed.train()
    assert resumed.iteration == 20 + 20 and time.perf_counter() - start < 0.02 * 60 * 3   # the probe only
    assert resumed.spent_seconds() > 0.02 * 60


def test_network_that_does_not_take_the_images_channels_fails_before_the_folder(tmp_path):
    from amcfd.registry import ConfigError

    opt = tiny_options(tmp_path)
    opt["network"].update(in_nc=1, out_nc=1)                     # a gray network on RGB data
    with pytest.raises(ConfigError) as err:
        Trainer(opt)
    message = str(err.value)
    assert "\n" not in message and "'network'" in message and "network.in_nc" in message
    assert "takes 1-channel images but datasets.train gives 3-channel images" in message
    assert not (tmp_path / "tiny").exists()                      # nothing made (or archived)

    import cv2
    import numpy as np

    gray = tmp_path / "gray"
    gray.mkdir()
    for i in range(2):
        cv2.imwrite(str(gray / f"{i}.png"), np.random.default_rng(i).integers(0, 255, (32, 32), dtype=np.uint8))
    opt = tiny_options(tmp_path)                                 # an RGB network on gray data
    opt["datasets"]["train"] = {"type": "NoisyFolder", "root": str(gray), "channels": 1, "crop_size": 24,
                                "batch_size": 2, "num_workers": 0}
    with pytest.raises(ConfigError, match="takes 3-channel images but datasets.train gives 1-channel"):
        Trainer(opt)
    assert not (tmp_path / "tiny").exists()


def test_validation_masks_come_from_the_seed_and_leave_training_alone(tmp_path):
    runs = {}
    for val_freq in (1, 0):                                      # every step / only at the end
        opt = tiny_options(tmp_path / str(val_freq))
        opt["val"]["val_freq"] = val_freq
        runs[val_freq] = Trainer(opt)
        runs[val_freq].train()
    for key, value in runs[0].net.state_dict().items():
        assert torch.equal(value, runs[1].net.state_dict()[key]), key
    for key, value in runs[0].ema.state_dict().items():
        assert torch.equal(value, runs[1].ema.state_dict()[key]), key

    trainer, seen = runs[0], []
    trainer.logger.validation = lambda it, results, metrics: seen.append(results["val"])
    torch.manual_seed(123)                                       # whatever the global RNG holds
    trainer.validate()
    torch.rand(5)
    trainer.validate()
    assert seen[0]["psnr"] == seen[1]["psnr"] and seen[0]["ssim"] == seen[1]["ssim"]
    assert seen[0]["per_image"] == seen[1]["per_image"]
