"""AM-CFD coarse distillation: a frozen AMSNet teacher -> a single-pass student (structure-aware loss).

    L_CD = sum_{r in {id, aug}} [ w_bf * L_bf(alpha^r * S(I_N), alpha^r * BF(I_N))
                                 + w_ga * L_ga((1 - alpha^r) * S(I_N), (1 - alpha^r) * I_DN^r) ]
           + lambda_p * L_p(S(I_N))

I_DN = T(I_N) is the teacher (AMSNet-P-E by default: P_2 multi-mask inference + R^3),
I_DN^aug = A^-1(T(A(I_N))) for a dihedral transform A drawn per image from ``aug_modes``,
alpha^r = non-flat map of I_DN^r (ops/texture.py; or, with ``alpha: posterior``, the posterior teacher's
w_y = sigma_p^2 / (sigma_p^2 + sigma_n^2) of view r, its weight on the noisy pixel: near 1 where it is unsure,
methods/amsnet.py), BF = bilateral filter of the noisy input
(ops/bilateral.py; the paper's guide) or, with ``guide: nlm``, non-local means at the image's own noise
level (ops/guides.py), L_p = isotropic TV (AMSNet Eq. 9). The student learns the guide's
detail where the teacher sees texture and copies the teacher in flat areas (AM-CFD, coarse
distillation figure). The paper publishes no weights, norms, filter or map parameters: all are
options here.
"""
from __future__ import annotations

import torch
from torch import nn

from amcfd.losses.basic import smoothness_tv
from amcfd.losses.distill import NORMS, structure_aware_terms
from amcfd.methods.base import Method
from amcfd.ops.augment import apply_augmented, random_modes
from amcfd.ops.guides import GUIDES
from amcfd.ops.texture import texture_map
from amcfd.registry import METHODS, ConfigError, check_kwargs

TARGET_MODES = ("cache", "online")
ALPHAS = ("texture", "posterior")
BILATERAL_DEFAULTS = {"d": 7, "sigma_color": 30.0, "sigma_space": 3.0}
NLM_DEFAULTS = {"h": "auto", "strength": 1.0, "template": 7, "search": 21}


