"""The training engine: iteration loop, DDP, AMP, EMA, checkpoints, resume, logging, validation."""
from __future__ import annotations

import contextlib
import logging
import math
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from amcfd.archs import build_arch, input_channels, input_channels_option
from amcfd.data.loader import SeededSamples, train_loader
from amcfd.engine import dist
from amcfd.engine.checkpoint import (
    FORMAT,
    atomic_save,
    latest_checkpoint,
    latest_readable_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    rng_state,
    set_rng_state,
)
from amcfd.engine.ema import EMA
from amcfd.engine.inference import (
    build_dataset,
    build_method,
    evaluate,
    format_table,
    load_network_weights,
    seeded,
    select_device,
    tiled_denoise,
)
from amcfd.engine.logger import ExperimentLogger
from amcfd.engine.memory import keep_freed_memory, stop_keeping_freed_memory
from amcfd.engine.precision import amp_dtype
from amcfd.noise.auto import auto_summary, resolve_auto
from amcfd.options import save_options
from amcfd.registry import ConfigError

log = logging.getLogger("amcfd")


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message names the iteration."""


BUDGET_PROBE_STEPS = 20   # train.max_minutes: steps timed before total_iter is fitted to the budget
LOW_BUDGET_SHARE = 0.1    # a budget that fits less than this share of total_iter is warned about


class LossRiseWatch:
    """Notices a training loss that rises and stays up without ever becoming non-finite (e.g. AT-BSN at a
    learning rate of 5e-3: its L1 went from 0.07 to 0.14 and stayed there).

    Fed the mean total loss over windows of at least ``min_steps`` iterations; returns a message once (and keeps
    it in ``message``), when ``patience`` windows in a row are above ``factor`` times the lowest window mean so far.
    """

    def __init__(self, factor: float = 1.5, patience: int = 3, min_steps: int = 50):
        self.factor, self.patience, self.min_steps = factor, patience, min_steps
        self.lowest, self.lowest_at, self.above, self.message = math.inf, 0, 0, None

    def update(self, iteration: int, mean: float) -> str | None:
        if mean < self.lowest:
            self.lowest, self.lowest_at, self.above = mean, iteration, 0
            return None
        self.above = self.above + 1 if mean > self.factor * self.lowest else 0
        if self.above < self.patience or self.message:
            return None
        self.message = (f"the training loss has risen from {self.lowest:.4g} (mean to iteration {self.lowest_at}) "
                        f"to {mean:.4g} (mean to iteration {iteration}) and stayed up: the learning rate may be "
                        "too high for this method (option 'train.lr')")
        return self.message


def lr_factor(it: int, t: dict) -> float:
    """Learning-rate multiplier at iteration ``it``: linear warm-up, then cosine / multistep."""
    warm = t["warmup_iter"]
    if warm > 0 and it < warm:
        return (it + 1) / warm
    if t["scheduler"] == "cosine":
        span = max(1, t["total_iter"] - warm)
        progress = min(1.0, (it - warm) / span)
        floor = t["eta_min"] / t["lr"]
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    if t["scheduler"] == "multistep":
        return t["gamma"] ** sum(it >= m for m in t["milestones"])
    return 1.0


def fit_schedule(t: dict, total: int, milestone_fractions: list | None = None) -> None:
    """The train section ``t`` fitted to ``total`` iterations: cosine ends there, multistep milestones keep their
    ``milestone_fractions`` of it (default: their fractions of the current ``total_iter``), warm-up is kept within
    its first tenth."""
    if milestone_fractions is None:
        milestone_fractions = [m / t["total_iter"] for m in t["milestones"]]
    t["total_iter"] = total                  # lr_factor reads it: the schedule ends at the new total
    if t["milestones"]:
        t["milestones"] = [max(1, round(f * total)) for f in milestone_fractions]
    t["warmup_iter"] = min(t["warmup_iter"], total // 10)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def archive_folder(folder: Path) -> Path:
    """Rename an existing experiment folder to <name>_archived_<timestamp> (never overwrite)."""
    target = folder.with_name(f"{folder.name}_archived_{time.strftime('%Y%m%d_%H%M%S')}")
    n = 1
    while target.exists():
        target = target.with_name(f"{folder.name}_archived_{time.strftime('%Y%m%d_%H%M%S')}_{n}")
        n += 1
    shutil.move(str(folder), str(target))
    return target


def check_input_channels(net: torch.nn.Module, arch_type: str, seed: int, datasets: dict) -> None:
    """One-line ConfigError when the first item of a dataset ({option name: dataset}) has other channels
    than ``net`` takes (first conv), instead of a traceback from inside the network. The item is read with
    its own seed; the caller's RNG states are left as they were."""
    wanted = input_channels(net)
    for where, dataset in datasets.items():
        if len(dataset) == 0:
            continue
        item = SeededSamples(dataset)[(0, seed)]
        channels = item["noisy"].shape[-3]
        if channels != wanted:
            option = input_channels_option(arch_type)
            hint = f" (network.{option})" if option else ""
            raise ConfigError(f"option 'network': {arch_type} takes {wanted}-channel images but {where} gives "
                              f"{channels}-channel images; set the network's input and output channels{hint} "
                              f"to {channels}")


