"""The fast path: batched tiles, channels-last and compiled inference (with its eager fallback), the inference
options' checks, the training loop's timing breakdown and its single finite check per log step, profile_step.py."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from conftest import load_script
from test_engine import tiny_options

from amcfd.archs import build_arch
from amcfd.engine import trainer as trainer_module
from amcfd.engine.inference import accelerate, build_denoiser, resolve_tile_batch, tiled_denoise
from amcfd.engine.trainer import Trainer
from amcfd.options import validate
from amcfd.registry import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_batched_tiles_match_single_tiles_and_use_fewer_calls():
    x = torch.rand(2, 3, 70, 53)
    fn = lambda t: t * 2 + 1  # noqa: E731 - position-independent
    calls = {1: [], 3: []}
    outs = {n: tiled_denoise(lambda t, n=n: calls[n].append(t.shape[0]) or fn(t), x, 32, 8, tile_batch=n)
            for n in calls}
    torch.testing.assert_close(outs[1], outs[3])
    torch.testing.assert_close(outs[3], fn(x))
    tiles = len(calls[1])
    assert calls[1] == [2] * tiles and len(calls[3]) == -(-tiles // 3) and sum(calls[3]) == 2 * tiles
    assert resolve_tile_batch(0, torch.device("cpu")) == 1 and resolve_tile_batch(5, torch.device("cpu")) == 5


def test_channels_last_gives_the_same_output_and_keeps_the_state_dict():
    torch.manual_seed(0)
    net = build_arch({"type": "NAFNetBase", "preset": "small"}).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        ref = net(x)
        keys = list(net.state_dict())
        accelerate(net, channels_last=True)
        out = net(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert list(net.state_dict()) == keys
    assert next(p for p in net.parameters() if p.dim() == 4).is_contiguous(memory_format=torch.channels_last)


def test_compile_falls_back_to_eager_with_one_warning(monkeypatch, caplog):
    def broken_compile(fn, **kwargs):
        def compiled(*args, **kw):
            raise RuntimeError("no C++ compiler")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    net = build_arch({"type": "DnCNN", "preset": "small"}).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        ref = net(x)
        accelerate(net, compile=True)
        with caplog.at_level(logging.WARNING, logger="amcfd"):
            first, second = net(x), net(x)
    torch.testing.assert_close(first, ref)
    torch.testing.assert_close(second, ref)
    assert sum("test.compile" in r.message for r in caplog.records) == 1


def _checkpoint(tmp_path: Path) -> Path:
    trainer = Trainer(tiny_options(tmp_path))
    trainer.train()
    return trainer.ckpt_dir / "iter_00000006.pth"


def test_inference_options_same_scores_and_clear_errors(tmp_path):
    ckpt = _checkpoint(tmp_path)
    x = torch.rand(1, 3, 48, 40)

    def run(**test):
        opt = validate({"name": "t", "device": "cpu", "path": {"pretrain_network": str(ckpt)},
                        "method": {"r3": False}, "test": test}, "valid")
        return build_denoiser(opt)[1](x)

    ref = run()
    assert not ref.is_inference()                       # results are normal tensors
    torch.testing.assert_close(run(channels_last=True), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(run(tile=32, tile_overlap=8, tile_batch=3),
                               run(tile=32, tile_overlap=8, tile_batch=1), atol=1e-6, rtol=1e-6)
    with pytest.raises(ConfigError, match="test.amp"):
        run(amp="fp8")                                  # bf16 on CPU: tests/test_precision.py


def test_training_logs_timing_and_checks_finiteness_only_at_log_steps(tmp_path, monkeypatch):
    calls = []
    original = trainer_module.Trainer._check_finite
    monkeypatch.setattr(trainer_module.Trainer, "_check_finite", lambda self: calls.append(self.iteration)
                        or original(self))
    opt = tiny_options(tmp_path, total_iter=9)
    opt["logger"].update(print_freq=4, save_checkpoint_freq=9)
    opt["val"]["val_freq"] = 0
    trainer = Trainer(opt)
    trainer.train()
    assert sorted(set(calls)) == [4, 8, 9]                 # log steps and the final checkpoint, not every step
    assert 0 <= trainer.timing["data_wait_fraction"] <= 1 and trainer.timing["ms_per_step"] > 0
    assert "data wait" in (trainer.exp_dir / "train.log").read_text()


def test_profile_step_reports_speed(tmp_path, capsys):
    script = load_script("profile_step")
    out = tmp_path / "report.json"
    assert script.main(["-opt", str(REPO / "options/train/demo.yml"), "--steps", "2", "--warmup", "1",
                        "--set", "network.preset=small", "network.type=DnCNN", "datasets.train.crop_size=32",
                        "--trace", str(tmp_path / "trace"), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "steps/s" in text and "data wait" in text and "peak memory" in text
    assert (tmp_path / "trace" / "trace.json").stat().st_size > 0 and out.is_file()
    assert script.main(["-opt", str(tmp_path / "missing.yml")]) == 2


@pytest.mark.parametrize("layer_norm", ["BiasFree", "WithBias"])
def test_restormer_cpu_inference_path_matches_the_autograd_path(layer_norm):
    """archs/restormer.py: without autograd on CPU the network runs channels-last through oneDNN with split
    1x1/depthwise convolutions; the outputs equal the plain path's (which training uses) to float rounding."""
    torch.manual_seed(0)
    net = build_arch({"type": "Restormer", "dim": 8, "num_blocks": [1, 2, 1, 1], "num_refinement_blocks": 1,
                      "heads": [1, 2, 4, 8], "bias": layer_norm == "WithBias", "LayerNorm_type": layer_norm}).eval()
    x = torch.rand(2, 3, 37, 45)
    plain = net(x).detach()                       # grad enabled: the plain path
    with torch.no_grad():
        fast = net(x)
    assert fast.is_contiguous()
    torch.testing.assert_close(fast, plain, atol=2e-5, rtol=1e-4)


def test_folder_images_are_cached_automatically_when_they_fit(tmp_path, monkeypatch):
    """cache: null decodes small folders up front (no decoding per crop); false never, true always; a folder
    above the limit, or with an unreadable header, is decoded per use."""
    import cv2
    import numpy as np

    from amcfd.data import transforms
    from amcfd.data.folders import NoisyFolder

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((20, 30, 3), 40 * i, np.uint8))
    assert NoisyFolder(tmp_path).noisy._cache is not None                      # the default: automatic
    assert NoisyFolder(tmp_path, cache=False).noisy._cache is None
    monkeypatch.setattr(transforms, "AUTO_CACHE_BYTES", 20 * 30 * 3 * 2 * 2)   # room for two of the three
    assert NoisyFolder(tmp_path).noisy._cache is None
    assert NoisyFolder(tmp_path, cache=True).noisy._cache is not None
    assert transforms.decoded_bytes(tmp_path / "missing.png") is None
    cv2.imwrite(str(tmp_path / "photo.jpg"), np.full((20, 30, 3), 40, np.uint8))
    assert transforms.decoded_bytes(tmp_path / "photo.jpg") == 20 * 30 * 3        # JPEG holds 8-bit samples
    assert transforms.decoded_bytes(tmp_path / "0.png") == 20 * 30 * 3 * 2        # PNG may hold 16
    with pytest.raises(ConfigError, match="cache"):
        transforms.should_cache([], "yes")
