"""AMSNet: the asymmetric mask scheme (Liao et al., ECCV 2024), the teacher of AM-CFD.

Training (AMSNet-B, Eq. 4): P_s (s = 5) -> one branch with a random mask, hidden pixels zero-filled
-> any denoiser D_E -> L1 on the hidden pixels only. The hidden pixel's own value never enters the
network, so D_E needs no blind spot.
Inference (Eq. 7-8): P_s (s = 2) -> all k branches with complementary masks in one batched forward
-> each branch's output kept on its hidden pixels and summed -> P_s^-1.
AMSNet-P (Eq. 9-10): fine-tune with L_t = lambda * L_p(I_DN) + ||I_DN - I_N||_1 on the full
multi-branch output. "-E": R^3 refinement at stride 1 with fresh masks (ops/refine.py).

The pipeline pieces are module functions taking optional masks, so the authors' stored random
draws can be injected (tests/test_amsnet_golden.py); masks are random only when not given.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from amcfd.losses.basic import l1, masked_l1, smoothness_tv
from amcfd.losses.posterior import pixel_share, posterior_loss, posterior_mean
from amcfd.methods.base import Method
from amcfd.ops.batching import resolve_chunk, resolve_workers, run_in_chunks
from amcfd.ops.masks import MASK_MODES, check_masks, complementary_masks
from amcfd.ops.pd import PAD_MODES, pd_down, pd_up
from amcfd.ops.recharge import detail_recharge
from amcfd.ops.refine import REPLACE_MODES, random_replacement_refine, replacement_masks
from amcfd.registry import METHODS, ConfigError


def mask_inputs(x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """M_i ⊙ I_s for every branch: (N, C, h, w) x (k, N, 1|C, h, w) -> (k, N, C, h, w), hidden = 0."""
    return x.unsqueeze(0) * masks.to(x.dtype)


def assemble_branches(outputs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Eq. 7: sum_i M~_i ⊙ O_i, i.e. each position taken from the branch that hid it.

    ``outputs``: (k, N, C, h, w); ``masks``: keep-masks (k, N, 1|C, h, w) -> (N, C, h, w).
    Positions are selected (not multiplied), so complementary masks give exact copies.
    """
    result = torch.zeros_like(outputs[0])
    for i in range(outputs.shape[0]):
        result = torch.where(~masks[i], outputs[i], result)
    return result


def multi_mask_denoise(net: nn.Module, x: torch.Tensor, masks: torch.Tensor | None = None,
                       num_masks: int = 2, mask_mode: str = "pixel",
                       mask_ratio: float | Sequence[float] | None = None, chunk_size: int | None = None,
                       batched: bool = True, workers: int | None = None, return_branches: bool = False):
    """D_M (Eq. 6-7) on images or sub-images x (N, C, h, w) -> (N, C, h, w).

    All k branches share ``net``; with ``batched`` they run as one batch of k*N images, in chunks of
    at most ``chunk_size`` images (0 = no limit, None = automatic, see ``ops.batching.resolve_chunk``),
    ``workers`` chunks at a time (None = automatic, see ``ops.batching.resolve_workers``); else one
    forward per branch (the authors' loop).
    ``masks``: optional keep-masks (k, N, 1|C, h, w); drawn fresh when None.
    ``return_branches``: also return the raw branch outputs (k, N, C, h, w).
    """
    if masks is None:
        masks = complementary_masks(x, num_masks, mask_mode, mask_ratio)
    masks = check_masks(masks, x)
    chunk_size = resolve_chunk(chunk_size, x)
    k, n = masks.shape[:2]
    inputs = mask_inputs(x, masks)                                        # (k, N, C, h, w)
    if batched:
        flat = run_in_chunks(net, inputs.reshape(k * n, *x.shape[1:]), chunk_size,
                             resolve_workers(workers, x))
        outputs = flat.reshape(k, n, *flat.shape[1:])                     # (k, N, C', h, w)
    else:
        outputs = torch.stack([run_in_chunks(net, inputs[i], chunk_size) for i in range(k)])
    result = assemble_branches(outputs, masks)
    return (result, outputs) if return_branches else result


