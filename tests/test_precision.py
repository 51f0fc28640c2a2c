"""Mixed precision on CPU (amcfd/engine/precision.py): bf16 where the CPU has it, float32 with one warning elsewhere.

The capability is forced with AMCFD_CPU_BF16, so both branches run on any CI machine (torch runs bf16 autocast on
any x86 CPU; the flag only decides whether we ask for it)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from amcfd.engine import precision
from amcfd.engine.inference import build_denoiser
from amcfd.engine.trainer import Trainer
from amcfd.options import validate
from amcfd.registry import ConfigError
from tests.test_engine import record_losses, tiny_options


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(precision, "_warned", set())


def _record_steps(trainer: Trainer) -> tuple[list, list]:
    """Losses of every step, and the dtypes the network's first convolution computed in."""
    losses, dtypes = record_losses(trainer), []
    first_conv = next(m for m in trainer.net.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    return losses, dtypes


def test_bf16_training_on_a_bf16_cpu_runs_in_bf16_and_lowers_the_loss(tmp_path, monkeypatch):
    monkeypatch.setenv("AMCFD_CPU_BF16", "1")
    opt = tiny_options(tmp_path, amp="bf16", total_iter=40, warmup_iter=0, ema_decay=0.0)
    opt["val"]["val_freq"] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # no fallback warning
        trainer = Trainer(opt)
    assert trainer.amp_dtype is torch.bfloat16
    losses, dtypes = _record_steps(trainer)
    trainer.train()
    assert set(dtypes[:40]) == {torch.bfloat16}              # training forwards ran in bf16 ...
    assert all(p.dtype == torch.float32 for p in trainer.net.parameters())   # ... on float32 weights
    assert np.isfinite(losses).all() and np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


def test_without_cpu_bf16_the_option_falls_back_to_float32_with_one_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("AMCFD_CPU_BF16", "0")
    with pytest.warns(UserWarning, match="'train.amp: bf16': bf16 needs CUDA or a CPU with avx512_bf16"):
        trainer = Trainer(tiny_options(tmp_path / "a", amp="bf16"))
    assert trainer.amp_dtype is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # once per process, not once per run
        again = Trainer(tiny_options(tmp_path / "b", amp="bf16"))
    losses, dtypes = _record_steps(again)
    again.train(stop_at=2)
    assert set(dtypes) == {torch.float32} and len(losses) == 2


def test_fp16_stays_cuda_only(tmp_path, monkeypatch):
    monkeypatch.setenv("AMCFD_CPU_BF16", "1")
    with pytest.warns(UserWarning, match="'train.amp: fp16': fp16 needs CUDA"):
        trainer = Trainer(tiny_options(tmp_path, amp="fp16"))
    assert trainer.amp_dtype is None and not trainer.scaler.is_enabled()


def test_cpu_capability_is_read_from_the_cpu_flags(monkeypatch):
    monkeypatch.delenv("AMCFD_CPU_BF16", raising=False)
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert not precision.cpu_bf16_supported()
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert precision.cpu_bf16_supported()
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"amx_tile", "amx_bf16"}))
    assert precision.cpu_bf16_supported()


def test_bf16_inference_on_cpu_is_close_to_float32_and_bad_values_are_errors(tmp_path, monkeypatch):
    trainer = Trainer(tiny_options(tmp_path))
    trainer.train()
    ckpt = trainer.ckpt_dir / "iter_00000006.pth"
    x = torch.rand(1, 3, 48, 40, generator=torch.Generator().manual_seed(0))

    def run(**test):
        opt = validate({"name": "t", "device": "cpu", "path": {"pretrain_network": str(ckpt)},
                        "method": {"r3": False}, "test": test}, "valid")
        return build_denoiser(opt)[1](x)

    monkeypatch.setenv("AMCFD_CPU_BF16", "1")
    ref, bf16 = run(), run(amp="bf16")
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, ref)     # it did run in bf16 ...
    assert (bf16 - ref).abs().max() < 0.05                                # ... and stays close
    monkeypatch.setenv("AMCFD_CPU_BF16", "0")
    with pytest.warns(UserWarning, match="'test.amp: bf16'"):
        assert torch.equal(run(amp="bf16"), ref)
    with pytest.raises(ConfigError, match="test.amp"):
        run(amp="fp8")


@pytest.mark.parametrize("value, expected", [("1", True), ("True", True), ("on", True), ("0", False),
                                             ("False", False), ("no", False)])
def test_cpu_bf16_override_is_a_boolean(monkeypatch, value, expected):
    from amcfd.engine.precision import cpu_bf16_supported

    monkeypatch.setenv("AMCFD_CPU_BF16", value)
    assert cpu_bf16_supported() is expected


@pytest.mark.parametrize("value", ["", "2", "maybe"])
def test_cpu_bf16_override_refuses_anything_else_in_one_line(monkeypatch, value):
    from amcfd.engine.precision import cpu_bf16_supported
    from amcfd.registry import ConfigError

    monkeypatch.setenv("AMCFD_CPU_BF16", value)
    with pytest.raises(ConfigError, match="AMCFD_CPU_BF16"):
        cpu_bf16_supported()
