"""ops/recharge.py: the local Wiener blend of a blind-spot output with the noisy input."""
import pytest
import torch
import torch.nn.functional as F

from amcfd.ops.recharge import detail_recharge, local_residual_energy, noise_floor


def _scene(size: int = 96, seed: int = 0):
    """Left half flat grey, right half fine stripes; i.i.d. noise of std 0.02."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.full((1, 3, size, size), 0.5)
    stripes = 0.5 + 0.3 * torch.sign(torch.sin(torch.arange(size // 2) * 2.0))
    clean[..., size // 2:] = stripes
    noisy = clean + 0.02 * torch.randn(clean.shape, generator=g)
    return clean, noisy


def test_flat_area_keeps_the_denoised_value_texture_gets_the_photo_back():
    clean, noisy = _scene()
    flat = torch.full_like(clean, 0.5)            # a "denoiser" that erased the stripes
    out = detail_recharge(noisy, flat, window=9, quantile=0.05)
    left, right = (slice(None), slice(None), slice(10, -10), slice(5, 40)), (..., slice(10, -10), slice(58, -5))
    assert (out[left] - flat[left]).abs().mean() < 0.3 * (noisy[left] - flat[left]).abs().mean()
    assert (out[right] - noisy[right]).abs().mean() < 0.05 * (noisy[right] - flat[right]).abs().mean()
    mse = lambda a: F.mse_loss(a, clean).item()  # noqa: E731
    assert mse(out) < min(mse(noisy), mse(flat))


def test_noise_floor_is_the_noise_variance_on_a_good_estimate():
    clean, noisy = _scene(seed=1)
    energy = local_residual_energy(noisy, clean, window=9)       # perfect D: residual = noise
    floor = noise_floor(energy, quantile=0.5).item()
    assert floor == pytest.approx(0.02 ** 2, rel=0.1)
    assert noise_floor(energy, 0.05).item() < floor


def test_perfect_estimate_is_kept_and_shapes_and_batches_are_independent():
    clean, noisy = _scene(seed=2)
    out = detail_recharge(noisy, clean)
    assert F.mse_loss(out, clean) < 0.2 * F.mse_loss(noisy, clean)
    both = detail_recharge(torch.cat([noisy, noisy.flip(-1)]), torch.cat([clean, clean.flip(-1)]))
    torch.testing.assert_close(both[:1], out)
    tiny = detail_recharge(noisy[..., :4, :5], clean[..., :4, :5], window=9)   # window larger than the image
    assert tiny.shape == (1, 3, 4, 5) and torch.isfinite(tiny).all()


@pytest.mark.parametrize("window, quantile", [(4, 0.05), (0, 0.05), (9, 0.0), (9, 1.0)])
def test_bad_settings_are_refused(window, quantile):
    clean, noisy = _scene()
    with pytest.raises(ValueError):
        detail_recharge(noisy, clean, window, quantile)


def test_amsnet_recharge_option():
    from torch import nn

    from amcfd.methods.amsnet import AMSNet
    from amcfd.registry import ConfigError

    clean, noisy = _scene(64, seed=3)
    net = nn.Conv2d(3, 3, 3, padding=1, bias=False)
    with torch.no_grad():
        net.weight.zero_()
        net.weight[:, :, 1, 1] = torch.eye(3)        # identity: a hidden (zeroed) pixel comes back as 0
    torch.manual_seed(0)
    plain = AMSNet(net, pd_test=1).eval().denoise(noisy)
    torch.manual_seed(0)
    recharged = AMSNet(net, pd_test=1, recharge=True, recharge_window=5).eval().denoise(noisy)
    torch.testing.assert_close(recharged, detail_recharge(noisy, plain, 5, 0.05))
    assert F.mse_loss(recharged, clean) < F.mse_loss(plain, clean)
    for bad in ({"recharge": "yes"}, {"recharge_window": 4}, {"recharge_quantile": 1.5}):
        with pytest.raises(ConfigError, match=f"method.{next(iter(bad))}"):
            AMSNet(net, **bad)
