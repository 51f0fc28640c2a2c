"""train.reuse_cpu_memory (amcfd/engine/memory.py): freed memory stays in the process, and results do not change."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import amcfd.engine.trainer as trainer_module
from amcfd.engine import memory
from amcfd.engine.trainer import Trainer
from tests.test_engine import tiny_options

PROBE = """
import sys, torch
from amcfd.engine.memory import keep_freed_memory, release_freed_memory
def resident_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2 ** 20
if sys.argv[1] == "keep":
    assert keep_freed_memory()
x = torch.ones(64 * 2 ** 20)           # 256 MiB
del x
kept = resident_mib()
release_freed_memory()
print(kept, resident_mib())
"""


@pytest.mark.skipif(memory._glibc() is None, reason="the setting applies to glibc's malloc only")
def test_freed_memory_is_kept_with_the_setting_and_given_back_without_it():
    def run(mode: str) -> tuple[float, float]:
        out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return tuple(map(float, out.stdout.split()))

    kept, released = run("keep")
    assert kept - released > 200                          # the 256 MiB stayed until malloc_trim
    default, _ = run("default")
    assert kept - default > 200                            # glibc's default gave it back at once


def test_the_trainer_sets_it_on_cpu_when_asked_and_results_do_not_change(tmp_path, monkeypatch):
    calls, stops = [], []
    monkeypatch.setattr(trainer_module, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(trainer_module, "stop_keeping_freed_memory", lambda: stops.append(1))
    weights = {}
    for reuse in (True, False):
        trainer = Trainer(tiny_options(tmp_path / str(reuse), reuse_cpu_memory=reuse))
        trainer.train()
        weights[reuse] = trainer.net.state_dict()
    assert calls == [1] and stops == [1]                   # set for the run, undone when it ended
    for key, value in weights[True].items():
        assert torch.equal(value, weights[False][key]), key


PROBE_STOP = """
from amcfd.engine.memory import keep_freed_memory, stop_keeping_freed_memory
import torch
def resident_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2 ** 20
assert keep_freed_memory()
x = torch.ones(64 * 2 ** 20)
del x
kept = resident_mib()
stop_keeping_freed_memory()
given_back = resident_mib()
y = torch.ones(64 * 2 ** 20)           # after the run: glibc's defaults again, freed at once
del y
print(kept, given_back, resident_mib())
"""


@pytest.mark.skipif(memory._glibc() is None, reason="the setting applies to glibc's malloc only")
def test_memory_kept_for_training_is_given_back_and_the_defaults_return_when_it_ends():
    out = subprocess.run([sys.executable, "-c", PROBE_STOP], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    kept, given_back, after = map(float, out.stdout.split())
    assert kept - given_back > 200 and after - given_back < 50
