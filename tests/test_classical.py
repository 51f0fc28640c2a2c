"""The classical core: the BM3D-class filter (ops/bm3d.py), two-scale NLM, the Classical method in valid.py and
``amcfd-denoise --method classical``."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
import yaml

from amcfd.data.imageio import write_image
from amcfd.ops import bm3d as B
from amcfd.ops.guides import GUIDES, bm3d_filter, bm3d_sigma, nlm_filter, nlm_two_scale
from amcfd.ops.pd import pd_down, pd_up
from amcfd.registry import ConfigError

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / (a.clamp(0, 1) - b).pow(2).mean()))


@pytest.fixture(scope="module")
def astronaut():
    """A 96x96 colour crop (face and hair: edges and texture) and the same crop in grey, in [0, 1]."""
    rgb = torch.from_numpy(skimage.data.astronaut()[30:126, 170:266].astype(np.float32) / 255).permute(2, 0, 1)
    return rgb, rgb.mean(0, keepdim=True)


@pytest.fixture(scope="module")
def scene():
    """A 160x160 colour crop with flat areas and edges, where a blind noise estimate has something to measure."""
    return torch.from_numpy(skimage.data.astronaut()[0:160, 340:500].astype(np.float32) / 255).permute(2, 0, 1)


def test_transforms_are_orthonormal():
    for n in (1, 2, 4, 8, 16, 32):
        h = B.haar_matrix(n)
        assert np.allclose(h @ h.T, np.eye(n))
    d = B.dct_matrix(8)
    assert np.allclose(d @ d.T, np.eye(8))
    assert np.allclose(B.OPPONENT @ B.OPPONENT.T, np.eye(3))


def test_patch_noise_std_of_white_and_of_blurred_noise():
    """White noise: sigma at every frequency. Noise blurred by a known kernel: the DCT coefficients' std of many
    simulated patches matches the formula from the autocovariance."""
    assert np.allclose(B.patch_noise_std({(0, 0): 0.04 ** 2}), 0.04)
    k = np.array([0.25, 0.5, 0.25])
    kernel = np.outer(k, k)
    gamma = {}
    for dy in range(3):
        for dx in range(-2, 3):
            if dy > 0 or dx >= 0:
                gamma[(dx, dy)] = sum(kernel[i, j] * kernel[i + dy, j + dx] for i in range(3) for j in range(3)
                                      if 0 <= i + dy < 3 and 0 <= j + dx < 3)
    expected = B.patch_noise_std(gamma)
    white = torch.randn(4000, 1, 10, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    patches = torch.nn.functional.conv2d(white, torch.from_numpy(kernel)[None, None])[:, 0]      # (N, 8, 8)
    d = torch.from_numpy(B.dct_matrix(8))
    measured = (d @ patches @ d.T).std(0).numpy()
    assert np.abs(measured - expected).max() < 0.06 * expected.max()
    assert expected[0, 0] > 3 * expected[7, 7]              # low frequencies carry the correlated noise


@pytest.mark.parametrize("channels", [1, 3])
def test_bm3d_on_white_gaussian_noise_beats_nlm_and_its_own_first_step(astronaut, channels):
    """At sigma 25/255 BM3D gains at least 7 dB here (it gains ~10 dB on natural images at this level), more than
    OpenCV NLM at h = sigma, and its Wiener step adds to the hard-thresholding estimate."""
    clean = astronaut[0] if channels == 3 else astronaut[1]
    noisy = clean + torch.randn(clean.shape, generator=torch.Generator().manual_seed(1)) * 25 / 255
    basic = B.bm3d(noisy, 25 / 255, wiener=False)
    final = B.bm3d(noisy, 25 / 255)
    nlm = nlm_filter(noisy.clamp(0, 1)[None], h=25.0)[0]
    assert final.shape == clean.shape
    assert psnr(final, clean) > psnr(noisy, clean) + 7
    assert psnr(final, clean) > psnr(basic, clean) + 0.2
    assert psnr(final, clean) > psnr(nlm, clean) + 0.5


def test_bm3d_takes_a_spectrum_per_channel_and_frequency(astronaut):
    """A (C, 8, 8) sigma equal to the scalar everywhere gives the scalar's result; a larger sigma smooths more."""
    noisy = astronaut[0] + torch.randn(astronaut[0].shape, generator=torch.Generator().manual_seed(2)) * 0.05
    same = B.bm3d(noisy, np.full((3, 8, 8), 0.05))
    assert torch.allclose(same, B.bm3d(noisy, 0.05), atol=1e-5)
    assert B.bm3d(noisy, 0.1).diff(dim=-1).abs().mean() < same.diff(dim=-1).abs().mean()
    with pytest.raises(ValueError, match="C = 1 or 3"):
        B.bm3d(torch.rand(2, 32, 32), 0.1)


def test_blind_bm3d_measures_each_image_and_tiles_big_ones(scene):
    """sigma auto: each image of a batch at its own level (white noise: the measured spectrum's thresholds);
    tiling (for big photos) changes the result little."""
    clean = scene[None]
    rng = torch.Generator().manual_seed(3)
    batch = torch.cat([clean + torch.randn(clean.shape, generator=rng) * s for s in (0.02, 0.08)]).clamp(0, 1)
    out = bm3d_filter(batch)
    for i in range(2):
        assert psnr(out[i], clean[0]) > psnr(batch[i], clean[0]) + 3
        assert torch.allclose(out[i], bm3d_filter(batch[i:i + 1])[0])
    tiled = bm3d_filter(batch[:1], tile=96, overlap=16)
    assert abs(psnr(tiled[0], clean[0]) - psnr(out[0], clean[0])) < 0.3
    with pytest.raises(ValueError, match="strength"):
        bm3d_filter(batch, strength=0)
    with pytest.raises(ValueError, match="thresholds"):
        bm3d_filter(batch, thresholds="soft")


