"""The posterior-mean teacher: losses/posterior.py, archs/posterior.py and AMSNet's ``posterior`` option."""
from __future__ import annotations

import pytest
import torch
from test_engine import tiny_options

from amcfd.archs import build_arch
from amcfd.losses.posterior import gaussian_nll, posterior_loss, posterior_mean
from amcfd.methods.amsnet import AMSNet
from amcfd.registry import ConfigError

TINY = {"type": "Posterior", "net": {"type": "DnCNN", "in_nc": 3, "out_nc": 3, "nc": 8, "nb": 3}, "head_channels": 4}


def test_the_posterior_mean_is_the_pixel_without_noise_and_the_prior_when_noise_dominates():
    y, mu = torch.tensor([4.0]), torch.tensor([0.0])
    assert posterior_mean(y, mu, torch.tensor([1.0]), torch.tensor([3.0])).item() == pytest.approx(1.0)  # by hand
    assert posterior_mean(y, mu, torch.tensor([1.0]), torch.tensor([1e-9])).item() == pytest.approx(4.0)
    assert posterior_mean(y, mu, torch.tensor([1e-9]), torch.tensor([1.0])).item() == pytest.approx(0.0, abs=1e-6)


def test_the_likelihood_is_the_gaussians():
    y, mu, var_p, var_n = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]), torch.tensor([0.5, 1.0]), 0.5
    expected = torch.distributions.Normal(mu, (var_p + var_n).sqrt()).log_prob(y).neg().mean() - 0.5 * torch.log(
        torch.tensor(2 * torch.pi))
    assert gaussian_nll(y, mu, var_p, torch.tensor(var_n)).item() == pytest.approx(expected.item(), rel=1e-6)
    only_first = gaussian_nll(y, mu, var_p, torch.tensor(var_n), where=torch.tensor([True, False]))
    assert only_first.item() == pytest.approx(0.5 * (1.0 + 0.0), rel=1e-6)


def test_the_noise_curve_interpolates_its_knots_per_channel():
    net = build_arch({**TINY, "knots": 3})
    with torch.no_grad():
        net.noise_curve.copy_(torch.log(torch.expm1(torch.tensor([[1.0, 2.0, 4.0]] * 3))))   # variances 1, 2, 4
    intensity = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0, 2.0]).view(1, 1, 1, -1).expand(1, 3, 1, 6)
    assert net.noise_variance(intensity)[0, 1, 0].tolist() == pytest.approx([1, 1.5, 2, 3, 4, 4])


def test_the_noise_curve_learns_a_known_poisson_gaussian_level():
    """With the clean image as the prior mean, AMSNet's posterior loss (its default prior weight) fits the noise
    curve to sigma_n^2(I) = a I + b, although the prior head sees the same intensities: the learned level is within
    15% of the truth at low, mid and high intensities."""
    torch.manual_seed(0)
    a, b = 0.01, 4e-4
    clean = torch.linspace(0.1, 0.9, 64).view(1, 1, 1, -1).expand(2, 3, 64, 64).contiguous()
    noisy = clean + torch.randn_like(clean) * (a * clean + b).sqrt()
    net = build_arch(TINY)
    optimizer = torch.optim.Adam([net.noise_curve, *net.head.parameters()], lr=0.05)
    weight = AMSNet(net, posterior=True).prior_weight
    for _ in range(600):
        prior_var = net.head(torch.cat([clean, clean], 1)).exp()
        loss = sum(posterior_loss(noisy, clean, prior_var, net.noise_variance(clean), prior_weight=weight).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    levels = net.noise_variance(torch.tensor([0.25, 0.5, 0.75]).view(1, 1, 1, 3).expand(1, 3, 1, 3))[0, :, 0].sqrt()
    truth = (a * torch.tensor([0.25, 0.5, 0.75]) + b).sqrt()
    assert ((levels / truth - 1).abs() < 0.15).all(), (levels, truth)


def test_amsnet_posterior_trains_and_denoises():
    torch.manual_seed(1)
    net = build_arch(TINY)
    method = AMSNet(net, pd_train=2, pd_test=2, posterior=True, r3=True, r3_copies=2)
    noisy = torch.rand(2, 3, 24, 24)
    losses = method({"noisy": noisy})
    assert set(losses) == {"l_nll", "l_prior"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert net.noise_curve.grad is not None and net.head[0].weight.grad is not None
    out = method.eval().denoise(noisy)
    assert out.shape == noisy.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("network, options, message", [
    ({"type": "DnCNN", "in_nc": 3, "out_nc": 3, "nc": 8, "nb": 3}, {}, "network.type Posterior"),
    (TINY, {"recharge": True}, "excludes method.recharge"),
    (TINY, {"mask_mode": "element"}, "excludes method.mask_mode 'element'"),
])
def test_posterior_refuses_what_it_cannot_do(network, options, message):
    with pytest.raises(ConfigError, match=message):
        AMSNet(build_arch(network), posterior=True, **options)


def test_a_posterior_run_trains_saves_and_is_applied_like_any_other(tmp_path):
    from amcfd.engine.inference import build_denoiser
    from amcfd.engine.trainer import Trainer
    from amcfd.options import validate

    opt = tiny_options(tmp_path, total_iter=4)
    opt["network"] = TINY
    opt["method"] = {**opt["method"], "posterior": True}
    trainer = Trainer(validate(opt, "train"))
    trainer.train()
    checkpoint = next((trainer.ckpt_dir).glob("iter_00000004.pth"))
    method, denoise = build_denoiser(validate({"name": "t", "device": "cpu",
                                               "path": {"pretrain_network": str(checkpoint)}}, "valid"))
    assert method.posterior and denoise(torch.rand(1, 3, 20, 22)).shape == (1, 3, 20, 22)


def test_the_pixel_share_is_one_without_noise_and_zero_when_noise_dominates():
    """AMSNet.pixel_share: w_y = sigma_p^2 / (sigma_p^2 + sigma_n^2), through the P_s multi-mask pipeline."""
    net = build_arch(TINY)
    method = AMSNet(net, pd_train=2, pd_test=2, posterior=True).eval()
    noisy = torch.rand(1, 3, 16, 18)
    for variance, expected in ((1e-12, 1.0), (1e6, 0.0)):
        with torch.no_grad():
            net.noise_curve.fill_(torch.log(torch.expm1(torch.tensor(variance))).item() if variance < 1e3
                                  else variance)                      # softplus(x) = x for large x
        share = method.pixel_share(noisy)
        assert share.shape == noisy.shape and torch.allclose(share, torch.full_like(share, expected), atol=1e-4)
    with pytest.raises(ConfigError, match="method.posterior: true"):
        AMSNet(build_arch({"type": "DnCNN", "in_nc": 3, "out_nc": 3, "nc": 8, "nb": 3})).pixel_share(noisy)
