"""Importers: a checkpoint of the AMSNet, AP-BSN, AM-BSN, AT-BSN, APR-RD or TM-BSN authors becomes one of ours
(for test.py, valid.py, distillation). ``import_checkpoint`` picks the layout from the keys and shapes
(``detect_layout``) unless it is given; scripts/import_checkpoint.py and the registry of released weights
(``amcfd.hub.weights``) call it.

Input: an AMSNet Lightning checkpoint (``state_dict`` with keys ``net.dn.branches.0.<denoiser key>``;
the official code never calls ``save_hyperparameters``, so the file does not reliably say which network
it holds). The network config comes from, in this order: ``--network-yaml`` (a file with a ``network:``
entry, or the entry itself), ``--arch``/``--preset``, or the weights' shapes (Restormer, UNet and DnCNN
fully; the other networks by matching one of their presets). Whatever the source, the config is checked
by building the network and loading the weights strictly before anything is written.

AP-BSN / AM-BSN (``apbsn``; AM-BSN uses AP-BSN's trainer): ``{'epoch', 'model_weight': {'denoiser':
state_dict with keys bsn.*}, 'optimizer_weight'}``. The network (DBSNl or AMBSN) and its widths are read from
the keys and shapes; the method is APBSN or AMBSN with the authors' inference (PD 2, R^3 on; ``--no-r3``).

Single-pass students (method SinglePass, one forward per image):
  * ``nbsn``: APR-RD's NBSN and TM-BSN's ``NBSN_SIDD.pth``/``NBSN_DND.pth``: a plain state_dict with keys
    ``enc1.conv.*`` ... ``dec1_1.*`` (or ``{'model_state_dict': sd}``) -> network NBSN; their range is ours, [0, 1].
  * ``atbsn``: AT-BSN's plain state_dicts (``module.`` stripped): the student N_BSN (``unet.*``) ->
    ATBSNStudent; an AT-BSN-D ``DoubleNet`` (``nbsn.unet.*`` + ``bsn.*``) -> its student; the teacher ATBSN
    (``unet.*`` + ``nin_*``) -> ATBSN with the authors' validation hole size 3. Their networks see [0, 255]: the
    network config gets ``value_range: 255`` (input x255, output /255), so valid.py gives their output / 255.
    APR-RD's ``NBSN_1.00M`` student and its AT-BSN teacher have the same keys but see [0, 1]: ``input_range=1``.
    Nothing in such a file tells the two apart, so ``detect_layout`` refuses to guess.

Output: ``{'format': 'amcfd-checkpoint-v1', 'network': state_dict, 'network_ema': None, 'iteration': 0,
'opt': {'network': {...}, 'method': {'type': 'AMSNet', ...}}, 'imported_from': {...}}``.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml

from amcfd.archs import build_arch, convert_state_dict, load_weights, preset_names, resolve_preset
from amcfd.engine.checkpoint import FORMAT, atomic_save
from amcfd.registry import METHODS, ConfigError, InputNotFound

AMSNET_ARCHS = ("Restormer", "NAFNetBase", "NAFNet", "UNet", "DnCNN", "DeamNet")


# ----------------------------------------------------------------------------- reading
def read_checkpoint(path: Path, unsafe: bool = False) -> Mapping[str, Any]:
    """torch.load a foreign checkpoint; weights-only unless ``unsafe`` (trusted files only)."""
    if not path.is_file():
        raise InputNotFound(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=not unsafe)
    except Exception as exc:
        hint = "" if unsafe else " (if you trust the file, retry with --unsafe-load)"
        raise RuntimeError(f"cannot read {path}: {type(exc).__name__}: {str(exc).splitlines()[0]}{hint}") from None


def denoiser_state_dict(ckpt: Mapping[str, Any], arch: str, branch: int) -> dict[str, torch.Tensor]:
    """The denoiser weights of one AMSNet branch (``net.dn.branches.<branch>.``), prefix stripped."""
    prefix = None if branch == 0 else f"net.dn.branches.{branch}."
    return convert_state_dict(arch, ckpt, prefix=prefix)


# ----------------------------------------------------------------------------- network config
def detect_arch(sd: Mapping[str, torch.Tensor]) -> str:
    """Which AMSNet denoiser these keys belong to."""
    keys = set(sd)
    if "patch_embed.proj.weight" in keys:
        return "Restormer"
    if "enc_conv0.weight" in keys:
        return "UNet"
    if "model.0.weight" in keys:
        return "DnCNN"
    if any(k.startswith("net2.") for k in keys):
        return "DeamNet"
    if "intro.weight" in keys:
        return "NAFNet" if any(".sca." in k for k in keys) else "NAFNetBase"
    raise ValueError(f"cannot tell the network from the checkpoint keys (first: {sorted(keys)[:4]}); "
                     f"pass --arch (one of {', '.join(AMSNET_ARCHS)}) or --network-yaml")


def _count_blocks(sd: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
    return len({m.group(1) for k in sd if (m := pattern.match(k))})


def infer_restormer(sd: Mapping[str, torch.Tensor]) -> dict:
    embed = sd["patch_embed.proj.weight"]                               # (dim, in, 3, 3)
    dim = embed.shape[0]
    levels = ["encoder_level1", "encoder_level2", "encoder_level3", "latent"]
    hidden = [sd[f"{lv}.0.ffn.project_out.weight"].shape[1] for lv in levels]   # int(dim * 2^l * f)
    factor = next((f for f in (2.66, hidden[0] / dim, (hidden[0] + 0.5) / dim)
                   if all(int(dim * 2**i * f) == h for i, h in enumerate(hidden))), hidden[0] / dim)
    return {"type": "Restormer", "inp_channels": embed.shape[1], "out_channels": sd["output.weight"].shape[0],
            "dim": dim, "num_blocks": [_count_blocks(sd, lv) for lv in levels],
            "num_refinement_blocks": _count_blocks(sd, "refinement"),
            "heads": [sd[f"{lv}.0.attn.temperature"].shape[0] for lv in levels],
            "ffn_expansion_factor": factor, "bias": "patch_embed.proj.bias" in sd,
            "LayerNorm_type": "WithBias" if "encoder_level1.0.norm1.body.bias" in sd else "BiasFree",
            "dual_pixel_task": "skip_conv.weight" in sd}


def infer_unet(sd: Mapping[str, torch.Tensor]) -> dict:
    first = sd["enc_conv0.weight"]                                      # (n_feature, in_nc, 3, 3)
    return {"type": "UNet", "in_nc": first.shape[1], "out_nc": sd["nin_c.weight"].shape[0],
            "n_feature": first.shape[0], "blindspot": False}


def infer_dncnn(sd: Mapping[str, torch.Tensor]) -> dict:
    convs = sorted((int(k.split(".")[1]), v) for k, v in sd.items()
                   if k.startswith("model.") and k.endswith(".weight") and v.dim() == 4)
    has_bn = any(k.endswith("running_mean") for k in sd)
    return {"type": "DnCNN", "in_nc": convs[0][1].shape[1], "out_nc": convs[-1][1].shape[0],
            "nc": convs[0][1].shape[0], "nb": len(convs), "act_mode": "BR" if has_bn else "R"}


INFER = {"Restormer": infer_restormer, "UNet": infer_unet, "DnCNN": infer_dncnn}


def shape_mismatches(cfg: Mapping[str, Any], sd: Mapping[str, torch.Tensor]) -> list[str]:
    """Keys/shapes of the network ``cfg`` builds (on the meta device: no memory) that differ from sd."""
    with torch.device("meta"):
        own = build_arch(cfg).state_dict()
    own = {k: tuple(v.shape) for k, v in own.items() if not k.endswith("num_batches_tracked")}
    theirs = {k: tuple(v.shape) for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    return ([f"missing {k}" for k in own if k not in theirs] + [f"unexpected {k}" for k in theirs if k not in own]
            + [f"{k} {theirs[k]} vs {own[k]}" for k in own if k in theirs and own[k] != theirs[k]])


def network_config(sd: Mapping[str, torch.Tensor], arch: str | None, preset: str | None,
                   network_yaml: Path | None) -> dict:
    """The ``network:`` entry for these weights (see the module docstring for the order)."""
    if network_yaml is not None:
        data = yaml.safe_load(network_yaml.read_text()) or {}
        cfg = data.get("network", data) if isinstance(data, dict) else None
        if not isinstance(cfg, dict) or "type" not in cfg:
            raise ConfigError(f"{network_yaml}: expected a 'network:' entry with a 'type'")
        return dict(cfg)
    arch = arch or detect_arch(sd)
    if preset is not None:
        return {"type": arch, "preset": preset}
    if arch in INFER:
        return INFER[arch](sd)
    matching = [p for p in preset_names(arch) if not shape_mismatches({"type": arch, "preset": p}, sd)]
    if not matching:
        raise ConfigError(f"the {arch} weights match none of its presets ({', '.join(preset_names(arch))}); "
                          f"pass --network-yaml with the network's options")
    return {"type": arch, "preset": matching[0]}


# ----------------------------------------------------------------------------- import
def import_amsnet(src: Path, dst: Path, arch: str | None = None, preset: str | None = None,
                  network_yaml: Path | None = None, branch: int = 0, pd_train: int = 5, pd_test: int = 2,
                  r3: bool = False, unsafe: bool = False) -> dict:
    """Convert, check (strict load) and write; returns the checkpoint written."""
    ckpt = read_checkpoint(src, unsafe)
    sd = denoiser_state_dict(ckpt, arch or "Restormer", branch)  # the name is only checked to be registered
    network = network_config(sd, arch, preset, network_yaml)
    problems = shape_mismatches(resolve_preset(network), sd)
    if problems:
        raise ConfigError(f"network {network} does not fit the weights of {src}: {len(problems)} differences, "
                          f"e.g. {'; '.join(problems[:3])}")
    net = build_arch(network)
    load_weights(net, sd, strict=True)
    method = {"type": "AMSNet", "pd_train": pd_train, "pd_test": pd_test, "r3": r3}
    return write_checkpoint(net, network, method, dst, {"path": str(src), "kind": "amsnet", "branch": branch,
                                                        **{k: ckpt[k] for k in ("epoch", "global_step") if k in ckpt}})


def write_checkpoint(net: torch.nn.Module, network: dict, method: dict, dst: Path, imported_from: dict) -> dict:
    """Check that the method options build around ``net``, then write our checkpoint; returns it."""
    METHODS.build(method, net, where="method")
    out = {"format": FORMAT, "network": net.state_dict(), "network_ema": None, "iteration": 0,
           "opt": {"network": network, "method": method}, "imported_from": imported_from}
    atomic_save(out, dst)
    return out


def bsn_network_config(sd: Mapping[str, torch.Tensor]) -> dict:
    """DBSNl or AMBSN with the widths of these weights (keys with the ``bsn.`` prefix removed)."""
    if "head.0.weight" not in sd or "tail.6.weight" not in sd:
        raise ConfigError(f"not an AP-BSN/AM-BSN network: no head.0/tail.6 weights (first keys: {list(sd)[:4]})")
    head, tail = sd["head.0.weight"], sd["tail.6.weight"]
    sizes = {"in_ch": head.shape[1], "out_ch": tail.shape[0], "base_ch": head.shape[0]}
    if "branch_local.head.0.mask" in sd:
        return {"type": "AMBSN", **sizes}
    if "branch1.body.0.mask" in sd or "branch1.body.0.weight" in sd:
        blocks = [k for k in sd if re.fullmatch(r"branch1\.body\.\d+\.body\.0\.weight", k)]   # the DCl blocks
        return {"type": "DBSNl", **sizes, "num_module": len(blocks)}
    raise ConfigError(f"unknown blind-spot network: keys {list(sd)[:4]}... are neither DBSNl's nor AMBSN's")


def import_bsn(src: Path, dst: Path, r3: bool = True, unsafe: bool = False) -> dict:
    """AP-BSN / AM-BSN trainer checkpoint -> ours (APBSN or AMBSN method), checked by a strict load."""
    ckpt = read_checkpoint(src, unsafe)
    sd = convert_state_dict("DBSNl", ckpt)                              # unwraps model_weight.denoiser, strips bsn.
    network = bsn_network_config(sd)
    net = build_arch(network)
    load_weights(net, sd, strict=True)
    method = {"type": "APBSN" if network["type"] == "DBSNl" else "AMBSN", "r3": r3}
    return write_checkpoint(net, network, method, dst, {"path": str(src), "kind": "apbsn",
                                                        **({"epoch": ckpt["epoch"]} if "epoch" in ckpt else {})})


def single_pass_network_config(kind: str, sd: Mapping[str, torch.Tensor], input_range: int = 255) -> dict:
    """NBSN (``kind`` nbsn) or ATBSNStudent/ATBSN (atbsn, whose networks see [0, ``input_range``]) with the
    sizes of these weights."""
    if kind == "nbsn":
        if "enc1.conv.weight" not in sd or "dec1_1.weight" not in sd:
            raise ConfigError(f"not an APR-RD/TM-BSN NBSN: no enc1.conv/dec1_1 weights (first keys: {list(sd)[:4]})")
        first = sd["enc1.conv.weight"]                                  # (mid, in, 3, 3)
        return {"type": "NBSN", "in_nc": first.shape[1], "out_nc": sd["dec1_1.weight"].shape[0],
                "mid_channels": first.shape[0]}
    if "unet.intro.conv.weight" not in sd or "unet.dec1.conv2.conv.weight" not in sd:
        raise ConfigError(f"not an AT-BSN network: no unet.intro/unet.dec1 weights (first keys: {list(sd)[:4]})")
    first = sd["unet.intro.conv.weight"]
    sizes = {"n_channels": first.shape[1], "mid_channels": first.shape[0], "bias": "unet.intro.conv.bias" in sd}
    if "nin_C.weight" in sd:                                            # the teacher
        return {"type": "ATBSN", **sizes, "n_output": sd["nin_C.weight"].shape[0], "hole_size": 3,
                "value_range": float(input_range)}
    return {"type": "ATBSNStudent", **sizes, "n_output": sd["unet.dec1.conv2.conv.weight"].shape[0],
            "value_range": float(input_range)}


def import_single_pass(kind: str, src: Path, dst: Path, unsafe: bool = False, input_range: int = 255) -> dict:
    """APR-RD/TM-BSN NBSN (``kind`` nbsn) or AT-BSN (atbsn; [0, ``input_range``]) weights -> ours with method
    SinglePass."""
    sd = convert_state_dict("NBSN", read_checkpoint(src, unsafe))      # unwraps model_state_dict, strips module.
    if kind == "atbsn" and any(k.startswith("nbsn.") for k in sd):     # AT-BSN-D DoubleNet: its student
        sd = {k[len("nbsn."):]: v for k, v in sd.items() if k.startswith("nbsn.")}
    network = single_pass_network_config(kind, sd, input_range)
    net = build_arch(network)
    load_weights(net, sd, strict=True)
    return write_checkpoint(net, network, {"type": "SinglePass"}, dst,
                            {"path": str(src), "kind": kind, "input_range": 1 if kind == "nbsn" else input_range})


# ----------------------------------------------------------------------------- layouts
LAYOUTS = {
    "amsnet": "AMSNet: a Lightning checkpoint or a bare denoiser (Restormer, NAFNet, UNet, DnCNN, DeamNet), "
              "input 0-1",
    "apbsn": "AP-BSN / AM-BSN trainer checkpoint (DBSNl or AMBSN), input 0-255",
    "nbsn": "NBSN of TM-BSN and APR-RD (1.02M), input 0-1",
    "atbsn": "AT-BSN: N_BSN student, ATBSN teacher or AT-BSN-D DoubleNet (input 0-255); APR-RD's NBSN_1.00M "
             "and its teacher have the same keys with input 0-1",
}
INPUT_RANGES = {"amsnet": (1,), "apbsn": (255,), "nbsn": (1,), "atbsn": (255, 1)}   # the first is the default


def _flat_keys(obj: Any) -> set[str]:
    """The state_dict keys of a checkpoint, containers unwrapped and common prefixes stripped."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return set(convert_state_dict("NBSN", obj))
        except ValueError:
            return set()