def test_thresholds_follow_the_measured_correlation(scene):
    """White noise gets the spectrum at the image-wide level (close to the true std at every frequency);
    noise blurred to a lag-1 correlation of ~0.6 gets the white thresholds for correlated noise, above the
    pixel std (its low DCT frequencies hold several times the pixel std)."""
    clean = scene
    white = torch.randn(clean.shape, generator=torch.Generator().manual_seed(5)) * 0.04
    sigma = bm3d_sigma((clean + white).clamp(0, 1))
    assert sigma.shape == (8, 8) and 0.8 * 0.04 < np.median(sigma) < 1.25 * 0.04
    k = torch.tensor([0.25, 0.5, 0.25])
    blurred = torch.nn.functional.conv2d(torch.nn.functional.pad(white[:, None] * 2.5, (1, 1, 1, 1), "reflect"),
                                         (k[:, None] * k[None, :])[None, None])[:, 0]
    sigma = bm3d_sigma((clean + blurred).clamp(0, 1))
    assert np.ndim(sigma) == 0 and sigma > 2 * float(blurred.std())
    assert bm3d_sigma(torch.full((3, 64, 64), 0.5)) == 0.0                    # nothing to measure: no filtering


@pytest.mark.parametrize("size", [(3, 31, 45), (1, 16, 17)])
def test_two_scale_split_and_merge_are_inverses(size):
    x = torch.rand(1, *size)
    assert torch.equal(pd_up(pd_down(x, 2, pad_mode="reflect"), 2, x.shape[-2:]), x)
    out = nlm_two_scale(x, h=10.0)
    assert out.shape == x.shape
    assert torch.allclose(out, 0.5 * (nlm_filter(x, h=10.0) + pd_up(nlm_filter(pd_down(x, 2, "reflect"), h=10.0),
                                                                      2, x.shape[-2:])))


def test_classical_method_options_are_checked():
    from amcfd.methods.classical import Classical

    with pytest.raises(ConfigError, match="method.filter"):
        Classical(filter="median")
    with pytest.raises(ConfigError, match="method.options.*strenght"):
        Classical(filter="bm3d", options={"strenght": 2})
    with pytest.raises(ConfigError, match="needs no training"):
        Classical()({"noisy": torch.rand(1, 3, 8, 8)})
    assert set(GUIDES) >= {"classical", "bm3d", "nlm", "nlm2", "bilateral"}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, scene):
    """Two noisy photos (PNG and JPEG) and their clean versions."""
    root = tmp_path_factory.mktemp("classical")
    clean = scene.permute(1, 2, 0).numpy()
    rng = np.random.default_rng(4)
    for name in ("a.png", "b.jpg"):
        noisy = np.clip(clean + 0.04 * rng.standard_normal(clean.shape), 0, 1)
        write_image(root / "noisy" / name, noisy)
        write_image(root / "clean" / Path(name).with_suffix(".png"), clean)
    return root


def test_valid_py_scores_the_classical_core(pairs, tmp_path):
    opt = {"name": "classical", "device": "cpu", "method": {"type": "Classical", "filter": "bm3d"},
           "path": {"results_root": str(tmp_path)}, "datasets": {"test_a": {"type": "PairedFolder", "root": str(pairs),
                                                                              "max_images": 1}}}
    (tmp_path / "c.yml").write_text(yaml.safe_dump(opt))
    result = subprocess.run([sys.executable, "valid.py", "-opt", str(tmp_path / "c.yml")], capture_output=True,
                            text=True, cwd=Path(__file__).resolve().parents[1], env=ENV, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    row = next(line for line in result.stdout.splitlines() if line.startswith("| test_a"))
    assert float(row.split("|")[3]) > 30


def denoise(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "amcfd.denoise", *args], capture_output=True, text=True, cwd=cwd,
                          env=ENV, timeout=300)


def test_amcfd_denoise_method_classical_writes_every_photo_and_scores(pairs):
    result = denoise("noisy", "--output", "out", "--method", "classical", "--clean", "clean", cwd=pairs)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in (pairs / "out").iterdir()) == ["a.png", "b.png"]
    assert not (pairs / "experiments").exists()                       # no training, no work folder
    rows = {line.split("|")[1].strip(): float(line.split("|")[2]) for line in result.stdout.splitlines()
            if line.startswith(("| input", "| output"))}
    assert rows["output"] > rows["input"] + 3
    assert "classical core" in result.stdout


def test_amcfd_denoise_classical_one_photo_and_bad_combinations(pairs):
    result = denoise("noisy/a.png", "--output", "one", "--method", "classical", cwd=pairs)
    assert result.returncode == 0 and (pairs / "one" / "a.png").is_file(), result.stderr[-2000:]
    result = denoise("noisy", "--output", "o2", "--method", "classical", "--pretrained", "x.pth", cwd=pairs)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and last.startswith("error: ") and "--method classical" in last
    assert not (pairs / "o2").exists()
    result = denoise("noisy", "--output", "o3", "--method", "median", cwd=pairs)
    assert result.returncode == 2 and "--method" in result.stderr



@pytest.mark.parametrize("guide", ["nlm", "nlm2", "bm3d", "classical"])
def test_a_guide_that_cannot_measure_noise_leaves_the_image_as_it_is(guide):
    x = torch.randint(0, 256, (1, 3, 16, 16), generator=torch.Generator().manual_seed(0)) / 255   # too small
    assert torch.allclose(GUIDES[guide](x), x, atol=1e-6)
