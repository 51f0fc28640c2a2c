"""The denoiser zoo: plain ``nn.Module`` networks, the same as the authors' (names, arguments, weights).

Registered architectures (``amcfd.registry.ARCHS``): ``Restormer``, ``NAFNetBase`` (AMSNet's gate-free
NAFNet baseline), ``NAFNet`` (the NAFNet paper network, the AM-CFD student), ``DnCNN``, ``UNet``,
``DeamNet`` (alias ``Deam``, the authors' class name); the blind-spot networks ``DBSNl`` (AP-BSN),
``AMBSN`` (AM-BSN) and ``ATBSN`` (AT-BSN, tunable blind spot; APR-RD's teacher); the single-pass students
``ATBSNStudent`` (AT-BSN's N_BSN) and ``NBSN`` (APR-RD's and TM-BSN's 1.02M U-Net).

Building (the public entry point used by option files)::

    net = build_arch({'type': 'Restormer', 'dim': 48, 'num_blocks': [4, 6, 6, 8], ...})

Every constructor takes the keyword arguments of the authors' implementation, so a ``network:`` entry
can be copied from AMSNet's configs. Unknown keys fail with a one-line ``ConfigError``.

Presets: each architecture class has a ``PRESETS`` dict of named keyword sets. ``preset: NAME`` in
the config starts from that set; any keys written next to it override the preset's values::

    build_arch({'type': 'Restormer', 'preset': 'published'})            # the paper's size
    build_arch({'type': 'UNet', 'preset': 'published', 'n_feature': 64})  # published, narrower

Every architecture has ``published`` (the size the authors' configs use; its parameter count is
tested against the reference files) and ``small`` (a fast CPU size for demos and tests). Extra ones
are listed in each class docstring. ``preset_names(type)`` lists them.

Any input size works: networks that need H, W divisible by 2^k pad internally and crop back
(reflect padding, except NAFNet/NAFNetBase which keep the authors' zero padding of bottom/right).

Memory: ``Restormer``, ``NAFNet`` and ``NAFNetBase`` take ``checkpointing: true`` to recompute each
block's activations in the backward pass (training mode only; same gradients, less memory).

Foreign checkpoints::

    sd = convert_state_dict('Restormer', torch.load(path, map_location='cpu', weights_only=True))
    load_weights(net, sd)              # strict: one clear error naming missing/unexpected keys

``convert_state_dict`` unwraps the usual containers (Lightning ``state_dict``, BasicSR
``params``/``params_ema``, ``model_state_dict``, AP-BSN ``model_weight.denoiser``) and strips prefixes
shared by every key (``module.``, ``_orig_mod.``, AMSNet's ``net.dn.branches.0.``, ``net.``, ``bsn.``...).
The key names themselves are the authors', so no renaming is needed for the networks here.
"""
from __future__ import annotations

import re
import warnings
from typing import Any, Mapping, NamedTuple

import torch
from torch import nn

from amcfd.registry import ARCHS, ConfigError, did_you_mean

__all__ = ["build_arch", "preset_names", "convert_state_dict", "load_weights", "LoadReport", "ARCHS",
           "input_channels", "input_channels_option"]


def preset_names(arch_type: str) -> list[str]:
    """Names of the presets of a registered architecture."""
    return sorted(getattr(ARCHS.get(arch_type), "PRESETS", {}))


def input_channels(net: nn.Module) -> int:
    """Image channels ``net`` takes: the input channels of its first ``Conv2d`` (3 if it has none)."""
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    return 3


def input_channels_option(arch_type: str) -> str | None:
    """The constructor argument of a registered architecture that sets its input channels (``in_nc``,
    ``in_ch``, ``img_channel``...), or None when it has none."""
    import inspect

    params = inspect.signature(ARCHS.get(arch_type)).parameters
    return next((p for p in params if re.fullmatch(r"(in|inp|img|n)_?(nc|ch|chan|channels?)", p)), None)


def resolve_preset(cfg: Mapping[str, Any], where: str = "network") -> dict:
    """``{'type', 'preset', **kw}`` -> ``{'type', **preset_values, **kw}`` (a new dict)."""
    if not isinstance(cfg, Mapping) or "type" not in cfg:
        raise ConfigError(f"option '{where}' needs a 'type' key naming a registered architecture")
    cfg = dict(cfg)
    preset = cfg.pop("preset", None)
    if preset is None:
        return cfg
    presets = getattr(ARCHS.get(cfg["type"], where=f"{where}.type"), "PRESETS", {})
    if preset not in presets:
        raise ConfigError(f"unknown option '{where}.preset: {preset}' for {cfg['type']}"
                          f"{did_you_mean(preset, presets)}; known: {', '.join(sorted(presets)) or 'none'}")
    return {"type": cfg.pop("type"), **presets[preset], **cfg}


