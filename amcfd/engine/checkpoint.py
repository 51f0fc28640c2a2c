"""Checkpoints: one file per save, written atomically, the last N kept plus the best.

Every checkpoint is read with ``torch.load(weights_only=True)``: only tensors and plain containers are
unpickled, so a file from elsewhere cannot run code. Ours are written in those types only (``atomic_save``
turns paths and numpy values into plain ones; ``rng_state`` stores numpy's key as a tensor). Authors' files
that need full unpickling go through ``scripts/import_checkpoint.py --unsafe-load`` once, by choice.
A ``.safetensors`` file (``save_safetensors``: no pickle at all) is read by every loader as well.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import pickle
import random
import re
from pathlib import Path, PurePath

import numpy as np
import torch

from amcfd.registry import ConfigError

FORMAT = "amcfd-checkpoint-v1"
ITER_NAME = re.compile(r"^iter_(\d+)\.pth$")
log = logging.getLogger("amcfd")


def weights_only_types(obj):
    """``obj`` with paths as text and numpy scalars/arrays as Python values/lists, so that
    ``torch.load(weights_only=True)`` reads it back; containers without such values are returned as they are
    (a state_dict keeps its class and ``_metadata``)."""
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    if isinstance(obj, dict):
        changed = {k: new for k, v in obj.items() if (new := weights_only_types(v)) is not v}
        if not changed:
            return obj
        out = copy.copy(obj)
        out.update(changed)
        return out
    if isinstance(obj, (list, tuple)):
        items = [weights_only_types(v) for v in obj]
        if all(new is old for new, old in zip(items, obj)):
            return obj
        return items if isinstance(obj, list) else tuple(items)
    return obj


def atomic_save(obj: dict, path: Path) -> None:
    """torch.save (in weights-only types) to a temporary file in the same folder, then rename over ``path``.
    Written through a Python file, so a full disk is an OSError (ENOSPC) and the files before stay intact
    (torch's zip writer answers a failed write with a RuntimeError of its own: the OSError behind it is raised)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            try:
                torch.save(weights_only_types(obj), f)
            except RuntimeError as exc:
                if isinstance(exc.__context__, OSError):
                    raise exc.__context__ from None
                raise
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def rng_state() -> dict:
    """Python, numpy, torch (and CUDA) RNG states in weights-only types: numpy's as a dict whose key is an
    int64 tensor (``set_rng_state`` restores it exactly)."""
    np_state = np.random.get_state(legacy=False)
    numpy_state = {"bit_generator": np_state["bit_generator"],
                   "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                   "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                   "gauss": float(np_state["gauss"])}
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    saved = state["numpy"]
    np.random.set_state({"bit_generator": saved["bit_generator"],
                         "state": {"key": torch.as_tensor(saved["key"]).numpy().astype(np.uint32),
                                   "pos": saved["pos"]},
                         "has_gauss": saved["has_gauss"], "gauss": saved["gauss"]})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def iteration_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(iteration, path) of every ``iter_N.pth`` in folder, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := ITER_NAME.match(p.name))]
    return sorted(found)


def latest_checkpoint(folder: Path) -> Path | None:
    ckpts = iteration_checkpoints(folder)
    return ckpts[-1][1] if ckpts else None


def latest_readable_checkpoint(folder: Path) -> tuple[Path, dict] | tuple[None, None]:
    """(path, contents) of the newest iteration checkpoint that loads; each newer one that does not (truncated,
    corrupt) is named in one warning and passed over. (None, None) when there is none."""
    for _, path in reversed(iteration_checkpoints(folder)):
        try:
            return path, load_checkpoint(path)
        except ConfigError as exc:
            log.warning("passing over an unreadable checkpoint, using the one before: %s", exc)
    return None, None


