"""Experiment logging: plain log file, tqdm progress bar, TensorBoard scalars and image triplets."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from amcfd import progress

log = logging.getLogger("amcfd")


class TqdmHandler(logging.StreamHandler):
    """Console log lines that do not break the progress bar."""

    def emit(self, record):
        tqdm.write(self.format(record), file=sys.stderr)


def setup_console_logging(level=logging.INFO) -> None:
    if not any(isinstance(h, TqdmHandler) for h in log.handlers):
        handler = TqdmHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


def image_triplet(noisy: torch.Tensor, denoised: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """noisy | denoised | clean side by side (C, H, 3W), separated by 4 white columns."""
    gap = torch.ones(noisy.shape[0], noisy.shape[1], 4)
    return torch.cat([noisy, gap, denoised, gap, clean], dim=2).clamp(0, 1)


class ExperimentLogger:
    """Writes only on rank 0 (``enabled``)."""

    def __init__(self, exp_dir: Path, opt: dict, enabled: bool = True):
        self.enabled = enabled
        self.name = opt.get("name") or "train"      # the progress bar's label
        self.bar = None
        self.tb = None
        self._file_handler = None
        if not enabled:
            return
        setup_console_logging()
        self._file_handler = logging.FileHandler(exp_dir / "train.log")
        self._file_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(self._file_handler)
        if opt["logger"]["use_tb_logger"]:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(log_dir=str(exp_dir / "tb"))
            except ImportError as exc:  # pragma: no cover - tensorboard is a dependency
                log.warning("TensorBoard disabled: %s", exc)

    def start(self, iteration: int, total: int, progress_bar: bool) -> None:
        if self.enabled and progress_bar:
            self.bar = progress.progress_bar(total=total, initial=iteration, desc=self.name)

    def set_total(self, total: int) -> None:
        """The run's end moved (train.max_minutes)."""
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def tick(self, iteration: int, losses: dict) -> None:
        if self.bar is not None:
            self.bar.update(iteration - self.bar.n)
            if losses:
                self.bar.set_postfix(loss=f"{losses.get('l_total', 0.0):.4g}", refresh=False)

    def scalars(self, iteration: int, losses: dict, lr: float) -> None:
        if not self.enabled:
            return
        text = " ".join(f"{k}: {v:.4e}" for k, v in losses.items())
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{losses.get('l_total', 0.0):.4g}", lr=f"{lr:.2e}", refresh=False)
        log.info("iter %d lr %.3e %s", iteration, lr, text)
        if self.tb is not None:
            for k, v in losses.items():
                self.tb.add_scalar(f"losses/{k}", v, iteration)
            self.tb.add_scalar("lr", lr, iteration)

    def validation(self, iteration: int, results: dict, metrics: list[str]) -> None:
        if not self.enabled or self.tb is None:
            return
        for name, r in results.items():
            for m in metrics:
                self.tb.add_scalar(f"val_{name}/{m}", r[m], iteration)
            for i, triplet in enumerate(r.get("visuals", [])):
                self.tb.add_image(f"val_{name}/{i}_noisy_denoised_clean", image_triplet(*triplet), iteration)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.tb is not None:
            self.tb.flush()
        if self._file_handler is not None:
            log.removeHandler(self._file_handler)
            self._file_handler.close()
            self._file_handler = None
