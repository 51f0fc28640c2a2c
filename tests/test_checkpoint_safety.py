"""Checkpoints are read weights-only: ours load that way (and resume exactly); a pickle that would run code is
refused, one line, without running it."""
from __future__ import annotations

import pathlib
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from amcfd.engine.checkpoint import atomic_save, load_checkpoint, rng_state, set_rng_state, weights_only_types
from amcfd.registry import ConfigError

REPO = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling calls ``Path(marker).write_text(...)``: a harmless stand-in for ``os.system``. Built from the
    standard library only, so any process that fully unpickles the file runs it."""

    def __init__(self, marker: Path):
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return pathlib.Path.write_text, (self.marker, "code from the checkpoint ran")


@pytest.fixture()
def hostile(tmp_path) -> tuple[Path, Path]:
    """(a checkpoint in our layout whose pickle writes a marker file, the marker's path)."""
    marker = tmp_path / "marker.txt"
    path = tmp_path / "hostile.pth"
    torch.save({"format": "amcfd-checkpoint-v1", "network": {"w": torch.zeros(1)}, "opt": Payload(marker)}, path)
    torch.load(path, weights_only=False)       # the payload works: full unpickling runs it
    assert marker.exists()
    marker.unlink()
    return path, marker


def test_code_in_a_checkpoint_is_refused_and_never_runs(hostile):
    path, marker = hostile
    with pytest.raises(ConfigError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"cannot read checkpoint {path}: refused")
    assert "weights_only=True" in message and "--unsafe-load" in message
    assert not marker.exists()


def test_valid_py_refuses_it_with_one_line_and_exit_code_2(hostile, tmp_path):
    path, marker = hostile
    opt = {"name": "hostile", "path": {"pretrain_network": str(path)},
           "datasets": {"val_synth": {"type": "SyntheticCameraNoise", "images": ["chelsea"], "with_clean": True,
                                      "scale": 0.25}}}
    (tmp_path / "valid.yml").write_text(yaml.safe_dump(opt))
    run = subprocess.run([sys.executable, str(REPO / "valid.py"), "-opt", "valid.yml"], capture_output=True,
                         text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().count("\n") == 0 and "refused" in run.stderr
    assert not marker.exists() and not (tmp_path / "results").exists()


def test_our_checkpoint_types_load_weights_only_and_restore_the_rngs(tmp_path):
    random.seed(5)
    np.random.seed(6)
    np.random.standard_normal()                 # leaves numpy's cached gaussian set
    torch.manual_seed(7)
    ckpt = {"network": {"w": torch.ones(2)}, "rng": [rng_state()],
            "opt": {"path": {"root": Path("experiments")}, "value": np.float32(0.5), "steps": [np.int64(3)]}}
    atomic_save(ckpt, tmp_path / "ours.pth")
    loaded = torch.load(tmp_path / "ours.pth", weights_only=True)
    assert loaded["opt"] == {"path": {"root": "experiments"}, "value": 0.5, "steps": [3]}
    expected = (random.random(), np.random.standard_normal(), np.random.rand(), torch.rand(3))
    set_rng_state(loaded["rng"][0])
    again = (random.random(), np.random.standard_normal(), np.random.rand(), torch.rand(3))
    assert expected[:3] == again[:3] and torch.equal(expected[3], again[3])


def test_plain_containers_are_passed_through_unchanged():
    sd = torch.nn.Linear(2, 2).state_dict()
    assert weights_only_types(sd) is sd and hasattr(sd, "_metadata")
    mixed = {"sd": sd, "where": Path("a")}
    out = weights_only_types(mixed)
    assert out["sd"] is sd and out["where"] == "a" and mixed["where"] == Path("a")


def test_checkpoints_with_numpy_arrays_from_earlier_versions_still_load(tmp_path):
    import numpy as np
    import torch

    from amcfd.engine.checkpoint import load_checkpoint

    state = np.random.get_state()          # the numpy RNG state as earlier versions stored it
    path = tmp_path / "old.pth"
    torch.save({"network": {"w": torch.ones(2)}, "rng": [{"numpy": state}], "iteration": 3}, path)
    ckpt = load_checkpoint(path)
    assert ckpt["iteration"] == 3 and np.array_equal(ckpt["rng"][0]["numpy"][1], state[1])


def test_an_exported_file_names_no_path_of_the_machine_and_denoises_as_the_checkpoint(tmp_path):
    """amcfd-weights export: the header holds the network and method, not the dataset, experiment, teacher or
    cache paths of the training run; a distilled student comes back as SinglePass and denoises the same."""
    from amcfd.archs import build_arch
    from amcfd.engine.checkpoint import FORMAT, load_checkpoint, save_safetensors
    from amcfd.engine.inference import build_denoiser
    from amcfd.options import validate

    network = {"type": "DnCNN", "in_nc": 3, "out_nc": 3, "nc": 8, "nb": 3}
    secret = str(tmp_path / "private")
    opt = {"name": "student", "network": network,
           "datasets": {"train": {"type": "NoisyFolder", "root": f"{secret}/photos"}},
           "path": {"experiments_root": f"{secret}/experiments", "pretrain_network": f"{secret}/teacher.pth"},
           "method": {"type": "DistillCoarse", "guide": "bilateral",
                      "teacher": {"checkpoint": f"{secret}/teacher.pth", "cache_dir": f"{secret}/cache"}}}
    ckpt = {"format": FORMAT, "network": build_arch(network).state_dict(), "network_ema": None, "iteration": 7,
            "opt": opt, "imported_from": {"path": f"{secret}/their.pth", "kind": "nbsn"}}
    torch.save(ckpt, tmp_path / "student.pth")
    save_safetensors(ckpt, tmp_path / "student.safetensors")
    data = (tmp_path / "student.safetensors").read_bytes()
    header = data[8:8 + int.from_bytes(data[:8], "little")].decode()
    assert secret not in header and str(tmp_path) not in header
    back = load_checkpoint(tmp_path / "student.safetensors")
    assert back["opt"] == {"network": network, "method": {"type": "SinglePass"}} and back["iteration"] == 7
    assert back["imported_from"] == {"path": "their.pth", "kind": "nbsn"}
    x = torch.rand(1, 3, 24, 24)
    outs = [build_denoiser(validate({"name": "t", "device": "cpu", "method": {"type": "SinglePass"},
                                     "path": {"pretrain_network": str(tmp_path / name)}}, "test"))[1](x)
            for name in ("student.pth", "student.safetensors")]
    assert torch.equal(*outs)