def build_arch(cfg: Mapping[str, Any], where: str = "network") -> nn.Module:
    """Build a registered network from ``{'type': Name, ['preset': NAME,] **kwargs}``; never mutates cfg."""
    return ARCHS.build(resolve_preset(cfg, where), where=where)


# Containers that hold a state_dict, tried in this order (BasicSR loads 'params' unless told otherwise).
_CONTAINER_KEYS = ("state_dict", "params", "params_ema", "model_state_dict", "model_weight", "denoiser",
                   "model", "net", "network")
# Prefixes removed when every key carries them, repeatedly, in this order.
_PREFIXES = ("module.", "_orig_mod.", "net.dn.branches.0.", "dn.branches.0.", "net.", "bsn.", "denoiser.")


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(torch.is_tensor(v) for v in obj.values())


def convert_state_dict(arch_type: str, state_dict: Mapping[str, Any], param_key: str | None = None,
                       prefix: str | None = None) -> dict[str, torch.Tensor]:
    """Map a checkpoint as published by the authors (or a training framework) to our key names.

    ``param_key`` picks the container explicitly (e.g. ``params_ema``); ``prefix`` strips one given
    prefix instead of the automatic ones (e.g. ``net.dn.branches.1.``). Keys without it are dropped
    then, and the number dropped is reported by a warning, never silently.
    """
    ARCHS.get(arch_type, where="arch_type")  # fail early, with the list of known names
    obj: Any = state_dict
    if param_key is not None:
        if not isinstance(obj, Mapping) or param_key not in obj:
            keys = list(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
            raise ValueError(f"checkpoint has no '{param_key}' entry (top-level keys: {keys})")
        obj = obj[param_key]
    while isinstance(obj, Mapping) and not _is_state_dict(obj):
        inner = next((k for k in _CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            raise ValueError(f"cannot find a state_dict in the checkpoint for {arch_type}: top-level keys "
                             f"{list(obj)[:10]} (pass param_key=...)")
        obj = obj[inner]
    if not _is_state_dict(obj):
        raise ValueError(f"checkpoint for {arch_type} is a {type(obj).__name__}, not a state_dict")

    sd = dict(obj)
    if prefix is not None:
        kept = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if not kept:
            raise ValueError(f"no key of the checkpoint starts with '{prefix}' (first keys: {list(sd)[:5]})")
        if len(kept) < len(sd):
            left_out = [k for k in sd if not k.startswith(prefix)]
            warnings.warn(f"convert_state_dict: {len(left_out)} keys without prefix '{prefix}' were left out "
                          f"(e.g. {left_out[:3]})", stacklevel=2)
        return kept
    stripped = True
    while stripped:
        stripped = False
        for p in _PREFIXES:
            if all(k.startswith(p) for k in sd):
                sd = {k[len(p):]: v for k, v in sd.items()}
                stripped = True
    return sd


class LoadReport(NamedTuple):
    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]


def _few(keys: list[str], n: int = 5) -> str:
    more = f", ... ({len(keys)} in all)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_weights(net: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> LoadReport:
    """Load ``state_dict`` into ``net``, checking keys and shapes first.

    strict=True: any missing, unexpected or shape-mismatched key raises one RuntimeError naming a few of
    each (with counts) and nothing is loaded. strict=False: the matching tensors are loaded and a warning
    lists what was left out. Returns the LoadReport either way.
    """
    not_tensors = [k for k, v in state_dict.items() if not torch.is_tensor(v)]
    if not_tensors:
        raise ValueError(f"not a state_dict: {len(not_tensors)} entries are not tensors ({_few(not_tensors)}); "
                         "use convert_state_dict to unwrap a checkpoint")
    own = net.state_dict()
    # BatchNorm fills a missing num_batches_tracked itself, as torch does for old checkpoints.
    missing = [k for k in own if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state_dict.items()
                  if k in own and tuple(v.shape) != tuple(own[k].shape)]
    report = LoadReport(missing, unexpected, mismatched)
    kinds = (("missing", missing), ("unexpected", unexpected),
             ("shape-mismatched (checkpoint vs net)", mismatched))
    problems = [f"{len(keys)} {what}: {_few(keys)}" for what, keys in kinds if keys]
    name = type(net).__name__
    if problems and strict:
        raise RuntimeError(f"checkpoint does not fit {name}: " + "; ".join(problems))
    if problems:
        warnings.warn(f"loading {name} non-strictly: " + "; ".join(problems), stacklevel=2)
    bad = {m.split(" ")[0] for m in mismatched}
    net.load_state_dict({k: v for k, v in state_dict.items() if k in own and k not in bad}, strict=False)
    return report
