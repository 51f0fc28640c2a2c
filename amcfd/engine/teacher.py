"""Frozen teachers for distillation, and their targets computed once per training image.

A teacher is an input to a method: a checkpoint path in its options, turned into a denoiser by the
same code ``valid.py`` uses (``engine.inference.build_denoiser``), then frozen (eval mode, no
gradients, never updated). It is never a second trainable network and never part of a student
checkpoint.

The teacher is the slow part of distillation (AMSNet-P-E runs its network 18 times per image), so
``TeacherTargetCache`` runs it once per training image before training starts and keeps, per image,
the guide (BF(I_N), or another classical guide) and the teacher outputs I_DN and I_DN^r = A^-1(T(A(I_N))) for
every augmentation A of the configured subset, in one ``.npy`` file. They are stored as float16 (rounding
below 2.5e-4 in [0, 1], a sixteenth of an 8-bit level): 216 MB for a 12-megapixel photo with one rotated
view and the bilateral image, half of float32. Files are keyed by the teacher checkpoint's content hash,
the teacher settings, the augmentations, the bilateral filter and the image's pixels: a later run (or a
resumed one) reuses them, and a change to any part of the key computes new ones. Training items are random
crops of the whole image and of its targets, cut together (``data.transforms.make_item``), so they stay
aligned.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from amcfd.data.imageio import raw_to_float, to_tensor
from amcfd.data.transforms import make_item
from amcfd.engine import dist
from amcfd.engine.checkpoint import load_checkpoint
from amcfd.engine.inference import build_denoiser, seeded, tiled_denoise
from amcfd.ops.augment import NUM_MODES, augment, augment_inverse
from amcfd.ops.guides import GUIDES
from amcfd.progress import progress_bar
from amcfd.provenance import digest, file_sha256
from amcfd.registry import ConfigError, check_kwargs

log = logging.getLogger("amcfd")

# AMSNet-P-E, the AM-CFD teacher: P_2 multi-mask inference, then R^3 (keys merged over the checkpoint's).
AMSNET_PE = {"pd_test": 2, "r3": True}
CACHE_VERSION = 3   # bump when the stored layout changes (2: float16; 3: the guide's part named 'guide')


class FrozenTeacher:
    """A trained denoiser from a checkpoint, frozen; ``teacher(x)`` is its full inference pipeline.

    Args (option ``method.teacher`` of the distillation methods):
        checkpoint: our checkpoint (or one imported with scripts/import_checkpoint.py).
        method: keys merged over the checkpoint's method options; for an AMSNet checkpoint the default
            is AMSNet-P-E ({pd_test: 2, r3: true}); e.g. {pd_test: 1} or {r3: false} override it.
        network: the network entry, when the checkpoint does not record it.
        tile, tile_overlap: tiled inference of large photos (0 = whole images; set e.g. 512 when the
            training photos have several megapixels: the teacher's memory grows with the image).
        use_ema: use the EMA weights when the checkpoint has them.
        seed: the cached targets draw the teacher's masks from this seed (reproducible runs).
        batch: images per teacher call when the targets are cached.
        cache_dir: folder of the cached targets (null = <experiments_root>/teacher_targets, shared by
            the experiments of that root: files are keyed by teacher and image).
    """

    def __init__(self, checkpoint: str, method: dict | None = None, network: dict | None = None, tile: int = 0,
                 tile_overlap: int = 32, use_ema: bool = True, seed: int = 0, batch: int = 4,
                 cache_dir: str | None = None):
        from amcfd.options import validate

        if not checkpoint or not Path(checkpoint).is_file():
            raise ConfigError(f"option 'method.teacher.checkpoint': file does not exist: {checkpoint}")
        if not isinstance(batch, int) or batch < 1:
            raise ConfigError(f"option 'method.teacher.batch' must be an int >= 1, got {batch!r}")
        saved_method = (load_checkpoint(checkpoint).get("opt") or {}).get("method", {})
        method = dict(method or {})
        if method.get("type", saved_method.get("type", "AMSNet")) == "AMSNet":
            method = {**AMSNET_PE, **method}
        opt = {"name": "teacher", "seed": seed, "device": "cpu", "method": method,
               "path": {"pretrain_network": str(checkpoint), "use_ema": use_ema},
               "test": {"tile": tile, "tile_overlap": tile_overlap}}
        if network is not None:
            opt["network"] = network
        self.method, _ = build_denoiser(validate(opt, "valid"), torch.device("cpu"))
        self.method.requires_grad_(False).eval()
        self.checkpoint, self.tile, self.tile_overlap, self.seed, self.batch = \
            Path(checkpoint), tile, tile_overlap, seed, batch
        self.cache_dir = cache_dir
        self.settings = {"method": method, "network": network, "tile": tile, "tile_overlap": tile_overlap,
                         "use_ema": use_ema, "seed": seed}
        self.calls = 0           # images passed through the pipeline (tests check the cache with it)
        self._key: str | None = None

    @classmethod
    def check_options(cls, cfg, where: str = "method.teacher") -> dict:
        """Validate the option mapping without loading anything (a one-line ConfigError)."""
        if not isinstance(cfg, dict) or not cfg.get("checkpoint"):
            raise ConfigError(f"option '{where}' needs 'checkpoint: PATH' (the trained teacher)")
        check_kwargs(cls.__init__, cfg, where)
        return dict(cfg)

    def key(self) -> str:
        """Hash of the checkpoint's bytes and the teacher settings: what its outputs depend on."""
        if self._key is None:
            self._key = digest({"checkpoint": file_sha256(self.checkpoint), **self.settings})
        return self._key

    def parameters(self):
        return self.method.parameters()

    def _method_on(self, device: torch.device):
        """The teacher's method, moved to ``device`` first if it is elsewhere."""
        if next(self.method.parameters()).device != device:
            self.method.to(device)
        return self.method

    def network(self, device: torch.device | None = None) -> torch.nn.Module:
        """The raw network of the teacher's method (frozen, eval mode), moved to ``device`` if given: for
        methods that need more than the denoising pipeline, e.g. several hole sizes of ``ATBSN.forward_holes``."""
        return (self.method if device is None else self._method_on(device)).net

    @torch.no_grad()
    def __call__(self, noisy: torch.Tensor) -> torch.Tensor:
        """T(I_N) for (B, C, H, W) in [0, 1], clamped to [0, 1]; runs on the input's device."""
        self.calls += noisy.shape[0]
        return tiled_denoise(self._method_on(noisy.device).denoise, noisy, self.tile, self.tile_overlap).clamp(0, 1)

    def augmented(self, noisy: torch.Tensor, mode: int, fn=None) -> torch.Tensor:
        """I_DN^r = A^-1(T(A(I_N))) for the dihedral transform ``mode`` (ops/augment.py); ``fn`` instead of T."""
        return augment_inverse((fn or self)(augment(noisy, mode)), mode)

    @torch.no_grad()
    def pixel_share(self, noisy: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W): a posterior teacher's w_y (methods/amsnet.py ``AMSNet.pixel_share``), mean over channels:
        near 0 where its prior is sure, near 1 where it keeps the noisy pixel."""
        share = tiled_denoise(self._method_on(noisy.device).pixel_share, noisy, self.tile, self.tile_overlap)
        return share.mean(1, keepdim=True).clamp(0, 1)


def check_modes(modes, where: str) -> list[int]:
    """A non-empty list of distinct dihedral modes in 0..7."""
    if (not isinstance(modes, (list, tuple)) or not modes or len(set(modes)) != len(modes)
            or not all(isinstance(m, int) and not isinstance(m, bool) and 0 <= m < NUM_MODES for m in modes)):
        raise ConfigError(f"option '{where}' must be a list of distinct ints in 0..7 (ops/augment.py), "
                          f"got {modes!r}")
    return list(modes)


@dataclass
class TeacherTargets:
    """What a distillation method asks the engine to prepare: per image, BF(I_N), T(I_N) and T^r(I_N)
    for every mode in ``modes``. With ``cached`` the engine computes them once (TeacherTargetCache);
    otherwise the method computes them on each training batch (datasets too large to cache)."""

    teacher: FrozenTeacher
    modes: list[int]
    guide_options: dict = field(default_factory=dict)
    cached: bool = True
    guide: str = "bilateral"                          # ops/guides.py GUIDES; guide_options its kwargs
    share: bool = False                               # also the teacher's w_y maps (alpha: posterior)

    def __post_init__(self):
        """A teacher that cannot give w_y maps is refused when the targets are set up, before any training."""
        if self.share and not getattr(self.teacher.method, "posterior", False):
            raise ConfigError(f"option 'method.alpha: posterior' needs a teacher trained with 'method.posterior: "
                              f"true'; {self.teacher.checkpoint} was not")

    def _views(self, fn, noisy: torch.Tensor) -> torch.Tensor:
        """(B, 1 + len(modes), ...): [fn(I_N), A^-1(fn(A(I_N))) for A in modes]."""
        return torch.stack([fn(noisy)] + [self.teacher.augmented(noisy, m, fn) for m in self.modes], dim=1)

    def teacher_outputs(self, noisy: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, 1 + len(modes), C, H, W): [T(I_N), A^-1(T(A(I_N))) for A in modes]."""
        return self._views(self.teacher, noisy)

    def share_outputs(self, noisy: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, 1 + len(modes), 1, H, W): the teacher's w_y of I_N and A^-1(w_y(A(I_N)))."""
        return self._views(self.teacher.pixel_share, noisy)

    def guide_output(self, noisy: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, 1, C, H, W): the guide BF(I_N) of the whole image (bilateral, or ``guide``)."""
        return GUIDES[self.guide](noisy, **self.guide_options)[:, None]

    def parts(self) -> dict:
        """Cached parts: name -> (key of what it depends on, function). The guide (bilateral, NLM, the classical
        core) does not depend on the teacher, so changing one never recomputes the other."""
        def key(**what) -> str:
            return digest({**what, "version": CACHE_VERSION})[:20]

        parts = {"teacher": (key(teacher=self.teacher.key(), modes=self.modes), self.teacher_outputs),
                 "guide": (key(guide=self.guide, options=self.guide_options), self.guide_output)}
        if self.share:
            parts["share"] = (key(share=self.teacher.key(), modes=self.modes), self.share_outputs)
        return parts


def _image_key(name: str, noisy: np.ndarray) -> str:
    digest = hashlib.sha1(np.ascontiguousarray(noisy).tobytes())
    digest.update(f"{noisy.shape}{noisy.dtype}".encode())
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]
    return f"{safe}-{digest.hexdigest()[:16]}"


class TeacherTargetCache(Dataset):
    """A training dataset whose items carry cached targets: 'guide', 'target', 'target_aug' (+ 'aug_mode'; and
    'alpha', 'alpha_aug', the teacher's w_y maps, when the targets include them).

    ``dataset`` must expose whole images (``image_arrays(i)``, ``names``, ``crop_size``, ``augment``),
    as the folder, synthetic and SIDD-Medium datasets do. Files: ``folder/teacher-<key>/<image>.npy``
    (K, H, W, C) with the teacher outputs, ``folder/guide-<key>/<image>.npy`` with the guide. Each item
    is a random crop of image i and of its stored targets, cut together (one augmentation drawn per
    item from ``targets.modes``); the dataset's own flips are applied to all of them alike.
    """

    def __init__(self, dataset, targets: TeacherTargets, folder: str | Path, device: torch.device,
                 progress: bool = True):
        if not hasattr(dataset, "image_arrays"):
            raise ConfigError(f"dataset {type(dataset).__name__} cannot cache teacher targets (it does not expose "
                              f"whole images): set option 'method.targets: online'")
        self.dataset, self.modes = dataset, list(targets.modes)
        images = []
        for i in range(len(dataset.names)):
            arrays, name, _ = dataset.image_arrays(i)
            images.append(f"{_image_key(name, arrays['noisy'])}.npy")
        self.files = {}
        for part, (key, compute) in targets.parts().items():
            self.files[part] = [Path(folder) / f"{part}-{key}" / image for image in images]
            self._fill(part, compute, targets.teacher, device, progress)

    def _fill(self, part: str, compute, teacher: FrozenTeacher, device: torch.device, progress: bool) -> None:
        """Compute the missing files, this rank's share of them, in same-size batches; then wait for all."""
        files = self.files[part]
        missing = [i for i, f in enumerate(files) if not f.is_file()]
        mine = missing[dist.rank()::dist.world_size()]
        if mine:
            files[0].parent.mkdir(parents=True, exist_ok=True)
            log.info("%s targets: computing %d of %d images into %s", part, len(missing), len(files), files[0].parent)
            by_shape: dict[tuple, list[int]] = {}
            for i in mine:
                by_shape.setdefault(self._noisy(i).shape, []).append(i)
            bar = progress_bar(total=len(mine), desc=f"{part} targets", disable=not progress)
            for indices in by_shape.values():
                for start in range(0, len(indices), teacher.batch):
                    group = indices[start:start + teacher.batch]
                    noisy = torch.stack([self._noisy(i) for i in group]).to(device)
                    with seeded(teacher.seed, device):
                        stacks = compute(noisy).cpu()                       # (B, K, C, H, W)
                    for i, stack in zip(group, stacks):
                        _save_npy(files[i], stack.permute(0, 2, 3, 1).numpy())  # (K, H, W, C)
                    bar.update(len(group))
            bar.close()
        else:
            log.info("%s targets: all %d images cached in %s", part, len(files), files[0].parent)
        dist.barrier()

    def _noisy(self, i: int) -> torch.Tensor:
        arr = self.dataset.image_arrays(i)[0]["noisy"]
        return to_tensor(raw_to_float(arr) if arr.dtype != np.float32 else arr)   # (C, H, W)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        i = index % len(self.dataset.names)
        arrays, name, source = self.dataset.image_arrays(i)
        teacher = np.load(self.files["teacher"][i], mmap_mode="r")       # (1 + modes, H, W, C) float16
        j = int(torch.randint(len(self.modes), (1,)))
        arrays = {**arrays, "guide": np.load(self.files["guide"][i], mmap_mode="r")[0], "target": teacher[0],
                  "target_aug": teacher[1 + j]}
        if "share" in self.files:
            share = np.load(self.files["share"][i], mmap_mode="r")                 # (1 + modes, H, W, 1)
            arrays.update(alpha=share[0], alpha_aug=share[1 + j])
        item = make_item(arrays, name, self.dataset.crop_size, self.dataset.augment, source)
        item["aug_mode"] = self.modes[j]
        return item


def _save_npy(path: Path, array: np.ndarray) -> None:
    """np.save as float16 to a temporary name, then rename (a crash never leaves a truncated cache file)."""
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npy")
    np.save(tmp, np.ascontiguousarray(array, dtype=np.float16))
    os.replace(tmp, path)


def teacher_cache_folder(targets: TeacherTargets, experiments_root: str | Path) -> Path:
    return Path(targets.teacher.cache_dir or Path(experiments_root) / "teacher_targets")


def copy_frozen(net: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of a network (eval mode, no gradients): the S* of self-enhanced distillation."""
    frozen = copy.deepcopy(net)
    return frozen.requires_grad_(False).eval()
