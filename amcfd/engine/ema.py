"""Exponential moving average of a network's weights (parameters and buffers)."""
from __future__ import annotations

import contextlib

import torch
from torch import nn


class EMA:
    """ema <- decay * ema + (1 - decay) * w for float tensors; other buffers are copied."""

    def __init__(self, net: nn.Module, decay: float):
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in net.state_dict().items()}

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        for key, value in net.state_dict().items():
            ema = self.state[key]
            if ema.is_floating_point():
                ema.lerp_(value.detach(), 1.0 - self.decay)
            else:
                ema.copy_(value)

    def state_dict(self) -> dict:
        return self.state

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            self.state[key].copy_(value)

    @contextlib.contextmanager
    def swapped_into(self, net: nn.Module):
        """Temporarily load the EMA weights into ``net`` (for validation); restore afterwards."""
        backup = {k: v.detach().clone() for k, v in net.state_dict().items()}
        net.load_state_dict(self.state)
        try:
            yield net
        finally:
            net.load_state_dict(backup)