def amsnet_denoise(net: nn.Module, noisy: torch.Tensor, stride: int = 2,
                   masks: torch.Tensor | None = None, pad_mode: str = "replicate", combine=None, **mask_options):
    """I_DN = P_s^-1(D_M(P_s(I_N))) (Eq. 8), (B, C, H, W) -> (B, C, H, W).

    Sizes not divisible by ``stride`` are padded (``pad_mode``; ``replicate`` never puts a copy of a pixel
    in its own sub-image, see ``AMSNet``) and cropped back. ``masks``:
    optional keep-masks for the sub-images (k, B*s*s, 1|C, H/s, W/s). ``combine(sub, out)``: what becomes of
    the assembled output and the sub-images before P_s^-1 (the posterior mean). ``mask_options`` go to
    ``multi_mask_denoise`` (num_masks, mask_mode, mask_ratio, chunk_size, batched, workers).
    """
    sub = pd_down(noisy, stride, pad_mode=pad_mode) if stride > 1 else noisy  # (B*s*s, C, H/s, W/s)
    out = multi_mask_denoise(net, sub, masks, **mask_options)
    if combine is not None:
        out = combine(sub, out)
    return pd_up(out, stride, size=noisy.shape[-2:]) if stride > 1 else out


def crop_to_multiple(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Drop the bottom/right remainder so H, W are multiples of ``stride`` (training crops).

    Training crops are cut rather than padded: a mirrored copy of a hidden pixel could be
    visible in another sub-image and leak the target into the input.
    """
    h, w = x.shape[-2:]
    if h < stride or w < stride:
        raise ValueError(f"AMSNet training crop {h}x{w} is smaller than the PD stride {stride}")
    return x[..., :h - h % stride, :w - w % stride]


def masked_branch(net: nn.Module, noisy: torch.Tensor, stride: int = 5, masks: torch.Tensor | None = None,
                  branch: int = 0, num_masks: int = 2, mask_mode: str = "pixel",
                  mask_ratio: float | Sequence[float] | None = None):
    """One training branch (Eq. 4's input): P_s, then ``net`` on the pixels branch ``branch`` keeps ->
    (sub-images, the network's output, all keep-masks (k, B*s*s, 1|C, H/s, W/s); drawn when not given, all k as
    the authors do)."""
    noisy = crop_to_multiple(noisy, stride)
    sub = pd_down(noisy, stride) if stride > 1 else noisy                # (B*s*s, C, H/s, W/s)
    if masks is None:
        masks = complementary_masks(sub, num_masks, mask_mode, mask_ratio)
    masks = check_masks(masks, sub)
    return sub, net(sub * masks[branch].to(sub.dtype)), masks


def single_mask_loss(net: nn.Module, noisy: torch.Tensor, stride: int = 5,
                     masks: torch.Tensor | None = None, branch: int = 0, num_masks: int = 2,
                     mask_mode: str = "pixel", mask_ratio: float | Sequence[float] | None = None,
                     return_output: bool = False):
    """L_m (Eq. 4) of one training step: P_s, branch ``branch`` only, L1 on its hidden pixels.
    ``return_output``: also return the branch output and masks (``masked_branch``)."""
    sub, out, masks = masked_branch(net, noisy, stride, masks, branch, num_masks, mask_mode, mask_ratio)
    loss = masked_l1(out, sub, ~masks[branch])
    return (loss, out, masks) if return_output else loss


def amsnet_r3(net: nn.Module, denoised: torch.Tensor, noisy: torch.Tensor, copies: int = 8,
              ratio: float = 0.16, mode: str = "pixel", replace_masks: torch.Tensor | None = None,
              net_masks: torch.Tensor | None = None, num_masks: int = 2, mask_mode: str = "pixel",
              mask_ratio: float | Sequence[float] | None = None, chunk_size: int | None = None,
              batched: bool = True, workers: int | None = None) -> torch.Tensor:
    """AMSNet's R^3: T copies with replaced pixels, the multi-mask pipeline at stride 1, mean.

    Random draws in the authors' order: replacement masks (one per copy), then one set of branch
    masks for all T*B copies. ``replace_masks`` (T, B|-, 1|C, H, W) and ``net_masks``
    (k, T*B, 1|C, H, W) can be given. ``batched``: all copies and branches in forwards of up to
    ``chunk_size`` images, ``workers`` at a time; else one copy and one branch per forward.
    """
    b, c, h, w = noisy.shape
    chunk_size, workers = resolve_chunk(chunk_size, noisy), resolve_workers(workers, noisy)
    if replace_masks is None:
        replace_masks = replacement_masks(noisy.shape, copies, ratio, mode, device=noisy.device)
    copies = replace_masks.shape[0]
    if net_masks is None:
        net_masks = complementary_masks((copies * b, c, h, w), num_masks, mask_mode, mask_ratio,
                                        device=noisy.device)
    done = 0

    def denoise_copies(x: torch.Tensor) -> torch.Tensor:  # chunks arrive in order: slice their masks
        nonlocal done
        part = net_masks[:, done:done + x.shape[0]]
        done += x.shape[0]
        return multi_mask_denoise(net, x, part, chunk_size=chunk_size, batched=batched, workers=workers)

    k = net_masks.shape[0]     # copies per call: enough images to keep every worker busy
    per_call = (max(1, chunk_size * workers // k) if chunk_size else None) if batched else b
    return random_replacement_refine(denoised, noisy, denoise_copies, replace_masks=replace_masks,
                                     chunk=per_call)


def _require(ok: bool, option: str, value, expected: str) -> None:
    if not ok:
        raise ConfigError(f"option 'method.{option}' must be {expected}, got {value!r}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@METHODS.register()
class AMSNet(Method):
    """Asymmetric mask scheme around any denoiser ``net`` (paper defaults).

    Options (defaults follow the paper; where the authors' code differs it is noted):
      pd_train: PD stride for training (5).   pd_test: PD stride for inference (2). After short CPU
        trainings other strides did better (pd_test 1 everywhere; pd_train 2 on light real noise,
        3 on the synthetic demo); ``pd_train: auto`` picks it from the noise (noise.estimate.suggest_choices).
      num_masks: k complementary masks/branches (2). train_branch: the branch trained (0).
      mask_mode: 'pixel' (index shared across RGB, authors) | 'element' | 'checkerboard'.
      mask_ratio: None (1/k each) | float (hidden share of the training branch) | list of k.
      finetune_smooth: AMSNet-P, loss Eq. 10 instead of Eq. 4 (False).
      smooth_weight: lambda of Eq. 10 (0.01, the method section; the ablation prefers 0.1).
      pd_finetune: PD stride of the fine-tuning pipeline (None = pd_train, which keeps the noise
        decorrelated; the authors ship no fine-tuning code).
      smooth_eps: eps inside the TV square root (1e-6), see losses.basic.smoothness_tv.
      r3: apply R^3 at inference, the "-E" variants (False; the authors' restormer config uses 0).
      r3_copies: T (8).  r3_ratio: p (0.16).  r3_mode: 'pixel' (AMSNet code) | 'element' (AP-BSN).
      chunk_size: at most this many images per network forward (memory bound and CPU speed); 0 = no
        limit; None = automatic: no limit on GPU and in training, ~128x128 pixels per forward (at least
        one image) for CPU inference, which measured fastest there.
      workers: chunks run at once, in threads (CPU inference; peak memory grows with it); None =
        automatic: one per torch thread (at most 8) on CPU, 1 on GPU and in training.
      batched: run branches and R^3 copies as one batch (True), chunked as above, or one forward per
        branch and R^3 copy (False: a Python loop; the authors loop over branches, batch R^3 copies).
      pad_mode: padding of sizes not divisible by the PD stride ('replicate' | 'zero' | 'reflect'). 'replicate'
        (default) fills rows H..H+p-1 with row H-1 (phases H mod s.. s-1, never (H-1) mod s; columns alike), so
        a copy of a pixel never lands in its own sub-image and cannot stand in for it when it is hidden; 'zero'
        copies nothing. 'reflect' puts row H-2-k at H+k, in the same sub-image when s divides 2k+2: for even
        strides (P_2) right next to the pixel, whose hidden noisy value then leaks into its output.
      recharge: give back detail the blind-spot output lost, by the local Wiener blend with the noisy
        input of ops/recharge.py (False: the paper's output). recharge_window: its box (9).
        recharge_quantile: the quantile of the local residual energy taken as the noise floor (0.05).
      posterior: the network (``network.type: Posterior``, archs/posterior.py) also predicts a prior variance
        and learns the noise variance as a function of intensity; training minimises the Gaussian likelihood of
        each hidden pixel (losses/posterior.py) instead of L1, and the output is the posterior mean of each
        pixel given its prior and its own noisy value (Laine et al. 2019), in each PD sub-image (the stride
        decorrelates the noise; False). Not with recharge (the posterior gives the pixel's own value back),
        finetune_smooth or mask_mode 'element'. prior_weight: the weight of the prior's share of the variance,
        which makes the noise curve, not the prior, explain what does not depend on the surroundings (0.1).
    """

    AUTO_OPTIONS = ("pd_train", "pd_test", "recharge")   # may be 'auto': chosen from the noise (noise/auto.py)

    def __init__(self, net: nn.Module, pd_train: int = 5, pd_test: int = 2, num_masks: int = 2,
                 train_branch: int = 0, mask_mode: str = "pixel", mask_ratio=None,
                 finetune_smooth: bool = False, smooth_weight: float = 0.01, pd_finetune=None,
                 smooth_eps: float = 1e-6, r3: bool = False, r3_copies: int = 8, r3_ratio: float = 0.16,
                 r3_mode: str = "pixel", chunk_size=None, workers=None, batched: bool = True,
                 pad_mode: str = "replicate", recharge: bool = False, recharge_window: int = 9,
                 recharge_quantile: float = 0.05, posterior: bool = False, prior_weight: float = 0.1):
        super().__init__(net)
        for name, value in (("pd_train", pd_train), ("pd_test", pd_test), ("r3_copies", r3_copies)):
            _require(_is_int(value) and value >= 1, name, value, "an int >= 1")
        _require(pd_finetune is None or (_is_int(pd_finetune) and pd_finetune >= 1), "pd_finetune",
                 pd_finetune, "null or an int >= 1")
        _require(_is_int(num_masks) and num_masks >= 2, "num_masks", num_masks, "an int >= 2")
        _require(_is_int(train_branch) and 0 <= train_branch < num_masks, "train_branch", train_branch,
                 f"an int in [0, {num_masks})")
        _require(mask_mode in MASK_MODES, "mask_mode", mask_mode, f"one of {MASK_MODES}")
        _require(r3_mode in REPLACE_MODES, "r3_mode", r3_mode, f"one of {REPLACE_MODES}")
        _require(pad_mode in PAD_MODES, "pad_mode", pad_mode, f"one of {PAD_MODES}")
        _require(isinstance(r3, bool), "r3", r3, "true or false")
        _require(isinstance(recharge, bool), "recharge", recharge, "true or false")
        _require(_is_int(recharge_window) and recharge_window >= 1 and recharge_window % 2 == 1, "recharge_window",
                 recharge_window, "an odd int >= 1")
        _require(0.0 < recharge_quantile < 1.0, "recharge_quantile", recharge_quantile, "in (0, 1)")
        _require(0.0 <= r3_ratio <= 1.0, "r3_ratio", r3_ratio, "in [0, 1]")
        _require(smooth_weight >= 0, "smooth_weight", smooth_weight, ">= 0")
        _require(smooth_eps > 0, "smooth_eps", smooth_eps, "> 0")
        _require(chunk_size is None or (_is_int(chunk_size) and chunk_size >= 0), "chunk_size", chunk_size,
                 "null or an int >= 0")
        _require(workers is None or (_is_int(workers) and workers >= 1), "workers", workers, "null or an int >= 1")
        try:
            complementary_masks((1, 1, 2, 2), num_masks, mask_mode, mask_ratio)
        except ValueError as err:
            raise ConfigError(f"option 'method.mask_ratio': {err}") from None
        self.pd_train, self.pd_test, self.num_masks = pd_train, pd_test, num_masks
        self.train_branch, self.mask_mode, self.mask_ratio = train_branch, mask_mode, mask_ratio
        self.finetune_smooth, self.smooth_weight, self.smooth_eps = finetune_smooth, smooth_weight, smooth_eps
        self.pd_finetune = pd_train if pd_finetune is None else pd_finetune
        self.r3, self.r3_copies, self.r3_ratio, self.r3_mode = r3, r3_copies, r3_ratio, r3_mode
        self.chunk_size, self.workers, self.batched, self.pad_mode = chunk_size, workers, batched, pad_mode
        self.recharge, self.recharge_window, self.recharge_quantile = recharge, recharge_window, recharge_quantile
        _require(isinstance(posterior, bool), "posterior", posterior, "true or false")
        _require(isinstance(prior_weight, (int, float)) and prior_weight >= 0, "prior_weight", prior_weight, ">= 0")
        if posterior:
            from amcfd.archs.posterior import Posterior

            if net is not None and not isinstance(net, Posterior):
                raise ConfigError("option 'method.posterior' needs a network that predicts its prior variance and "
                                  f"learns the noise: network.type Posterior (it wraps any other), not "
                                  f"{type(net).__name__}")
            clash = [k for k, on in (("recharge", recharge), ("finetune_smooth", finetune_smooth),
                                     ("mask_mode 'element'", mask_mode == "element")) if on]
            if clash:
                raise ConfigError(f"option 'method.posterior' excludes method.{clash[0]}: set one of them off")
        self.posterior, self.prior_weight = posterior, prior_weight

    # -- pieces -------------------------------------------------------------------------------
    def _mask_options(self) -> dict:
        return dict(num_masks=self.num_masks, mask_mode=self.mask_mode, mask_ratio=self.mask_ratio,
                    chunk_size=self.chunk_size, batched=self.batched, workers=self.workers)

    def multi_mask(self, noisy: torch.Tensor, stride: int | None = None,
                   masks: torch.Tensor | None = None) -> torch.Tensor:
        """I_DN = P_s^-1(D_M(P_s(I_N))) (Eq. 8) without R^3; keeps the graph (used by AMSNet-P). With
        ``posterior``: each sub-image pixel's posterior mean given its prior and its noisy value."""
        stride = self.pd_test if stride is None else stride
        combine = self.combine_posterior if self.posterior else None
        return amsnet_denoise(self.net, noisy, stride, masks, self.pad_mode, combine, **self._mask_options())

    def combine_posterior(self, sub: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """x_hat of every pixel of ``sub`` from the assembled [mu, log sigma_p^2] (losses/posterior.py)."""
        mu, log_prior = out.chunk(2, 1)
        return posterior_mean(sub, mu, log_prior.exp(), self.net.noise_variance(mu))

    @torch.no_grad()
    def pixel_share(self, noisy: torch.Tensor) -> torch.Tensor:
        """w_y = sigma_p^2 / (sigma_p^2 + sigma_n^2) of every pixel and channel (losses/posterior.py), through the
        same P_s multi-mask pipeline as ``denoise`` (without R^3): where the teacher is unsure (w_y near 1)."""
        if not self.posterior:
            raise ConfigError("AMSNet.pixel_share needs a network trained with option 'method.posterior: true'")

        def share(sub: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
            mu, log_prior = out.chunk(2, 1)
            return pixel_share(log_prior.exp(), self.net.noise_variance(mu))

        return amsnet_denoise(self.net, noisy, self.pd_test, None, self.pad_mode, share, **self._mask_options())

    def prior_mean_net(self, x: torch.Tensor) -> torch.Tensor:
        """The network's prior mean mu alone (R^3 of a posterior network runs on it)."""
        return self.net(x)[:, : x.shape[1]]

    def refine(self, denoised: torch.Tensor, noisy: torch.Tensor, replace_masks=None,
               net_masks=None) -> torch.Tensor:
        """R^3 at stride 1 with this method's mask and batching options."""
        net = self.prior_mean_net if self.posterior else self.net
        return amsnet_r3(net, denoised, noisy, self.r3_copies, self.r3_ratio, self.r3_mode,
                         replace_masks, net_masks, **self._mask_options())

    # -- Method contract ------------------------------------------------------------------------
    def forward(self, batch: dict) -> dict:
        noisy = batch["noisy"]
        if self.posterior:
            sub, out, masks = masked_branch(self.net, noisy, self.pd_train, branch=self.train_branch,
                                            num_masks=self.num_masks, mask_mode=self.mask_mode,
                                            mask_ratio=self.mask_ratio)
            mu, log_prior = out.chunk(2, 1)
            return posterior_loss(sub, mu, log_prior.exp(), self.net.noise_variance(mu.detach()),
                                  ~masks[self.train_branch], self.prior_weight)
        if not self.finetune_smooth:
            loss = single_mask_loss(self.net, noisy, self.pd_train, branch=self.train_branch,
                                    num_masks=self.num_masks, mask_mode=self.mask_mode,
                                    mask_ratio=self.mask_ratio)
            return {"l_mask": loss}
        denoised = self.multi_mask(noisy, self.pd_finetune)                 # I_DN with gradient
        return {"l_l1": l1(denoised, noisy),
                "l_smooth": self.smooth_weight * smoothness_tv(denoised, self.smooth_eps)}

    @torch.no_grad()
    def denoise(self, noisy: torch.Tensor) -> torch.Tensor:
        denoised = self.multi_mask(noisy)
        if self.r3:
            denoised = self.refine(denoised, noisy)
        if self.recharge:
            denoised = detail_recharge(noisy, denoised, self.recharge_window, self.recharge_quantile)
        return denoised