def detect_layout(obj: Any, source: str = "the checkpoint") -> tuple[str, int]:
    """(layout, input range) of a loaded foreign checkpoint, from its keys alone. A file whose keys fit layouts
    with different input ranges (AT-BSN's N_BSN or ATBSN, 0-255, against APR-RD's NBSN_1.00M or its teacher,
    0-1) is refused: a ConfigError lists the candidates."""
    keys = _flat_keys(obj)
    if any(".branches." in k or k.startswith("branches.") for k in keys):
        return "amsnet", 1
    if {"head.0.weight", "tail.6.weight"} <= keys:
        return "apbsn", 255
    if {"enc1.conv.weight", "dec1_1.weight"} <= keys:
        return "nbsn", 1
    if any(k.startswith("nbsn.unet.") for k in keys):                 # AT-BSN-D's DoubleNet: AT-BSN's only
        return "atbsn", 255
    if "unet.intro.conv.weight" in keys:
        raise ConfigError(
            f"{source}: ambiguous layout, its keys fit 'atbsn --input-range 255' (AT-BSN's N_BSN or ATBSN) and "
            "'atbsn --input-range 1' (APR-RD's NBSN_1.00M or its AT-BSN teacher); pass --from atbsn and "
            "--input-range 255 or 1")
    try:
        detect_arch(keys)
    except ValueError:
        raise ConfigError(f"{source}: unknown layout (first keys: {sorted(keys)[:4]}); pass --from, one of "
                          f"{', '.join(LAYOUTS)}") from None
    return "amsnet", 1


