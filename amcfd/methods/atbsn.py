"""AT-BSN (Chen et al., CVPR 2024): a tunable blind-spot network and its multi-teacher distillation.

ATBSN: L = L1(f_h(y), y) with the blind spot h = 9 in training; inference f_3(y) (hole 3), one forward.
ATBSNDistill (AT-BSN-D): a frozen trained ATBSN T gives targets T_h(y) for h in {0, 1, 3, 5, 7, 9, 11}, all
from one U-Net pass (archs/atbsn.py ``forward_holes``); the single-pass student S learns
L = sum_h L1(S(y), T_h(y)), and starts from T's weights. Inference: S(y).

Settings are the authors' (hnmizuho/AT-BSN ``codes/options/train/train_atbsn.yml``, ``distill_atbsn.yml``,
``codes/models/atbsn_model.py``, ``atbsn_d_model.py``). ``ATBSNTeacherDistill`` (a frozen ATBSN teacher
read through engine/teacher.py's FrozenTeacher) is shared with APR-RD's RechargedDistill (methods/aprrd.py).
"""
from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch import nn

from amcfd.archs.atbsn import ATBSN as ATBSNNet
from amcfd.losses.basic import l1
from amcfd.methods.amsnet import _is_int, _require
from amcfd.methods.base import Method
from amcfd.registry import METHODS, ConfigError

log = logging.getLogger("amcfd")

# Teacher keys the student never takes (the authors' ``load_network_bsn2nbsn``: nin_A/B/C and dec1.conv1/conv2).
SKIPPED_PREFIXES = ("nin_", "unet.dec1.")


def require_atbsn(net: nn.Module, method: str, option: str = "network.type") -> None:
    if not isinstance(net, ATBSNNet):
        raise ConfigError(f"option '{option}': method '{method}' needs an ATBSN network, got {type(net).__name__}")


def copy_teacher_weights(student: nn.Module, teacher: nn.Module, skip: Sequence[str] = SKIPPED_PREFIXES) -> list:
    """Copy the teacher's state-dict entries whose key and shape match the student's, except keys starting
    with ``skip``; returns the copied keys. For ATBSN -> ATBSNStudent: every ``unet.*`` key but ``unet.dec1.*``."""
    theirs, mine = teacher.state_dict(), student.state_dict()
    copied = [k for k, v in mine.items()
              if not k.startswith(tuple(skip)) and k in theirs and theirs[k].shape == v.shape]
    student.load_state_dict({**mine, **{k: theirs[k] for k in copied}})
    return copied


def fit_pad(pad: int, x: torch.Tensor) -> int:
    """``pad``, reduced for images too small to reflect-pad by it (reflection needs pad < side)."""
    return min(pad, x.shape[-2] - 1, x.shape[-1] - 1)


def _check_holes(holes, option: str = "method.holes") -> list:
    if not isinstance(holes, (list, tuple)) or not holes or not all(_is_int(h) and h >= -1 for h in holes):
        raise ConfigError(f"option '{option}' must be a non-empty list of ints >= -1, got {holes!r}")
    return list(holes)


@METHODS.register()
class ATBSN(Method):
    """AT-BSN training and inference around an ``ATBSN`` network (archs/atbsn.py).

    Options (the authors'): hole_train: blind-spot size h of training (9); hole_test: h of inference (3).
      loss_in_value_range: the L1 in the network's ``value_range`` ([0, 255] for the authors' setting), as theirs
        (True: their loss and, through Adam's eps, their steps); False: on [0, 1], 1/value_range of theirs.
    """

    def __init__(self, net: nn.Module, hole_train: int = 9, hole_test: int = 3, loss_in_value_range: bool = True):
        super().__init__(net)
        require_atbsn(net, "ATBSN")
        _require(_is_int(hole_train) and hole_train >= 1, "hole_train", hole_train, "an int >= 1")
        _require(_is_int(hole_test) and hole_test >= 0, "hole_test", hole_test, "an int >= 0")
        _require(isinstance(loss_in_value_range, bool), "loss_in_value_range", loss_in_value_range, "true or false")
        self.hole_train, self.hole_test = hole_train, hole_test
        self.loss_scale = net.value_range if loss_in_value_range else 1.0

    def forward(self, batch: dict) -> dict:
        noisy, s = batch["noisy"], self.loss_scale
        return {"l_l1": l1(self.net(noisy, self.hole_train) * s, noisy * s)}

    @torch.no_grad()
    def denoise(self, noisy: torch.Tensor) -> torch.Tensor:
        return self.net(noisy, self.hole_test)