def prune_checkpoints(folder: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` iteration checkpoints (best.pth is separate)."""
    if keep_last <= 0:
        return
    for _, path in iteration_checkpoints(folder)[:-keep_last]:
        path.unlink(missing_ok=True)


def _refusal_reason(exc: Exception) -> str:
    """The line of torch's weights-only error that names what was refused (its wording varies by version)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    boilerplate = ("Weights only load failed", "Check the documentation", "(1)", "(2)", "Please file an issue")
    for line in text.splitlines():
        line = line.split("WeightsUnpickler error:")[-1].strip()
        if line and not line.startswith(boilerplate):
            return line.split(" Please use")[0].rstrip(".")
    return type(exc).__name__


def _allow_numpy_arrays() -> None:
    """Checkpoints written before numpy's RNG state was stored as tensors hold numpy arrays; rebuilding an
    array runs no code from the file, so those few numpy globals are allowed to the weights-only loader."""
    import numpy as np

    multiarray = getattr(np, "_core", None) or np.core
    allowed = [np.ndarray, np.dtype, multiarray.multiarray._reconstruct]
    allowed += [type(np.dtype(t)) for t in (np.uint32, np.int64, np.int32, np.float64, np.float32, np.bool_)]
    torch.serialization.add_safe_globals(allowed)


_allow_numpy_arrays()


def shareable_header(ckpt: dict) -> dict:
    """What a shared file needs to rebuild the network and its method, nothing of the machine it came from:
    format, iteration, opt.network (type and arguments), opt.method (type and arguments, without any key that
    names a file or folder; a method whose inference is one forward of its network, e.g. a distilled student,
    as SinglePass) and imported_from (without the local folder of the imported file)."""
    from amcfd.methods.base import Method
    from amcfd.options import is_path_key
    from amcfd.registry import METHODS

    def without_paths(value):
        if isinstance(value, dict):
            return {k: without_paths(v) for k, v in value.items() if not is_path_key(k)}
        return [without_paths(v) for v in value] if isinstance(value, list) else value

    opt = ckpt.get("opt") or {}
    method = opt.get("method") or {}
    if method.get("type") and METHODS.get(method["type"], where="method.type").denoise is Method.denoise:
        method = {"type": "SinglePass"}
    imported = dict(ckpt.get("imported_from") or {})
    if imported.get("path"):
        imported["path"] = Path(str(imported["path"])).name
    return {"format": ckpt.get("format"), "iteration": ckpt.get("iteration"), "imported_from": imported or None,
            "opt": {"network": opt.get("network"), "method": without_paths(method)}}


def save_safetensors(ckpt: dict, path: Path) -> None:
    """Write our checkpoint as ``.safetensors`` for sharing: tensors ``network.<key>`` (and
    ``network_ema.<key>``), and in the header ``amcfd`` the JSON of ``shareable_header``: the network's and
    method's type and arguments, input range included, and where an imported model came from; no dataset,
    experiment or cache path, no optimizer or RNG state."""
    from safetensors.torch import save_file

    tensors = {f"{part}.{k}": v.detach().cpu().contiguous().clone()
               for part in ("network", "network_ema") for k, v in (ckpt.get(part) or {}).items()}
    header = shareable_header(ckpt)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata={"amcfd": json.dumps(weights_only_types(header), default=str)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _load_safetensors(path: Path, map_location) -> dict:
    """Our checkpoint from a ``save_safetensors`` file (or a bare safetensors state_dict)."""
    from safetensors import safe_open

    device = str(map_location) if isinstance(map_location, (str, torch.device)) else "cpu"
    with safe_open(str(path), framework="pt", device=device) as f:
        header = json.loads((f.metadata() or {}).get("amcfd", "null"))
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if header is None:
        return {"format": "state_dict", "network": tensors}
    parts = {part: {k[len(part) + 1:]: v for k, v in tensors.items() if k.startswith(part + ".")}
             for part in ("network", "network_ema")}
    return {**header, "network": parts["network"], "network_ema": parts["network_ema"] or None}


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load one of our checkpoints (or a bare state_dict) with ``weights_only=True``: a file that holds anything
    but tensors and plain containers (e.g. a pickle that would run code) is refused, unexecuted. A
    ``.safetensors`` file is read without pickle. A local file only: released models' names are resolved into
    their files at the boundary (options, command lines, benchmark rows). Bad or refused files are a one-line
    ConfigError."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            ckpt = _load_safetensors(path, map_location)
        else:
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        hint = "" if path.suffix or len(path.parts) > 1 else " (released weights by name: amcfd-weights list)"
        raise ConfigError(f"checkpoint not found: {path}{hint}") from None
    except pickle.UnpicklingError as exc:
        reason = _refusal_reason(exc)
        if not re.search(r"GLOBAL|[Uu]nsupported class|allowed global", reason):
            raise ConfigError(f"cannot read checkpoint {path}: not a PyTorch weights file ({reason})") from None
        raise ConfigError(f"cannot read checkpoint {path}: refused, it holds Python objects besides tensors and "
                          f"plain containers ({reason}); checkpoints are read with torch.load(weights_only=True), "
                          "which never runs code from the file. Convert an authors' checkpoint you trust with "
                          "scripts/import_checkpoint.py --unsafe-load") from None
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(f"cannot read checkpoint {path}: {type(exc).__name__}: {first}") from None
    if not isinstance(ckpt, dict):
        raise ConfigError(f"checkpoint {path} holds a {type(ckpt).__name__}, expected a dict")
    if "network" not in ckpt:  # a bare state_dict or a foreign layout
        ckpt = {"format": "state_dict", "network": ckpt}
    return ckpt


def finished_checkpoint(experiment: Path) -> tuple[Path, dict] | tuple[None, None]:
    """(path, contents) of the final checkpoint of a finished training run (its iteration is the run's
    total_iter, which ``train.max_minutes`` may have lowered), else (None, None); read once."""
    last, ckpt = latest_readable_checkpoint(Path(experiment) / "models")
    if last is None or ckpt["iteration"] < ckpt["opt"]["train"]["total_iter"]:
        return None, None
    return last, ckpt


def finished_run(experiment: Path) -> Path | None:
    """The final checkpoint of a finished training run (``finished_checkpoint``), else None."""
    return finished_checkpoint(experiment)[0]
