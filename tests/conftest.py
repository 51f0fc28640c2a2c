"""Shared test fixtures: the ../shared folder (reference tensors, real data)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AMCFD_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """Path inside ../shared; skip visibly when absent, fail under CI (CI=true)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        msg = f"{path} is missing (../shared beside the repository, or set AMCFD_SHARED)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def load_script(name: str):
    """scripts/<name>.py as a module (the scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_reference(name: str) -> dict:
    """One golden file from ../shared/reference (see its README for tolerances)."""
    return torch.load(shared_path("reference", name), weights_only=True)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
