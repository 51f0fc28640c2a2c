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
    calls = []
    monkeypatch.setattr(trainer_module, "keep_freed_memory", lambda: calls.append(1) or True)
    weights = {}
    for reuse in (True, False):
        trainer = Trainer(tiny_options(tmp_path / str(reuse), reuse_cpu_memory=reuse))
        trainer.train()
        weights[reuse] = trainer.net.state_dict()
    assert calls == [1]
    for key, value in weights[True].items():
        assert torch.equal(value, weights[False][key]), key
