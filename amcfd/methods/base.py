"""The contract between a method (training scheme) and the engine."""
from __future__ import annotations

import torch
from torch import nn


class Method(nn.Module):
    """A self-supervised scheme wrapped around one trainable network ``self.net``.

    A method takes a network, never subclasses it, and owns no loop and no file I/O.

    * ``forward(batch) -> dict[str, Tensor]``: named loss terms (``l_*``); the engine sums
      them and backpropagates. ``batch['noisy']`` is (B, C, H, W) float in [0, 1];
      ``batch['clean']`` may be present for validation sets but training never reads it.
    * ``denoise(noisy) -> Tensor``: the full inference pipeline on whole images, same shape
      as the input; called under ``torch.no_grad()`` in eval mode.
    * ``on_train_iter(iteration)``: optional per-iteration hook (e.g. teacher refresh).

    Checkpoints store ``self.net`` only; frozen helpers (teachers) are rebuilt from options.
    """

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
