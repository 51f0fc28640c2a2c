"""image_noise_level / channel_noise_levels (amcfd/noise/estimate.py): the image-wide noise std a denoiser is given.

Truth = std(decoded file - clean) over all channels and pixels: for JPEG, the noise actually in the file (JPEG
flattens part of it). Tolerances, with the ratios measured when written (seeded, 256x256 skimage camera as RGB):
- white and blurred (Gaussian sigma 1 px) Gaussian noise of std 4 / 10 / 20 levels, PNG and JPEG q95: ratio within
  0.8-1.25 (measured 0.96-1.09); JPEG q85 at std 10 / 20: within 0.75-1.3 (measured 0.83-1.05). Not tested: q85 at
  std 4, where the truth is mostly the JPEG error of the photo itself, which no noise estimate sees (ratio 0.55).
- independent noise of 3 / 6 / 9 levels in R / G / B on a smooth colour image: each channel within 10% (<= 5%).
- the demo camera pipeline (Bayer, Poisson-Gaussian, demosaic, colour matrix, gamma: signal dependent and
  correlated) on a 256x256 crop of coffee, three levels: within 0.8-1.25 (0.89-1.05).
- a gradient with 40%+ clipped pixels: finite, within 25% of the std of the noise added (the unclipped noise;
  measured 1.02-1.09), no error.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from conftest import load_script
from scipy.ndimage import gaussian_filter

from amcfd.data.synthetic import camera_pipeline, load_sample_image
from amcfd.noise.estimate import channel_noise_levels, image_noise_level

SIZE = 256


def _tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W, C) -> (C, H, W) float32."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))


def _encode(img: np.ndarray, fmt: str) -> np.ndarray:
    """The decoded 8-bit file of an (H, W, 3) RGB image in [0, 1]: "png", "q95" or "q85" (JPEG, cv2 defaults)."""
    u8 = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)[..., ::-1]
    params = [] if fmt == "png" else [cv2.IMWRITE_JPEG_QUALITY, int(fmt[1:])]
    ok, buf = cv2.imencode(".png" if fmt == "png" else ".jpg", u8, params)
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255


@pytest.fixture(scope="module")
def camera() -> np.ndarray:
    import skimage.data

    gray = cv2.resize(skimage.data.camera().astype(np.float32) / 255, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    return _encode(np.repeat(gray[..., None], 3, axis=-1), "png")


CASES = [(std, fmt) for std in (4, 10, 20) for fmt in ("png", "q95")] + [(10, "q85"), (20, "q85")]


@pytest.mark.parametrize("blur", [0.0, 1.0])
@pytest.mark.parametrize("std,fmt", CASES)
def test_level_of_white_and_correlated_noise_in_png_and_jpeg(camera, std, fmt, blur):
    noise = np.random.default_rng(std).standard_normal(camera.shape)
    if blur:
        noise = gaussian_filter(noise, (blur, blur, 0))                       # spatially correlated noise
    noise *= std / 255 / noise.std()
    decoded = _encode(camera + noise, fmt)
    truth = (decoded - camera).std()                                          # the noise that is in the file
    ratio = image_noise_level(_tensor(decoded)) / truth
    low, high = (0.75, 1.3) if fmt == "q85" else (0.8, 1.25)
    assert low <= ratio <= high, (std, fmt, blur, ratio)


def test_channel_levels_of_coloured_noise():
    y, x = np.mgrid[0:192, 0:192] / 191
    smooth = np.stack([0.2 + 0.6 * x, 0.3 + 0.4 * y, 0.5 + 0.3 * np.sin(3 * x + 2 * y)], axis=-1)
    noisy = _encode(smooth + np.random.default_rng(0).standard_normal(smooth.shape) * np.array([3, 6, 9]) / 255, "png")
    truth = (noisy - _encode(smooth, "png")).std(axis=(0, 1))
    levels = np.array(channel_noise_levels(_tensor(noisy)[None]))            # (1, C, H, W) too
    assert np.all(np.abs(levels / truth - 1) < 0.10), levels / truth
    assert image_noise_level(_tensor(noisy)) == pytest.approx(math.sqrt(np.mean(levels ** 2)))


@pytest.mark.parametrize("shot,read", [(0.002, 8e-5), (0.008, 3e-4), (0.03, 1.2e-3)])
def test_camera_pipeline_noise(shot, read):
    img = load_sample_image("coffee")
    top, left = (img.shape[0] - SIZE) // 2, (img.shape[1] - SIZE) // 2
    img = img[top:top + SIZE, left:left + SIZE]
    noisy = camera_pipeline(img, shot, read, np.random.default_rng(0))
    truth = (noisy - camera_pipeline(img, 0, 0, None)).std()
    assert 0.8 <= image_noise_level(_tensor(noisy)) / truth <= 1.25


@pytest.mark.parametrize("std", [5, 15])
def test_clipped_image_measures_the_unclipped_noise(std):
    ramp = np.linspace(-0.4, 1.4, 192)[None, :, None] * np.ones((192, 1, 3))
    noisy = _encode(ramp + np.random.default_rng(std).standard_normal(ramp.shape) * std / 255, "png")
    assert ((noisy <= 0) | (noisy >= 1)).mean() >= 0.25
    level = image_noise_level(_tensor(noisy))
    assert math.isfinite(level) and abs(level * 255 / std - 1) < 0.25, level * 255


def test_mostly_clipped_and_constant_images_do_not_raise():
    rng = np.random.default_rng(0)
    dark = np.clip(0.01 + rng.standard_normal((3, 64, 64)) * 0.05, 0, 1)     # half the values clipped at 0
    assert (dark == 0).mean() > 0.4
    assert 0 < image_noise_level(torch.from_numpy(dark)) < 0.1
    assert image_noise_level(torch.full((3, 64, 64), 0.3)) == 0.0
    assert image_noise_level(torch.zeros(1, 1, 64, 64)) == 0.0


def test_too_small_or_batched_input_raises():
    with pytest.raises(ValueError, match="smaller"):
        image_noise_level(torch.rand(3, 20, 200))
    with pytest.raises(ValueError, match="batch"):
        image_noise_level(torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError):
        image_noise_level(torch.rand(64, 64))


def test_noise_report_clean_option(tmp_path, capsys):

    from amcfd.data.imageio import write_image

    report = load_script("noise_report")
    (tmp_path / "noisy").mkdir()
    (tmp_path / "clean").mkdir()
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:96, 0:96] / 95
    for i in range(2):
        clean = np.stack([0.3 + 0.4 * x, 0.5 - 0.2 * y, 0.4 + 0.1 * i + 0 * x], axis=-1)
        write_image(tmp_path / "clean" / f"img{i}.png", clean)
        noisy = np.clip(clean + rng.standard_normal(clean.shape) * 6 / 255, 0, 1)
        write_image(tmp_path / "noisy" / f"img{i}.png", noisy)
    write_image(tmp_path / "noisy" / "orphan.png", np.full((96, 96, 3), 0.5))
    assert report.main([str(tmp_path / "noisy"), "--clean", str(tmp_path / "clean")]) == 0
    out, err = capsys.readouterr()
    assert "img0.png" in out and "img1.png" in out and "orphan.png" in err
    ratios = [float(line.split()[4]) for line in out.splitlines() if line.startswith("img")]
    assert len(ratios) == 2 and all(abs(r - 1) < 0.15 for r in ratios), out
    assert "image-wide/true median" in out and "flat-tile/true" in out
    assert report.main([str(tmp_path / "noisy"), "--clean", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    rows = report.compare_with_clean(report.list_images(tmp_path / "noisy"), tmp_path / "clean", lambda *a: None)
    table = report.clean_report_markdown(rows)
    assert "| image-wide / true |" in table and "| img0.png |" in table and table.count("\n| img") == 2

    # the level a posterior network learned (here: a curve set to the true 6/255) in its own column
    import torch

    from amcfd.archs import build_arch
    from amcfd.engine.checkpoint import atomic_save

    network = {"type": "Posterior", "net": {"type": "DnCNN", "in_nc": 3, "out_nc": 3, "nc": 4, "nb": 2}}
    net = build_arch(network)
    with torch.no_grad():
        net.noise_curve.fill_(float(torch.log(torch.expm1(torch.tensor((6 / 255) ** 2)))))
    atomic_save({"opt": {"network": network}, "network": net.state_dict()}, tmp_path / "posterior.pth")
    assert report.main([str(tmp_path / "noisy"), "--clean", str(tmp_path / "clean"), "--learned",
                        str(tmp_path / "posterior.pth")]) == 0
    out = capsys.readouterr().out
    learned = [float(line.split()[7]) for line in out.splitlines() if line.startswith("img")]
    assert len(learned) == 2 and all(abs(r - 1) < 0.15 for r in learned), out
    assert report.main([str(tmp_path / "noisy"), "--learned", str(tmp_path / "posterior.pth")]) == 2


def test_noise_report_makes_synthetic_png_and_jpeg_pairs(tmp_path, monkeypatch):

    report = load_script("noise_report")
    monkeypatch.setattr(report, "SYNTHETIC_LEVELS", {"mid": (8e-3, 3e-4)})
    monkeypatch.setattr("amcfd.data.synthetic.SAMPLE_IMAGES", ("astronaut",))
    assert report.make_synthetic_pairs(tmp_path, side=96) == 3
    assert sorted(p.name for p in (tmp_path / "noisy").iterdir()) == [
        "astronaut_mid_png.png", "astronaut_mid_q85.jpg", "astronaut_mid_q95.jpg"]
    rows = report.compare_with_clean(report.list_images(tmp_path / "noisy"), tmp_path / "clean", lambda *a: None)
    assert len(rows) == 3 and all(r["true"] > 5 / 255 for r in rows)          # the noise of the pipeline is there
