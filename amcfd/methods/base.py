"""The contract between a method (training scheme) and the engine."""
from __future__ import annotations

import torch
from torch import nn

from amcfd.registry import METHODS, ConfigError


class Method(nn.Module):
    """A self-supervised scheme wrapped around one trainable network ``self.net``.

    A method takes a network, never subclasses it, and owns no loop and no file I/O.

    * ``forward(batch) -> dict[str, Tensor]``: named loss terms (``l_*``); the engine sums
      them and backpropagates. ``batch['noisy']`` is (B, C, H, W) float in [0, 1];
      ``batch['clean']`` may be present for validation sets but training never reads it.
    * ``denoise(noisy) -> Tensor``: the full inference pipeline on whole images, same shape
      as the input; called under ``torch.no_grad()`` in eval mode.
    * ``on_train_iter(iteration)``: optional per-iteration hook (e.g. teacher refresh).
    * ``on_train_start()``: called once when a training run starts fresh (not on resume, never in
      valid.py/test.py), after ``path.pretrain_network`` is loaded and before the EMA copy is made: e.g. a
      student initialised from its teacher's weights.
    * ``teacher_targets``: None, or an ``engine.teacher.TeacherTargets`` the engine prepares before
      training (cached teacher outputs per training image, delivered in the batches).
    * ``checkpoint_state()`` / ``load_checkpoint_state(state)``: extra training state saved in (and
      restored from) training checkpoints, e.g. a frozen copy of the student that changes on schedule.

    Checkpoints store ``self.net`` (plus ``checkpoint_state()``); teachers are rebuilt from options.
    """

    teacher_targets = None
    # the engine warns when the training loss stays well above its lowest value (engine.trainer.LossRiseWatch);
    # False for a scheme whose loss rises by design (e.g. targets that are refreshed from the student)
    loss_should_fall = True

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, batch: dict) -> dict:  # pragma: no cover - interface
        raise NotImplementedError

    @torch.no_grad()
    def denoise(self, noisy: torch.Tensor) -> torch.Tensor:
        return self.net(noisy)

    def on_train_iter(self, iteration: int) -> None:
        """Called by the engine after every optimizer step (default: nothing)."""

    def on_train_start(self) -> None:
        """Called by the engine when a training run starts fresh (default: nothing)."""

    def checkpoint_state(self) -> dict:
        """Training state besides ``self.net`` that a resumed run needs (default: none)."""
        return {}

    def load_checkpoint_state(self, state: dict) -> None:
        """Restore what ``checkpoint_state`` returned."""


@METHODS.register()
class SinglePass(Method):
    """A trained single-pass denoiser: ``denoise`` is one forward of ``net`` (no training scheme).

    The method for applying distilled students and imported single-pass weights with test.py and
    valid.py without their teachers (options/test/student.yml).
    """

    def forward(self, batch: dict) -> dict:
        raise ConfigError("method 'SinglePass' only denoises; train a student with DistillCoarse/DistillFine")