class ATBSNTeacherDistill(Method):
    """A student ``net`` taught by a frozen ATBSN: ``teacher_outputs(y)`` = [T_h(y) for h in holes] from one
    U-Net pass (``ATBSN.forward_holes(y, holes, pad)``), without gradient, every training step (online).

    ``teacher``: the options of DistillCoarse's (engine/teacher.py FrozenTeacher: a checkpoint built as valid.py
    does, any method whose network is an ATBSN); loaded on first use, never part of the student's checkpoint.
    """

    def __init__(self, net: nn.Module, teacher: dict | None, holes: Sequence[int], pad: int):
        super().__init__(net)
        from amcfd.engine.teacher import FrozenTeacher

        self.teacher_options = FrozenTeacher.check_options(teacher)
        self.holes = _check_holes(holes)
        _require(_is_int(pad) and pad >= 0, "pad", pad, "an int >= 0")
        self.pad = pad
        self._teacher = None

    @property
    def teacher(self):
        """The FrozenTeacher (loaded on first use); its network must be an ATBSN."""
        if self._teacher is None:
            from amcfd.engine.teacher import FrozenTeacher

            teacher = FrozenTeacher(**self.teacher_options)
            require_atbsn(teacher.network(), type(self).__name__, "method.teacher.checkpoint")
            self._teacher = teacher
        return self._teacher

    def teacher_outputs(self, noisy: torch.Tensor) -> list:
        """[T_h(y) for h in holes], each (B, C, H, W); one teacher U-Net pass, full precision, no gradient."""
        net = self.teacher.network(noisy.device)
        with torch.no_grad(), torch.autocast(noisy.device.type, enabled=False):
            return net.forward_holes(noisy.float(), self.holes, fit_pad(self.pad, noisy))


@METHODS.register()
class ATBSNDistill(ATBSNTeacherDistill):
    """AT-BSN-D: L = sum_h L1(S(y), T_h(y)), h in ``holes``; ``denoise`` is one student forward.

    Options:
      teacher: the frozen ATBSN (see ATBSNTeacherDistill), e.g. {checkpoint: experiments/atbsn/models/best.pth}.
      holes: the teacher's blind-spot sizes ([0, 1, 3, 5, 7, 9, 11], the authors'). pad: reflect padding of the
        teacher's input, cropped off its outputs (0, the authors').
      init_from_teacher: when a training run starts fresh, copy the teacher's weights into the student (true,
        the authors' ``load_network_bsn2nbsn``): every state-dict key that matches in name and shape, except the
        heads ``nin_*`` and the last decoder block ``unet.dec1.*`` (conv1 and conv2). It runs in the engine's
        ``on_train_start`` hook (after ``path.pretrain_network`` is loaded; never on resume, never in valid.py or
        test.py): set it false to start from a student checkpoint. The student's and teacher's ``value_range``
        must then agree.
      loss_in_value_range: the L1 terms in the student's ``value_range``, as the authors' (True); False: on [0, 1].
    """

    def __init__(self, net: nn.Module, teacher: dict | None = None, holes: Sequence[int] = (0, 1, 3, 5, 7, 9, 11),
                 pad: int = 0, init_from_teacher: bool = True, loss_in_value_range: bool = True):
        super().__init__(net, teacher, holes, pad)
        _require(isinstance(init_from_teacher, bool), "init_from_teacher", init_from_teacher, "true or false")
        _require(isinstance(loss_in_value_range, bool), "loss_in_value_range", loss_in_value_range, "true or false")
        self.init_from_teacher = init_from_teacher
        self.loss_scale = getattr(net, "value_range", 1.0) if loss_in_value_range else 1.0
        self.copied_keys: list = []

    def on_train_start(self) -> None:
        if self.init_from_teacher:
            self.copied_keys = self._init_from_teacher()

    def _init_from_teacher(self) -> list:
        teacher = self.teacher.network()
        ours, theirs = getattr(self.net, "value_range", None), teacher.value_range
        if ours is not None and ours != theirs:
            raise ConfigError(f"option 'network.value_range' ({ours}) must equal the teacher's ({theirs}) to start "
                              f"from its weights (method.init_from_teacher)")
        copied = copy_teacher_weights(self.net, teacher)
        if not copied:
            raise ConfigError("option 'method.init_from_teacher': no student weight matches the teacher's by name "
                              "and shape; set it to false")
        log.info("student initialised from the teacher: %d of %d state-dict entries (skipped %s)", len(copied),
                 len(self.net.state_dict()), ", ".join(f"{p}*" for p in SKIPPED_PREFIXES))
        return copied

    def forward(self, batch: dict) -> dict:
        noisy = batch["noisy"]
        targets = self.teacher_outputs(noisy)
        out, s = self.net(noisy), self.loss_scale
        return {"l_distill": sum(l1(out * s, t * s) for t in targets)}
