"""APR-RD (Kim & Cho, AAAI 2025): the adjacent pixel replacer (APR) trains an AT-BSN; recharged
distillation (RD) teaches a single-pass student from it.

APR: per pixel an ordered pair (o1, o2) of distinct offsets in the 3x3 window (ops/replace.py); h1 y, h2 y are
y with every pixel replaced by its o1 / o2 neighbour. With f the ATBSN at hole 9,
    L = L1(f(h1 y), h2 y) + 4 * mean|f(h1 y) - h2 y - (h1(f y) - h2(f y))|.
Inference: f_1(y) on y reflect-padded by 16 (cropped back).
RD: the frozen APR network gives T_h(y), h in {none, 1, 3, 5, 7, 9} (one U-Net pass, input reflect-padded by
16: their ``Inf_T_elements``); per pixel one of the six targets is drawn and takes the noisy value there
(recharged, ops/replace.py ``recharge``); L = sum_k L1(S(y), T_k^RD). Inference: S(y).

Settings and facts are the authors' code (HYK2017/APRRD ``NBSN_1.02M/codes``: ``config.json``,
``preparation.py``, ``utils/function.py``, ``utils/utility.py``).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from amcfd.losses.basic import l1
from amcfd.methods.amsnet import _is_int, _require
from amcfd.methods.apbsn import _is_number
from amcfd.methods.atbsn import ATBSNTeacherDistill, fit_pad, require_atbsn
from amcfd.methods.base import Method
from amcfd.ops.replace import recharge as recharge_targets
from amcfd.ops.replace import replace_pixels, sample_pairs
from amcfd.registry import METHODS


@METHODS.register()
class APR(Method):
    """APR training of an ``ATBSN`` network ``net`` (archs/atbsn.py); ``denoise`` = f_{hole_test}(y).

    Options (defaults: the authors' ``config.json``):
      hole_train: the blind spot h of both forwards in training (9: shift factor 5).
      hole_test: h of inference (1: shift factor 1). pad_test: reflect padding at inference (16).
      window: side of the offset window (3). reg_weight: weight of the regulariser (4, ``reg_factor``).
      detach_full: stop the gradient through f(y) in h1(f y) - h2(f y) (false: the authors' ``train`` computes
        ``fy = f(y, ...)`` outside ``no_grad`` and never detaches it; true is Neighbor2Neighbor's stop-gradient).
    """

    def __init__(self, net: nn.Module, hole_train: int = 9, hole_test: int = 1, pad_test: int = 16, window: int = 3,
                 reg_weight: float = 4.0, detach_full: bool = False):
        super().__init__(net)
        require_atbsn(net, "APR")
        _require(_is_int(hole_train) and hole_train >= 1, "hole_train", hole_train, "an int >= 1")
        _require(_is_int(hole_test) and hole_test >= 0, "hole_test", hole_test, "an int >= 0")
        _require(_is_int(pad_test) and pad_test >= 0, "pad_test", pad_test, "an int >= 0")
        _require(_is_int(window) and window >= 3 and window % 2 == 1, "window", window, "an odd int >= 3")
        _require(_is_number(reg_weight) and reg_weight >= 0, "reg_weight", reg_weight, "a number >= 0")
        _require(isinstance(detach_full, bool), "detach_full", detach_full, "true or false")
        self.hole_train, self.hole_test, self.pad_test = hole_train, hole_test, pad_test
        self.window, self.reg_weight, self.detach_full = window, float(reg_weight), detach_full

    def apr_loss(self, y: torch.Tensor, o1: torch.Tensor, o2: torch.Tensor) -> dict:
        """The two terms for given offsets o1, o2 (B, H, W, 2) (ops/replace.py)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach_full):
            fy = self.net(y, self.hole_train)
        f_h1y = self.net(replace_pixels(y, o1), self.hole_train)
        h2y = replace_pixels(y, o2)
        return {"l_rec": l1(f_h1y, h2y),
                "l_reg": self.reg_weight * l1(f_h1y - h2y, replace_pixels(fy, o1) - replace_pixels(fy, o2))}

    def forward(self, batch: dict) -> dict:
        noisy = batch["noisy"]
        return self.apr_loss(noisy, *sample_pairs(noisy.shape, self.window, device=noisy.device))

    @torch.no_grad()
    def denoise(self, noisy: torch.Tensor) -> torch.Tensor:
        return self.net.forward_holes(noisy, [self.hole_test], fit_pad(self.pad_test, noisy))[0]


@METHODS.register()
class RechargedDistill(ATBSNTeacherDistill):
    """APR-RD's recharged distillation of a frozen ATBSN teacher (an APR checkpoint) into the student ``net``.

    Options:
      teacher: the frozen ATBSN (methods/atbsn.py ATBSNTeacherDistill; DistillCoarse's options).
      holes: the teacher's blind-spot sizes ([-1, 1, 3, 5, 7, 9]: the authors' shift factors 0..5; -1 = none).
      pad: reflect padding of the teacher's input (16). recharge: recharge the targets (true; false = plain
        multi-target distillation). The student starts from its own initialisation, as the authors'.
    """

    def __init__(self, net: nn.Module, teacher: dict | None = None, holes: Sequence[int] = (-1, 1, 3, 5, 7, 9),
                 pad: int = 16, recharge: bool = True):
        super().__init__(net, teacher, holes, pad)
        _require(isinstance(recharge, bool), "recharge", recharge, "true or false")
        self.recharge = recharge

    def targets(self, noisy: torch.Tensor, choice: torch.Tensor | None = None) -> torch.Tensor:
        """(K, B, C, H, W): the teacher's outputs, recharged (with ``choice`` (B, H, W) if given)."""
        targets = torch.stack(self.teacher_outputs(noisy))
        return recharge_targets(targets, noisy, choice) if self.recharge else targets

    def forward(self, batch: dict) -> dict:
        noisy = batch["noisy"]
        targets = self.targets(noisy)
        out = self.net(noisy)
        return {"l_distill": sum(l1(out, t) for t in targets)}
