"""Option files: load YAML (+ ``base:`` files), apply ``--set`` overrides, validate, save.

Every option has its default here, in ``DEFAULTS``, documented next to it. Sections built by a
registry (``network``, ``method``, ``datasets.*``) are checked against the registered class's
signature instead: their defaults are the constructor's defaults.
"""
from __future__ import annotations

import copy
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterable

import yaml

from amcfd.registry import (
    ARCHS,
    DATASETS,
    METHODS,
    METRICS,
    ConfigError,
    check_kwargs,
    compatible,
    did_you_mean,
    type_name,
)

REQUIRED = object()  # marker: the key has no default and must be given
CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # the packaged option files (a checkout's options/)

DEFAULTS: dict[str, Any] = {
    "name": REQUIRED,            # experiment name: experiments/<name>/, results/<name>/
    "seed": 0,                   # global seed; rank r uses seed + r for masks and augmentation;
                                 # valid.py/test.py draw every image's masks from it
    "device": "auto",            # auto (cuda if available) | cpu | cuda | cuda:N
    "network": REQUIRED,         # {type: <architecture>, **its kwargs}; see amcfd/archs
    "method": {"type": "AMSNet"},  # {type: <training scheme>, **its kwargs}; see amcfd/methods
    "datasets": {},              # named sets: train, val / val_<name>, test / test_<name>
    "train": {
        "total_iter": 1000,      # number of optimizer steps
        "optim": "AdamW",        # Adam | AdamW
        "lr": 1.0e-4,            # peak learning rate
        "betas": [0.9, 0.999],   # Adam(W) betas
        "weight_decay": 0.0,     # Adam(W) weight decay
        "scheduler": "cosine",   # cosine | multistep | constant
        "warmup_iter": 0,        # linear warm-up steps (all schedulers)
        "eta_min": 1.0e-7,       # cosine: final learning rate
        "milestones": [],        # multistep: iterations where lr is multiplied by gamma (scaled to a fitted total)
        "gamma": 0.5,            # multistep: factor
        "grad_clip": 0.0,        # max gradient norm; 0 = off
        "ema_decay": 0.0,        # EMA of weights (parameters and buffers); 0 = off, e.g. 0.999
        "amp": False,            # false | bf16 | fp16: autocast; bf16 also on CPUs with AVX512-BF16/AMX (else
                                 # float32 with a warning); fp16 on CUDA only
        "max_minutes": 0.0,      # wall-clock budget from the start of the run; 0 = none. After a few steps the
                                 # run measures its speed and, if total_iter would not fit, shortens it (the
                                 # schedule then ends in time); never lengthens it, unless fill_budget
        "fill_budget": False,    # with max_minutes: total_iter becomes the steps that fit, raised as well as lowered
        "reuse_cpu_memory": True,  # CPU + glibc: keep freed activation memory for the next step instead of
                                 # returning it to the system (engine/memory.py); the process keeps its peak memory
    },
    "val": {
        "val_freq": 1000,        # validate every N iterations (and at the end); 0 = only at the end
        "metrics": ["psnr", "ssim"],  # registered metric names, first one tracked for the best checkpoint
        "better": "higher",      # higher | lower: how the tracked metric improves
        "tile": 0,               # tiled inference tile size in pixels; 0 = whole image
        "tile_overlap": 32,      # overlap between tiles (blended seams)
        "num_visuals": 2,        # noisy/denoised/clean triplets written to TensorBoard per set
    },
    "logger": {
        "print_freq": 100,       # log losses / lr every N iterations
        "save_checkpoint_freq": 1000,  # checkpoint every N iterations (and at the end)
        "keep_last": 3,          # checkpoints kept besides best.pth
        "use_tb_logger": True,   # TensorBoard events in experiments/<name>/tb/
        "progress_bar": True,    # tqdm bar on rank 0
    },
    "test": {
        "tile": 0,               # tile size for test.py/valid.py; 0 = whole image
        "tile_overlap": 32,      # overlap between tiles
        "input": None,           # test.py: file or folder of photos (or --input)
        "output": None,          # test.py: output folder (or --output); default results/<name>/images
        "save_img": False,       # valid.py: also write denoised images
        "tile_batch": 0,         # tiles per forward; 0 = automatic (CPU 1, accelerators 4)
        "amp": None,             # autocast the inference: bf16 (CUDA, or a CPU with AVX512-BF16/AMX), fp16 (CUDA)
        "channels_last": False,  # run the network on channels-last tensors (faster convolutions on some devices)
        "compile": False,        # torch.compile the network (falls back to eager, with a warning, where unavailable)
    },
    "path": {
        "experiments_root": "experiments",  # where training runs go
        "results_root": "results",          # where valid.py/test.py write
        "pretrain_network": None,  # checkpoint to start from (train) or evaluate (valid/test)
        "strict_load": True,       # strict state_dict loading of pretrain_network
        "use_ema": True,           # valid/test: use the EMA weights when the checkpoint has them
    },
    "dist": {
        "backend": "auto",       # auto (nccl on CUDA, gloo on CPU) | nccl | gloo
    },
}

