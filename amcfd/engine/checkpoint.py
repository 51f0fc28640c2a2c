"""Checkpoints: one file per save, written atomically, the last N kept plus the best."""
from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import torch

from amcfd.registry import ConfigError

FORMAT = "amcfd-checkpoint-v1"
ITER_NAME = re.compile(r"^iter_(\d+)\.pth$")


def atomic_save(obj: dict, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
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


def prune_checkpoints(folder: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` iteration checkpoints (best.pth is separate)."""
    if keep_last <= 0:
        return
    for _, path in iteration_checkpoints(folder)[:-keep_last]:
        path.unlink(missing_ok=True)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load one of our checkpoints (or a bare state_dict) with a clear error for bad files."""
    path = Path(path)
    try:
        # Our checkpoints hold numpy/python RNG states: full unpickling of a file we wrote.
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise ConfigError(f"checkpoint not found: {path}") from None
    except Exception as exc:
        raise ConfigError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(ckpt, dict):
        raise ConfigError(f"checkpoint {path} holds a {type(ckpt).__name__}, expected a dict")
    if "network" not in ckpt:  # a bare state_dict or a foreign layout
        ckpt = {"format": "state_dict", "network": ckpt}
    return ckpt