def import_checkpoint(src: Path, dst: Path, kind: str | None = None, input_range: int | None = None,
                      r3: bool | None = None, unsafe: bool = False, **amsnet_options) -> dict:
    """Import ``src`` (layout ``kind``, or detected) into our checkpoint ``dst``; returns what was written.
    ``input_range``: the range the network sees, 1 or 255 (see ``INPUT_RANGES``; only atbsn has a choice).
    ``r3``: write method.r3 (default: on for apbsn, as its authors infer; off for amsnet).
    ``amsnet_options``: the other keyword arguments of ``import_amsnet`` (arch, preset, branch, ...)."""
    src, dst = Path(src), Path(dst)
    if kind is None:
        kind, detected_range = detect_layout(read_checkpoint(src, unsafe), str(src))
        input_range = input_range or detected_range
    if kind not in LAYOUTS:
        raise ConfigError(f"unknown layout {kind!r}; known: {', '.join(LAYOUTS)}")
    input_range = input_range or INPUT_RANGES[kind][0]
    if input_range not in INPUT_RANGES[kind]:
        raise ConfigError(f"input range {input_range} is not one of layout {kind}'s: "
                          f"{', '.join(map(str, INPUT_RANGES[kind]))}")
    if kind == "apbsn":
        return import_bsn(src, dst, r3 is not False, unsafe)
    if kind in ("nbsn", "atbsn"):
        return import_single_pass(kind, src, dst, unsafe, input_range)
    return import_amsnet(src, dst, r3=bool(r3), unsafe=unsafe, **amsnet_options)