# Free-form sections: any key allowed (checked against a registry instead).
REGISTRY_SECTIONS = {"network": ARCHS, "method": METHODS}
LOADER_KEYS = {"batch_size": 1, "num_workers": 0, "pin_memory": True, "persistent_workers": True,
               "prefetch_factor": 2}
OUTPUT_PATH_KEYS = {"experiments_root", "results_root", "output"}
CHOICES = {
    ("train", "optim"): ("Adam", "AdamW"),
    ("train", "scheduler"): ("cosine", "multistep", "constant"),
    ("train", "amp"): (False, "bf16", "fp16"),
    ("val", "better"): ("higher", "lower"),
}


# ----------------------------------------------------------------------------- loading
def find_option_file(path: str | os.PathLike) -> Path:
    """``path``; when it is missing and reads options/..., the packaged copy: options/train/demo.yml ->
    CONFIG_DIR/train/demo.yml, so the README's option file names work from any folder."""
    path = Path(path)
    if path.exists() or path.is_absolute() or path.parts[:1] != ("options",) or ".." in path.parts:
        return path
    packaged = CONFIG_DIR.joinpath(*path.parts[1:])
    return packaged if packaged.is_file() else path


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"option file not found: {path}")
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"option file {path}{where} is not valid YAML: "
                          f"{getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"option file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def merge(base: dict, override: dict) -> dict:
    """Recursive merge (new dict). A mapping whose ``type`` changes is replaced, not merged."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict) and old.get("type") == value.get("type", old.get(
                "type")):
            out[key] = merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _load_with_bases(path: Path, seen: tuple = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"option file {path} includes itself through 'base'")
    data = _read_yaml(path)
    bases = data.pop("base", None) or []
    if isinstance(bases, str):
        bases = [bases]
    merged: dict = {}
    for b in bases:
        merged = merge(merged, _load_with_bases(path.parent / b, seen + (path,)))
    return merge(merged, data)


def parse_scalar(text: str) -> Any:
    """A YAML scalar (no eval): '1e-4' -> 1e-4 (YAML 1.1 would keep it a string), 'true' -> True."""
    value = yaml.safe_load(text) if text != "" else ""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(opt: dict, overrides: Iterable[str]) -> dict:
    """Apply ``a.b.c=value`` overrides; missing keys are created. Setting ``X.type`` to a new
    registered name resets section X to that type's own defaults."""
    opt = copy.deepcopy(opt)
    items = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        key, text = item.split("=", 1)
        key = key.strip()
        items.append((key, text if is_path_key(key.split(".")[-1]) else parse_scalar(text)))
    items.sort(key=lambda kv: not kv[0].endswith(".type"))  # type switches first
    for key, value in items:
        parts = key.split(".")
        node = opt
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        if parts[-1] == "type" and node.get("type") not in (None, value):
            node.clear()
        node[parts[-1]] = value
    return opt