@METHODS.register()
class DistillCoarse(Method):
    """Coarse distillation (AM-CFD) of a frozen teacher into the student ``net``.

    Options:
      teacher: {checkpoint: PATH, method: {...}, ...} the frozen teacher (engine/teacher.py,
        FrozenTeacher): built with valid.py's code, AMSNet-P-E by default. Loaded on first use, so
        applying a trained student never needs the teacher.
      targets: 'cache' (teacher outputs computed once per training image before training, on disk) |
        'online' (teacher run on every training batch: for sets too large to cache, e.g. SIDD-Medium).
      aug_modes: the dihedral transforms A of I_DN^r (ops/augment.py modes; [1, 2, 3] = the three
        rotations the paper's flip-augmentation panel shows). Cached: one target per mode and image.
      bilateral: kwargs of ops.bilateral.bilateral_filter for BF(I_N) (OpenCV's d, sigma_color in 8-bit
        levels, sigma_space in pixels); default d 7, sigma_color 30, sigma_space 3, chosen with
        options/bench/bilateral.yml (docs/results.md, "Benchmark: bilateral_*").
      guide: the classical guide BF(I_N) of the L_bf term: 'bilateral' (the paper's) | 'nlm' (OpenCV
        non-local means, h = strength x the image's own noise level) | 'classical' | 'bm3d' | 'nlm2'
        (ops/guides.py).
      nlm: kwargs of ops.guides.nlm_filter for guide 'nlm' (h auto, strength 1, template 7, search 21).
        Guides 'classical' (the classical core's filter: methods/classical.py), 'bm3d' and 'nlm2' (two-scale
        NLM) take their kwargs from ``classical`` (ops/guides.py; e.g. {strength: 4}).
      texture: kwargs of ops.texture.texture_map, the "non-flat find" alpha.
      alpha: 'texture' (the paper's non-flat map of the teacher output) | 'posterior' (the teacher's w_y maps;
        a teacher trained with method.posterior: true).
      bf_weight, ga_weight: weights of the L_bf and L_ga terms (1, 1).
      bf_norm, ga_norm: 'l1' | 'l2' | 'charbonnier' (l1, l1).
      smooth_weight: lambda_p of the TV term L_p (0.01, AMSNet-P's lambda).
      smooth_eps: eps inside the TV square root (losses.basic.smoothness_tv).
    """

    def __init__(self, net: nn.Module, teacher: dict | None = None, targets: str = "cache",
                 aug_modes: list = (1, 2, 3), bilateral: dict | None = None, guide: str = "bilateral",
                 nlm: dict | None = None, classical: dict | None = None, texture: dict | None = None,
                 alpha: str = "texture", bf_weight: float = 1.0, ga_weight: float = 1.0, bf_norm: str = "l1",
                 ga_norm: str = "l1", smooth_weight: float = 0.01, smooth_eps: float = 1e-6):
        super().__init__(net)
        from amcfd.engine.teacher import FrozenTeacher, check_modes

        self.teacher_options = FrozenTeacher.check_options(teacher)
        if targets not in TARGET_MODES:
            raise ConfigError(f"option 'method.targets' must be one of {TARGET_MODES}, got {targets!r}")
        for name, norm in (("bf_norm", bf_norm), ("ga_norm", ga_norm)):
            if norm not in NORMS:
                raise ConfigError(f"option 'method.{name}' must be one of {NORMS}, got {norm!r}")
        for name, w in (("bf_weight", bf_weight), ("ga_weight", ga_weight), ("smooth_weight", smooth_weight)):
            if w < 0:
                raise ConfigError(f"option 'method.{name}' must be >= 0, got {w!r}")
        if guide not in GUIDES:
            raise ConfigError(f"option 'method.guide' must be one of {tuple(GUIDES)}, got {guide!r}")
        self.guide = guide
        if alpha not in ALPHAS:
            raise ConfigError(f"option 'method.alpha' must be one of {ALPHAS}, got {alpha!r}")
        self.alpha = alpha
        self.guide_options = ({**BILATERAL_DEFAULTS, **(bilateral or {})} if guide == "bilateral" else
                              {**NLM_DEFAULTS, **(nlm or {})} if guide == "nlm" else dict(classical or {}))
        self.texture = dict(texture or {})
        probe = torch.rand((1, 3, 32, 32), generator=torch.Generator().manual_seed(0))
        for name, fn, kwargs in ((guide, GUIDES[guide], self.guide_options), ("texture", texture_map, self.texture)):
            check_kwargs(fn, kwargs, f"method.{name}")
            try:                                          # values too (e.g. low > high), before any training
                fn(probe, **kwargs)
            except ValueError as err:
                raise ConfigError(f"option 'method.{name}': {err}") from None
        self.aug_modes = check_modes(list(aug_modes), "method.aug_modes")
        self.cached = targets == "cache"
        self.bf_weight, self.ga_weight, self.bf_norm, self.ga_norm = bf_weight, ga_weight, bf_norm, ga_norm
        self.smooth_weight, self.smooth_eps = smooth_weight, smooth_eps
        self._targets = None

    @property
    def teacher_targets(self):
        """The frozen teacher and what it must compute (engine/teacher.py); built on first use."""
        if self._targets is None:
            from amcfd.engine.teacher import FrozenTeacher, TeacherTargets

            self._targets = TeacherTargets(FrozenTeacher(**self.teacher_options), self.aug_modes,
                                           self.guide_options, cached=self.cached, guide=self.guide,
                                           share=self.alpha == "posterior")
        return self._targets

    @property
    def teacher(self):
        return self.teacher_targets.teacher

    def _targets_of(self, batch: dict) -> tuple:
        """(BF(I_N), I_DN, I_DN^aug, alpha, alpha^aug): from the cached batch, or computed now (online); the
        alphas are None for the texture map (computed from the targets in ``forward``)."""
        posterior = self.alpha == "posterior"
        if "target" in batch:
            alphas = (batch["alpha"], batch["alpha_aug"]) if posterior else (None, None)
            return batch["guide"], batch["target"], batch["target_aug"], *alphas
        noisy = batch["noisy"]
        with torch.no_grad(), torch.autocast(noisy.device.type, enabled=False):   # the teacher in full precision
            modes = random_modes(self.aug_modes, noisy.shape[0])
            share = self.teacher.pixel_share
            alphas = (share(noisy), apply_augmented(share, noisy, modes)) if posterior else (None, None)
            return (GUIDES[self.guide](noisy, **self.guide_options), self.teacher(noisy),
                    apply_augmented(self.teacher, noisy, modes), *alphas)

    def forward(self, batch: dict) -> dict:
        guide, target, target_aug, *alphas = self._targets_of(batch)
        out = self.net(batch["noisy"])
        l_bf = l_ga = 0.0
        for teacher_out, alpha in zip((target, target_aug), alphas):
            if alpha is None:
                alpha = texture_map(teacher_out, **self.texture)           # (B, 1, H, W), frozen
            t_bf, t_ga = structure_aware_terms(out, guide, teacher_out, alpha, self.bf_norm, self.ga_norm)
            l_bf, l_ga = l_bf + t_bf, l_ga + t_ga
        return {"l_bf": self.bf_weight * l_bf, "l_ga": self.ga_weight * l_ga,
                "l_smooth": self.smooth_weight * smoothness_tv(out, self.smooth_eps)}
