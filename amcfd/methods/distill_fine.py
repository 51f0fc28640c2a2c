"""AM-CFD fine distillation (self-enhanced): the student learns from a frozen copy of itself.

    L_D = w_id * L1(S(I_N), S*(I_N)) + w_aug * L1(S(I_N), A^-1(S*(A(I_N))))

S* starts as the coarse student (``path.pretrain_network``: the coarse checkpoint initialises the
student, and S* is a frozen copy of it) and is overwritten with the current student every
``refresh_every`` iterations ("replacement" in the paper's figure), so the targets improve with the
student. A is drawn per image from ``aug_modes``; the self-ensemble A^-1 S* A brings in the
flip-averaged estimate ("enhancement"). S* is saved in training checkpoints, so a resumed run
continues with the same S*.
"""
from __future__ import annotations

import torch
from torch import nn

from amcfd.losses.distill import NORMS, pixel_loss
from amcfd.methods.base import Method
from amcfd.ops.augment import apply_augmented, random_modes
from amcfd.registry import METHODS, ConfigError


@METHODS.register()
class DistillFine(Method):
    """Self-enhanced fine distillation of the student ``net`` (AM-CFD).

    Options:
      aug_modes: dihedral transforms A of the second target (ops/augment.py modes; [1, 2, 3], the
        rotations of the paper's figure, as in DistillCoarse).
      refresh_every: iterations between two replacements of S* by the student (500; the paper gives no
        value).
      id_weight, aug_weight: weights of the two L1 terms (1, 1).
      norm: 'l1' (the paper) | 'l2' | 'charbonnier'.
    """

    loss_should_fall = False   # S* starts equal to the student after every refresh: the loss restarts near 0

    def __init__(self, net: nn.Module, aug_modes: list = (1, 2, 3), refresh_every: int = 500,
                 id_weight: float = 1.0, aug_weight: float = 1.0, norm: str = "l1"):
        super().__init__(net)
        from amcfd.engine.teacher import check_modes, copy_frozen

        if isinstance(refresh_every, bool) or not isinstance(refresh_every, int) or refresh_every < 1:
            raise ConfigError(f"option 'method.refresh_every' must be an int >= 1, got {refresh_every!r}")
        if norm not in NORMS:
            raise ConfigError(f"option 'method.norm' must be one of {NORMS}, got {norm!r}")
        self.aug_modes = check_modes(list(aug_modes), "method.aug_modes")
        self.refresh_every, self.id_weight, self.aug_weight, self.norm = refresh_every, id_weight, aug_weight, norm
        self.frozen_student = copy_frozen(net)          # S*: a submodule (follows .to(device)), never trained
        self.refreshed_at = 0

    def train(self, mode: bool = True):
        super().train(mode)
        self.frozen_student.eval()                      # S* stays in eval mode
        return self

    def forward(self, batch: dict) -> dict:
        noisy = batch["noisy"]
        with torch.no_grad():
            target = self.frozen_student(noisy)
            modes = random_modes(self.aug_modes, noisy.shape[0])
            target_aug = apply_augmented(self.frozen_student, noisy, modes)
        out = self.net(noisy)
        return {"l_self": self.id_weight * pixel_loss(out, target, self.norm),
                "l_self_aug": self.aug_weight * pixel_loss(out, target_aug, self.norm)}

    def on_train_iter(self, iteration: int) -> None:
        """Replacement: S* <- S every ``refresh_every`` iterations."""
        if iteration % self.refresh_every == 0:
            self.frozen_student.load_state_dict(self.net.state_dict())
            self.refreshed_at = iteration

    def checkpoint_state(self) -> dict:
        return {"frozen_student": self.frozen_student.state_dict(), "refreshed_at": self.refreshed_at}

    def load_checkpoint_state(self, state: dict) -> None:
        if "frozen_student" not in state:
            raise ConfigError("the checkpoint has no frozen student S* (not a DistillFine checkpoint): "
                              "resume it with the method it was trained with")
        self.frozen_student.load_state_dict(state["frozen_student"])
        self.refreshed_at = state.get("refreshed_at", 0)