# Numeric options and the smallest value each accepts (0 keeps its documented meaning where it has one).
MINIMUM = {
    ("train", "total_iter"): 1, ("train", "lr"): 0.0, ("train", "warmup_iter"): 0, ("train", "eta_min"): 0.0,
    ("train", "weight_decay"): 0.0, ("train", "grad_clip"): 0.0, ("train", "ema_decay"): 0.0,
    ("train", "max_minutes"): 0.0, ("val", "val_freq"): 0, ("val", "tile"): 0, ("val", "tile_overlap"): 0,
    ("val", "num_visuals"): 0, ("logger", "print_freq"): 1, ("logger", "save_checkpoint_freq"): 1,
    ("logger", "keep_last"): 0, ("test", "tile"): 0, ("test", "tile_overlap"): 0,
    ("test", "tile_batch"): 0,
}
LOADER_MINIMUM = {"batch_size": 1, "num_workers": 0, "prefetch_factor": 1}


def _check_minimum(name: str, value: Any, minimum) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < minimum:
        raise ConfigError(f"option '{name}' must be >= {minimum}, got {value!r}")


def _compatible(default: Any, value: Any) -> bool:
    if default is REQUIRED:
        return True
    if default is False and value in ("bf16", "fp16"):  # train.amp: false | bf16 | fp16
        return True
    return compatible(default, value)


def _fill_defaults(opt: dict, defaults: dict, prefix: str) -> dict:
    out = {}
    for key, default in defaults.items():
        if key in REGISTRY_SECTIONS or key == "datasets" or not isinstance(default, dict):
            out[key] = copy.deepcopy(opt[key]) if key in opt else default
        else:
            out[key] = _fill_defaults(opt.get(key) or {}, default, f"{prefix}{key}.")
    for key in opt:
        if key not in defaults:
            raise ConfigError(f"unknown option '{prefix}{key}'{did_you_mean(key, defaults)}")
    return out


def resolved_options(opt: dict) -> dict:
    """A copy of ``opt`` with every default filled in: the option defaults (``DEFAULTS``), the network's preset
    and the network's and method's constructor defaults; no path is checked (what a run's identity hashes)."""
    import inspect

    from amcfd.archs import resolve_preset

    out = _fill_defaults(copy.deepcopy(opt), DEFAULTS, "")
    for section, registry in (("network", ARCHS), ("method", METHODS)):
        cfg = out.get(section)
        if isinstance(cfg, dict) and "type" in cfg:
            cfg = resolve_preset(cfg) if section == "network" else cfg
            params = inspect.signature(registry.get(cfg["type"], where=f"{section}.type")).parameters.values()
            out[section] = {**{p.name: p.default for p in params if p.default is not p.empty and p.name != "net"},
                            **cfg}
    return out


def _check_section(opt: dict, defaults: dict, prefix: str) -> None:
    for key, default in defaults.items():
        value = opt.get(key)
        name = f"{prefix}{key}"
        if default is REQUIRED:
            continue
        if isinstance(default, dict) and key not in REGISTRY_SECTIONS and key != "datasets":
            if not isinstance(value, dict):
                raise ConfigError(f"option '{name}' must be a mapping, got {type_name(value)}")
            _check_section(value, default, name + ".")
        elif not _compatible(default, value):
            raise ConfigError(f"option '{name}' must be {type_name(default)}, got {type_name(value)} "
                              f"({value!r})")
        if tuple(name.split(".")) in MINIMUM:
            _check_minimum(name, value, MINIMUM[tuple(name.split("."))])
        choices = CHOICES.get(tuple(name.split(".")))
        if choices and value not in choices:
            raise ConfigError(f"option '{name}' must be one of {', '.join(map(str, choices))}, "
                              f"got {value!r}{did_you_mean(value, map(str, choices))}")


def is_path_key(key: str) -> bool:
    """Keys that name files or folders: root, input, output, pretrain_network, checkpoint, *_root, *_path,
    *_file, *_mat, *_dir, *_checkpoint. Their values are text even when they look like numbers (a folder
    named 20240101)."""
    return key in ("root", "input", "output", "pretrain_network", "checkpoint") or key.endswith(
        ("_root", "_path", "_file", "_mat", "_dir", "_checkpoint"))