class Trainer:
    """Builds everything from a validated option dict and runs ``train()``."""

    def __init__(self, opt: dict, launcher: str = "none", auto_resume: bool = False):
        self.started = time.perf_counter()     # train.max_minutes counts from here (setup and target caches too)
        self.spent_before = 0.0                # seconds a resumed run had already spent (kept in its checkpoints)
        self.opt = opt
        self.rank, self.world, device = dist.init_distributed(launcher, opt["dist"]["backend"])
        self.device = device or select_device(opt["device"])
        self.exp_dir = Path(opt["path"]["experiments_root"]) / opt["name"]
        self.ckpt_dir = self.exp_dir / "models"
        if not dist.is_main():
            log.setLevel(logging.WARNING)  # one copy of every log line: rank 0's
        # data and network first: options they refuse fail before the experiment folder is made or archived
        self.train_set, self.train_loader_opts = build_dataset(opt["datasets"]["train"], "datasets.train")
        self.val_sets = {k: build_dataset(v, f"datasets.{k}") for k, v in opt["datasets"].items()
                         if k.startswith("val")}
        seed_everything(opt["seed"])  # same init on every rank (DDP also broadcasts it)
        self.net = build_arch(opt["network"])
        check_input_channels(self.net, opt["network"]["type"], opt["seed"], {
            "datasets.train": self.train_set, **{f"datasets.{k}": ds for k, (ds, _) in self.val_sets.items()}})
        resume_from = self._prepare_folder(auto_resume)
        opt, self.auto_choices = resolve_auto(opt, self.train_set)   # 'auto' options, from the noisy images
        self.opt = opt
        self.logger = ExperimentLogger(self.exp_dir, opt, enabled=dist.is_main())
        if dist.is_main():
            save_options(opt, self.exp_dir, {"auto": self.auto_choices} if self.auto_choices else None)
        if self.auto_choices:
            log.info(auto_summary(self.auto_choices))

        t = opt["train"]
        if t["warmup_iter"] >= t["total_iter"] and not t["max_minutes"]:
            log.warning("train.warmup_iter %d >= train.total_iter %d: the learning rate never leaves warm-up",
                        t["warmup_iter"], t["total_iter"])
        if opt["path"]["pretrain_network"]:
            which = load_network_weights(self.net, load_checkpoint(opt["path"]["pretrain_network"]),
                                         strict=opt["path"]["strict_load"], use_ema=False,
                                         source=opt["path"]["pretrain_network"])
            log.info("initialised %s from %s", which, opt["path"]["pretrain_network"])
        self.method = build_method(opt, self.net).to(self.device)
        if resume_from[0] is None:
            self.method.on_train_start()       # e.g. a student initialised from its teacher (before the EMA copy)
        self.model = self.method
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.method, device_ids=ids)
        params = [p for p in self.net.parameters() if p.requires_grad]
        optim_cls = {"Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}[t["optim"]]
        self.optimizer = optim_cls(params, lr=t["lr"], betas=tuple(t["betas"]), weight_decay=t["weight_decay"])
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda it: lr_factor(it, t))
        self.amp_dtype = amp_dtype(t["amp"], self.device, "train.amp")
        self.keeps_freed_memory = self.device.type == "cpu" and t["reuse_cpu_memory"] and keep_freed_memory()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)
        self.ema = EMA(self.net, t["ema_decay"]) if t["ema_decay"] > 0 else None
        self.iteration, self.best, self.noisy_baseline = 0, None, None
        self.first_step_done = None            # perf_counter() when the first step of train() ended
        self._first_bad, self._bad_losses, self.timing = None, {}, {}   # _step / _check_finite; _log_timing
        self.loss_watch = LossRiseWatch() if self.method.loss_should_fall else None
        self._loss_sum, self._loss_steps = None, 0                        # the window LossRiseWatch is fed
        if resume_from[0] is not None:
            self._resume(*resume_from)  # restores every rank's RNG states
        else:
            seed_everything(opt["seed"] + self.rank)  # per-rank masks and noise draws
        self.milestone_fractions = [m / t["total_iter"] for m in t["milestones"]]   # kept by a fitted schedule
        if t["max_minutes"] and t["fill_budget"]:       # run until the budget probe, which sets total_iter
            t["total_iter"] = max(t["total_iter"], self.iteration + BUDGET_PROBE_STEPS)

        self.train_set = self._with_teacher_targets(self.train_set)

    # ------------------------------------------------------------------ setup helpers
    def _prepare_folder(self, auto_resume: bool) -> tuple:
        """(path, contents) of the checkpoint to resume from (--auto_resume; (None, None) if none), read once; or
        archive an existing folder."""
        if dist.is_main() and self.exp_dir.exists() and not auto_resume:
            archived = archive_folder(self.exp_dir)
            print(f"experiment folder existed: archived to {archived}")
        dist.barrier()
        resume = latest_readable_checkpoint(self.ckpt_dir) if auto_resume else (None, None)
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        return resume

    def _with_teacher_targets(self, dataset):
        """Distillation: the method's frozen teacher is loaded now (a bad checkpoint fails before training);
        cached targets are computed once per training image (engine/teacher.py) and delivered in the batches."""
        targets = self.method.teacher_targets
        if targets is None or not targets.cached:
            return dataset
        from amcfd.engine.teacher import TeacherTargetCache, teacher_cache_folder

        folder = teacher_cache_folder(targets, self.opt["path"]["experiments_root"])
        return TeacherTargetCache(dataset, targets, folder, self.device,
                                  progress=dist.is_main() and self.opt["logger"]["progress_bar"])

    def _resume(self, path: Path, ckpt: dict) -> None:
        """Continue from ``ckpt``, the contents of ``path`` (read once, by _prepare_folder)."""
        self.net.load_state_dict(ckpt["network"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt.get("network_ema") is not None:
            self.ema.load_state_dict(ckpt["network_ema"])
        self.method.load_checkpoint_state(ckpt.get("method_state") or {})
        self.iteration, self.best = ckpt["iteration"], ckpt.get("best")
        self.spent_before = float(ckpt.get("spent_seconds", 0.0))
        set_rng_state(ckpt["rng"][min(self.rank, len(ckpt["rng"]) - 1)])
        log.info("resumed from %s at iteration %d", path, self.iteration)

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint(self, is_best: bool) -> None:
        """Gather every rank's RNG state, then rank 0 writes atomically; barriers around. Never after a
        non-finite loss (TrainingError instead)."""
        self._check_finite()
        states = [None] * self.world
        if self.world > 1:
            torch.distributed.all_gather_object(states, rng_state())
        else:
            states = [rng_state()]
        dist.barrier()
        if dist.is_main():
            ckpt = {
                "format": FORMAT, "iteration": self.iteration, "best": self.best, "opt": self.opt,
                "network": self.net.state_dict(),
                "network_ema": self.ema.state_dict() if self.ema else None,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": states,
                "method_state": self.method.checkpoint_state(),
                "spent_seconds": self.spent_seconds(),
            }
            atomic_save(ckpt, self.ckpt_dir / f"iter_{self.iteration:08d}.pth")
            if is_best:
                atomic_save(ckpt, self.ckpt_dir / "best.pth")
            prune_checkpoints(self.ckpt_dir, self.opt["logger"]["keep_last"])
        dist.barrier()

    def spent_seconds(self) -> float:
        """Wall-clock seconds this run has spent, before an interruption included (train.max_minutes counts it)."""
        return self.spent_before + time.perf_counter() - self.started

    def _fit_budget(self, per_step: float, again: bool = False) -> int:
        """train.max_minutes: at ``per_step`` seconds per step, the last iteration that ends within the budget;
        total_iter is lowered to it (the schedule follows: cosine ends there, multistep milestones keep their
        fractions of total_iter), or also raised with ``fill_budget``. ``again``: a later check (at every log
        step, from the recent steps' speed), which only lowers it, so a run that slows down (a busy machine)
        still ends within its budget. A resumed run fits what is left of the budget (the time spent before the
        interruption is kept). Warm-up is kept within the first tenth of a changed schedule. Same value on all
        ranks."""
        t = self.opt["train"]
        left = t["max_minutes"] * 60 - self.spent_seconds()
        fit = torch.tensor([max(self.iteration, self.iteration + int(left / per_step))], dtype=torch.long)
        if self.world > 1:
            fit = fit.to(self.device)
            torch.distributed.all_reduce(fit, op=torch.distributed.ReduceOp.MIN)
        fit = int(fit.item())
        nominal = t["total_iter"]
        if fit < nominal or (t["fill_budget"] and fit != nominal and not again):
            log.info("train.max_minutes %g: %.3f s per step%s, total_iter %d -> %d", t["max_minutes"], per_step,
                     " lately" if again else "", nominal, fit)
            warmup = t["warmup_iter"]
            fit_schedule(t, fit, self.milestone_fractions)
            if t["warmup_iter"] != warmup:
                log.info("warm-up %d -> %d steps (a tenth of the fitted schedule)", warmup, t["warmup_iter"])
            self.logger.set_total(fit)
        if fit < LOW_BUDGET_SHARE * nominal and not again:
            log.warning("train.max_minutes %g fits only %d of the %d steps of option 'train.total_iter' "
                        "(%.3f s per step): expect a poorly trained model; raise the budget", t["max_minutes"], fit,
                        nominal, per_step)
        return t["total_iter"]

    # ------------------------------------------------------------------ validation
    def validate(self) -> bool:
        """Validate every val set; returns True when the tracked metric improved.

        Each image's masks are drawn from option ``seed``, as in valid.py (``inference.seeded``), so every
        validation of the same weights gives the same numbers and best.pth is chosen on comparable ones;
        the RNG states are restored afterwards, so training draws the same whatever ``val.val_freq`` is."""
        if not self.val_sets:
            return False
        v, seed = self.opt["val"], self.opt["seed"]

        def fn(x: torch.Tensor) -> torch.Tensor:
            with seeded(seed, self.device):
                return tiled_denoise(self.method.denoise, x, v["tile"], v["tile_overlap"])

        training_rng = rng_state()              # loaders and masks below draw from the global RNGs
        self.method.eval()
        try:
            with self.ema.swapped_into(self.net) if self.ema else contextlib.nullcontext():
                results = {name: evaluate(fn, dataset, loader_opts, v["metrics"], self.device,
                                          visuals=v["num_visuals"])
                           for name, (dataset, loader_opts) in self.val_sets.items()}
            if self.noisy_baseline is None:  # the noisy input's own scores, for reference
                self.noisy_baseline = {
                    f"{name} (noisy input)": evaluate(lambda x: x, ds, lo, v["metrics"], self.device)
                    for name, (ds, lo) in self.val_sets.items()}
        finally:
            self.method.train()
            set_rng_state(training_rng)
        self.logger.validation(self.iteration, results, v["metrics"])
        table = format_table({**self.noisy_baseline, **results}, v["metrics"])
        log.info("validation at iteration %d\n%s", self.iteration, table)
        tracked = results[next(iter(results))][v["metrics"][0]] if v["metrics"] else None
        if tracked is None:
            return False
        improved = self.best is None or (tracked > self.best if v["better"] == "higher" else tracked < self.best)
        if improved:
            self.best = tracked
        return improved

    # ------------------------------------------------------------------ the loop
    def _sync_buffers(self) -> None:
        """Give every rank rank 0's buffers (BatchNorm statistics drift apart after the last forward)."""
        if self.world > 1:
            for buf in self.net.buffers():
                torch.distributed.broadcast(buf, 0)

    def _step(self, batch: dict) -> dict:
        batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            losses = self.model(batch)
        total = sum(losses.values())
        # the first non-finite iteration, kept on the device: no host synchronisation per step
        # (checked at log steps, before every checkpoint and at the end: _check_finite)
        bad = ~torch.isfinite(total.detach())
        if self._first_bad is None:
            self._first_bad = torch.zeros((), dtype=torch.long, device=total.device)
            self._bad_losses = {k: torch.zeros((), device=total.device) for k in losses}
        first = bad & (self._first_bad == 0)
        self._first_bad = torch.where(first, self.iteration + 1, self._first_bad)
        for k, v in losses.items():
            self._bad_losses[k] = torch.where(first, v.detach().float(), self._bad_losses[k])
        if self.loss_watch is not None:
            self._loss_sum = total.detach().float() + (0 if self._loss_sum is None else self._loss_sum)
            self._loss_steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.opt["train"]["grad_clip"] > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.opt["train"]["grad_clip"])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self._sync_buffers()
        if self.ema is not None:
            self.ema.update(self.net)
        return {**losses, "l_total": total}

    def _check_finite(self) -> None:
        """Raise TrainingError if a loss was non-finite since the run started (one host synchronisation)."""
        if self._first_bad is None:
            return
        first = self._first_bad.reshape(1).clone()
        if self.world > 1:
            torch.distributed.all_reduce(first, op=torch.distributed.ReduceOp.MAX)
        if int(first.item()) > 0:
            values = ", ".join(f"{k}={float(v):.4g}" for k, v in self._bad_losses.items())
            last = latest_checkpoint(self.ckpt_dir)
            raise TrainingError(f"non-finite loss at iteration {int(first.item())} ({values}); stopped. "
                                f"Last good checkpoint: {last or 'none yet'}")

    def _watch_loss(self) -> None:
        """At a log step (after _check_finite): feed LossRiseWatch once its window has enough steps."""
        if self.loss_watch is None or self._loss_steps < self.loss_watch.min_steps:
            return
        mean = dist.reduce_mean_dict({"l": self._loss_sum})["l"] / self._loss_steps
        self._loss_sum, self._loss_steps = None, 0
        message = self.loss_watch.update(self.iteration, mean)
        if message and dist.is_main():
            log.warning(message)

    def _log_timing(self, steps: int, seconds: float, wait: float) -> None:
        """Wall time per step and the share spent waiting for the data loader (since the last log step)."""
        if steps and seconds > 0:
            self.timing = {"ms_per_step": 1000 * seconds / steps, "data_wait_fraction": wait / seconds}
            log.info("timing: %.1f ms per step, data wait %.1f%% (%.1f ms per step)", 1000 * seconds / steps,
                     100 * wait / seconds, 1000 * wait / steps)

    def train(self, stop_at: int | None = None) -> dict:
        """Run until ``train.total_iter`` (or ``stop_at``, used by tests to simulate a crash); CPU memory kept
        for reuse between steps (``train.reuse_cpu_memory``) is given back when it returns or fails."""
        try:
            return self._train(stop_at)
        finally:
            if self.keeps_freed_memory:
                stop_keeping_freed_memory()
                self.keeps_freed_memory = False

    def _train(self, stop_at: int | None) -> dict:
        t, lg = self.opt["train"], self.opt["logger"]
        total = t["total_iter"]
        end = min(total, stop_at) if stop_at else total
        loader = train_loader(self.train_set, self.train_loader_opts, self.opt["seed"], self.rank, self.world,
                              self.iteration, pin_memory=self.device.type == "cuda")
        self.method.train()
        self.logger.start(self.iteration, total, dist.is_main() and lg["progress_bar"])
        val_freq = self.opt["val"]["val_freq"]
        last_losses: dict = {}
        batches = iter(loader)
        first, first_time = self.iteration, time.perf_counter()
        window_start, window_steps, window_wait = first_time, 0, 0.0     # the timing breakdown
        while self.iteration < end:
            fetch = time.perf_counter()
            batch = next(batches)
            window_wait += time.perf_counter() - fetch
            losses = self._step(batch)
            self.iteration += 1
            if self.first_step_done is None:
                self.first_step_done = time.perf_counter()
            window_steps += 1
            if t["max_minutes"] and self.iteration - first == BUDGET_PROBE_STEPS:
                total = self._fit_budget((time.perf_counter() - first_time) / BUDGET_PROBE_STEPS)
                end = min(total, stop_at) if stop_at else total
            self.method.on_train_iter(self.iteration)
            if self.iteration % lg["print_freq"] == 0 or self.iteration == end:
                self._check_finite()
                self._watch_loss()
                last_losses = dist.reduce_mean_dict(losses)
                self.logger.scalars(self.iteration, last_losses, self.scheduler.get_last_lr()[0])
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                now = time.perf_counter()
                self._log_timing(window_steps, now - window_start, window_wait)
                if t["max_minutes"] and self.iteration - first > BUDGET_PROBE_STEPS and self.iteration < end:
                    total = self._fit_budget((now - window_start) / window_steps, again=True)
                    end = min(total, stop_at) if stop_at else total
                window_start, window_steps, window_wait = now, 0, 0.0
            self.logger.tick(self.iteration, last_losses)
            at_end = self.iteration == total
            improved = False
            if (val_freq > 0 and self.iteration % val_freq == 0) or at_end:
                improved = self.validate()
            if self.iteration % lg["save_checkpoint_freq"] == 0 or at_end or improved:
                self._checkpoint(is_best=improved)
        self.logger.close()
        return last_losses