def _paths_as_text(section: Any) -> None:
    """YAML reads a folder named 20240101 as a number: path values become text (in place)."""
    if isinstance(section, dict):
        for key, value in section.items():
            if isinstance(value, dict):
                _paths_as_text(value)
            elif is_path_key(key) and isinstance(value, (int, float)) and not isinstance(value, bool):
                section[key] = str(value)


def _check_paths(section: Any, prefix: str, must_exist: bool = True) -> None:
    """Keys that name input files or folders (``is_path_key`` except outputs) must exist when set. A released
    model's name (hub/weights.py) is resolved here, at the boundary, into its local converted file (fetched once):
    the engine reads local files only."""
    from amcfd.hub.weights import is_release_name, resolve_checkpoint

    if not isinstance(section, dict):
        return
    for key, value in section.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            _check_paths(value, name + ".", must_exist)
            continue
        if is_path_key(key) and key not in OUTPUT_PATH_KEYS and isinstance(value, str) and value:
            if is_release_name(value):
                section[key] = str(resolve_checkpoint(value))
            elif must_exist and not Path(value).expanduser().exists():
                raise ConfigError(f"option '{name}': file or folder does not exist: {value}")


def dataset_sets(opt: dict, phase: str) -> dict:
    """The named dataset entries a phase uses: train -> train + val*; valid -> val* + test*; test (denoising
    photos, test.py) -> test* only, so an option file's validation sets need not exist on the user's machine."""
    sets = opt.get("datasets") or {}
    prefixes = {"train": ("train", "val"), "test": ("test",)}.get(phase, ("val", "test"))
    return {k: v for k, v in sets.items() if k.split("_")[0] in prefixes}


def split_loader_keys(cfg: dict) -> tuple[dict, dict]:
    """Separate DataLoader keys (batch_size, num_workers, ...) from dataset kwargs."""
    loader = {k: cfg.get(k, d) for k, d in LOADER_KEYS.items()}
    dataset = {k: v for k, v in cfg.items() if k not in LOADER_KEYS}
    return dataset, loader


def _check_registry_entry(cfg: Any, registry, where: str, required: bool = False) -> None:
    if not isinstance(cfg, dict) or "type" not in cfg:
        raise ConfigError(f"option '{where}' needs a 'type' key naming a registered {registry.kind}")
    check_kwargs(registry.get(cfg["type"], where=f"{where}.type"),
                 {k: v for k, v in cfg.items() if k != "type"}, where, required=required)


def validate(opt: dict, phase: str = "train") -> dict:
    """Fill defaults and check a resolved option dict; returns a new dict. phase: train|valid|test."""
    if not isinstance(opt, dict):
        raise ConfigError("options must be a mapping")
    method_given = opt.get("method")
    opt = _fill_defaults(opt, DEFAULTS, "")
    for section in ("datasets", "path", "test", "method"):
        _paths_as_text(opt[section])
    if opt["name"] is REQUIRED or not opt["name"]:
        raise ConfigError("missing required option 'name'")
    if not isinstance(opt["name"], str) or any(c in opt["name"] for c in "/\\"):
        raise ConfigError(f"option 'name' must be a plain folder name, got {opt['name']!r}")
    _check_section(opt, DEFAULTS, "")
    if opt["device"] not in ("auto", "cpu") and not re.fullmatch(r"cuda(:\d+)?", str(opt["device"])):
        raise ConfigError(f"option 'device' must be auto, cpu, cuda or cuda:N, got {opt['device']!r}")
    classical = isinstance(method_given, dict) and method_given.get("type") == "Classical"   # no network
    if opt["network"] is REQUIRED:
        if phase != "train" and classical:
            opt["network"] = None
        elif phase == "train" or not opt["path"]["pretrain_network"]:
            raise ConfigError("missing required option 'network' ({type: <architecture>, ...})")
        opt["network"] = None  # valid/test: taken from the checkpoint
    else:
        from amcfd.archs import resolve_preset  # network: {type, preset: NAME, **overrides}

        if not isinstance(opt["network"], dict) or "type" not in opt["network"]:
            raise ConfigError("option 'network' needs a 'type' key naming a registered architecture")
        _check_registry_entry(resolve_preset(opt["network"]), ARCHS, "network")
    if phase != "train" and opt["path"]["pretrain_network"] and (
            not method_given or (isinstance(method_given, dict) and "type" not in method_given)):
        opt["method"] = dict(method_given or {})  # valid/test: type (and training keys) from the checkpoint
    else:
        from amcfd.noise.auto import auto_options  # 'auto' values are chosen at training (noise/auto.py)

        auto = auto_options(opt["method"]) if isinstance(opt["method"], dict) and "type" in opt["method"] else []
        _check_registry_entry({k: v for k, v in opt["method"].items() if k not in auto}, METHODS, "method")
    if not isinstance(opt["datasets"], dict):
        raise ConfigError("option 'datasets' must be a mapping of named sets")
    for key, cfg in opt["datasets"].items():
        if key.split("_")[0] not in ("train", "val", "test"):
            raise ConfigError(f"unknown dataset entry 'datasets.{key}' (names start with train, val or test)")
        if not isinstance(cfg, dict):
            raise ConfigError(f"option 'datasets.{key}' must be a mapping with a 'type'")
        dataset_cfg, loader = split_loader_keys(cfg)
        for lk, lv in loader.items():
            if not _compatible(LOADER_KEYS[lk], lv):
                raise ConfigError(f"option 'datasets.{key}.{lk}' must be {type_name(LOADER_KEYS[lk])}, "
                                  f"got {type_name(lv)} ({lv!r})")
            if lk in LOADER_MINIMUM:
                _check_minimum(f"datasets.{key}.{lk}", lv, LOADER_MINIMUM[lk])
        _check_registry_entry(dataset_cfg, DATASETS, f"datasets.{key}", required=True)
    for section in ("val", "test"):
        tile, overlap = opt[section]["tile"], opt[section]["tile_overlap"]
        if tile and overlap >= tile:
            raise ConfigError(f"option '{section}.tile_overlap' ({overlap}) must be smaller than "
                              f"'{section}.tile' ({tile})")
    if phase == "train" and "train" not in opt["datasets"]:
        raise ConfigError("missing required option 'datasets.train'")
    for name in opt["val"]["metrics"]:
        METRICS.get(name, where="val.metrics")
    for key, cfg in dataset_sets(opt, phase).items():
        _check_paths(cfg, f"datasets.{key}.")
    _check_paths(opt["path"], "path.")
    _check_paths(opt["method"], "method.", must_exist=False)     # released names (a teacher's) made local files
    if phase == "test":
        _check_paths({"input": opt["test"]["input"]}, "test.")
    return opt


def load_options(path: str | os.PathLike, overrides: Iterable[str] = (), phase: str | None = None) -> dict:
    """Read an option file (``find_option_file``) with its bases and overrides; validate when ``phase`` is given."""
    opt = apply_overrides(_load_with_bases(find_option_file(path)), overrides)
    return validate(opt, phase) if phase else opt


# ----------------------------------------------------------------------------- saving
def save_options(opt: dict, folder: Path, extra: dict | None = None) -> None:
    """Write the resolved options into ``folder``/options.yml, and the command line, version, git commit
    and ``extra`` (e.g. the ``auto`` choices and what they were measured from) into run.yml."""
    from amcfd import __version__
    from amcfd.provenance import git_commit

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "options.yml", "w") as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    meta = {"command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "version": __version__,
            "git_commit": git_commit(), "python": sys.version.split()[0]}
    try:
        import torch
        meta["torch"] = str(torch.__version__)
    except ImportError:  # pragma: no cover
        pass
    meta.update(extra or {})
    with open(folder / "run.yml", "w") as f:
        yaml.safe_dump(meta, f, sort_keys=False)
