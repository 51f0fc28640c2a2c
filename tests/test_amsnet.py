"""AMSNet method: training step, multi-mask inference, AMSNet-P, R^3, options (tiny networks)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from amcfd.archs import build_arch
from amcfd.methods.amsnet import AMSNet, amsnet_denoise, multi_mask_denoise, single_mask_loss
from amcfd.ops.masks import complementary_masks
from amcfd.ops.pd import pd_down, pd_up
from amcfd.registry import METHODS, ConfigError


class TinyNet(nn.Module):
    """Unconstrained receptive field (three 3x3 convs) with a global residual; counts forwards."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                                  nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
        self.batch_sizes: list[int] = []

    def forward(self, x):
        self.batch_sizes.append(x.shape[0])
        return x + self.body(x)


def small_net(name: str) -> nn.Module:
    return build_arch({"type": name, "preset": "small"}).eval()


def test_registered_and_built_from_options():
    net = TinyNet()
    method = METHODS.build({"type": "AMSNet", "pd_train": 5, "r3": True}, net, where="method")
    assert isinstance(method, AMSNet) and method.net is net and method.r3
    with pytest.raises(ConfigError, match="method.mask_mode"):
        AMSNet(net, mask_mode="random")
    with pytest.raises(ConfigError, match="method.num_masks"):
        AMSNet(net, num_masks=1)
    with pytest.raises(ConfigError, match="method.mask_ratio"):
        AMSNet(net, mask_ratio=[0.5, 0.6])
    with pytest.raises(ConfigError, match="method.r3"):
        AMSNet(net, r3=0.16)


def test_training_loss_is_l1_on_the_hidden_pixels_of_one_branch():
    net, noisy = TinyNet(), torch.rand(2, 3, 20, 20)
    sub = pd_down(noisy, 5)                                             # (50, 3, 4, 4)
    masks = complementary_masks(sub)
    loss, out, _ = single_mask_loss(net, noisy, 5, masks=masks, return_output=True)
    assert net.batch_sizes == [50]                                      # one branch only
    keep = masks[0].expand_as(sub)
    torch.testing.assert_close(out, net(sub * keep))
    torch.testing.assert_close(loss, (out - sub).abs()[~keep].mean())
    method = AMSNet(net)
    terms = method({"noisy": noisy})
    assert set(terms) == {"l_mask"} and terms["l_mask"].requires_grad


def test_training_crops_that_are_not_multiples_of_the_stride_are_cut():
    net = TinyNet()
    loss = single_mask_loss(net, torch.rand(1, 3, 23, 21), 5)
    assert torch.isfinite(loss) and net.batch_sizes == [25]
    with pytest.raises(ValueError, match="smaller than the PD stride"):
        single_mask_loss(net, torch.rand(1, 3, 4, 21), 5)


def hidden_in_image(masks: torch.Tensor, branch: int, stride: int, shape) -> torch.Tensor:
    """Image-space (B, C, H, W) map of the pixels hidden by ``branch``."""
    hidden = (~masks[branch]).expand(-1, shape[1], -1, -1).float()
    return pd_up(hidden, stride).bool()


@pytest.mark.parametrize("arch", ["TinyNet", "Restormer", "UNet"])
def test_hidden_pixel_value_never_reaches_its_training_output(arch):
    net = TinyNet() if arch == "TinyNet" else small_net(arch)
    noisy = torch.rand(1, 3, 40, 40)
    masks = complementary_masks(pd_down(noisy, 5))
    _, out, _ = single_mask_loss(net, noisy, 5, masks=masks, return_output=True)
    hidden = hidden_in_image(masks, 0, 5, noisy.shape)
    perturbed = torch.where(hidden, torch.rand_like(noisy), noisy)
    _, out2, _ = single_mask_loss(net, perturbed, 5, masks=masks, return_output=True)
    hidden_sub = ~masks[0].expand_as(out)
    assert torch.equal(out[hidden_sub], out2[hidden_sub])
    # and visible values do reach the output (the test can fail)
    moved = torch.where(~hidden, torch.rand_like(noisy), noisy)
    _, out3, _ = single_mask_loss(net, moved, 5, masks=masks, return_output=True)
    assert not torch.allclose(out[hidden_sub], out3[hidden_sub])


def test_hidden_pixel_gets_no_gradient_at_inference():
    """Eq. 7: each output pixel comes from the branch that hid it, so d out[p] / d in[p] = 0."""
    net = TinyNet()
    noisy = torch.rand(1, 3, 12, 12, requires_grad=True)
    out = amsnet_denoise(net, noisy, 2)
    for y, x in [(0, 0), (5, 7), (11, 3)]:
        (grad,) = torch.autograd.grad(out[0, :, y, x].sum(), noisy, retain_graph=True)
        assert torch.all(grad[0, :, y, x] == 0) and grad.abs().sum() > 0


def test_inference_assembles_each_pixel_from_the_branch_that_hid_it_eq7():
    net = TinyNet()
    sub = torch.rand(4, 3, 8, 8)
    masks = complementary_masks(sub, k=3)
    out, branches = multi_mask_denoise(net, sub, masks, return_branches=True)
    assert net.batch_sizes == [12]                                      # all branches in one forward
    expected = sum((~masks[i]).float() * branches[i] for i in range(3))
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(branches[1], net(sub * masks[1]))


@pytest.mark.parametrize("r3", [False, True])
def test_inference_keeps_odd_sizes(r3):
    method = AMSNet(TinyNet(), r3=r3, r3_copies=3).eval()
    noisy = torch.rand(2, 3, 37, 45)
    out = method.denoise(noisy)
    assert out.shape == noisy.shape and torch.isfinite(out).all()


def test_odd_sizes_with_a_real_denoiser():
    method = AMSNet(small_net("Restormer"), r3=True, r3_copies=2).eval()
    assert method.denoise(torch.rand(1, 3, 21, 19)).shape == (1, 3, 21, 19)


@pytest.mark.parametrize("r3", [False, True])
def test_batched_and_looped_inference_agree_for_the_same_masks(r3):
    net = TinyNet()
    noisy = torch.rand(2, 3, 16, 16)
    results, calls = [], []
    for batched in (True, False):
        net.batch_sizes = []
        torch.manual_seed(7)                                            # the same random draws
        results.append(AMSNet(net, r3=r3, batched=batched).eval().denoise(noisy))
        calls.append(net.batch_sizes)
    torch.testing.assert_close(results[0], results[1], atol=1e-6, rtol=0)
    if r3:
        assert calls[0] == [16, 32] and calls[1] == [8, 8] + [2] * 16  # 8 copies x 2 branches
    else:
        assert calls == [[16], [8, 8]]


def test_chunk_size_bounds_every_forward():
    net = TinyNet()
    noisy = torch.rand(1, 3, 16, 16)
    torch.manual_seed(3)
    whole = AMSNet(net, r3=True).eval().denoise(noisy)
    net.batch_sizes = []
    torch.manual_seed(3)
    chunked = AMSNet(net, r3=True, chunk_size=6).eval().denoise(noisy)
    assert max(net.batch_sizes) <= 6
    torch.testing.assert_close(whole, chunked, atol=1e-6, rtol=0)


def test_automatic_chunking_keeps_cpu_forwards_small(monkeypatch):
    import amcfd.ops.batching as amsnet

    monkeypatch.setattr(amsnet, "CPU_PIXELS_PER_FORWARD", 16 * 16)
    with torch.no_grad():
        assert amsnet.resolve_chunk(None, torch.rand(1, 3, 8, 8)) == 4
    assert amsnet.resolve_chunk(None, torch.rand(1, 3, 8, 8)) == 0      # training: never chunked
    assert amsnet.resolve_chunk(3, torch.rand(1)) == 3
    net = TinyNet()
    noisy = torch.rand(1, 3, 16, 16)
    torch.manual_seed(3)
    auto = AMSNet(net, r3=True).eval().denoise(noisy)                  # chunk_size None: automatic
    assert net.batch_sizes == [4, 4] + [1] * 16                         # 8 sub-images of 8x8; 16 images of 16x16
    net.batch_sizes = []
    torch.manual_seed(3)
    whole = AMSNet(net, r3=True, chunk_size=0).eval().denoise(noisy)    # 0: no limit
    assert net.batch_sizes == [8, 16]
    torch.testing.assert_close(auto, whole, atol=1e-6, rtol=0)


def test_finetune_p_loss_is_eq10_on_the_full_multi_branch_output():
    net = TinyNet()
    method = AMSNet(net, finetune_smooth=True, smooth_weight=0.1)
    noisy = torch.rand(1, 3, 20, 20)
    torch.manual_seed(5)
    terms = method({"noisy": noisy})
    assert set(terms) == {"l_l1", "l_smooth"}
    torch.manual_seed(5)
    full = amsnet_denoise(net, noisy, 5)                                # pd_finetune defaults to pd_train
    from amcfd.losses.basic import smoothness_tv
    torch.testing.assert_close(terms["l_l1"], (full - noisy).abs().mean())
    torch.testing.assert_close(terms["l_smooth"], 0.1 * smoothness_tv(full))
    sum(terms.values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_element_and_checkerboard_masks_run_end_to_end():
    for mode in ("element", "checkerboard"):
        method = AMSNet(TinyNet(), mask_mode=mode, r3=True, r3_mode="element", r3_copies=2).eval()
        assert method.denoise(torch.rand(1, 3, 12, 12)).shape == (1, 3, 12, 12)
        method.train()
        assert torch.isfinite(method({"noisy": torch.rand(1, 3, 20, 20)})["l_mask"])


class NeighbourNet(nn.Module):
    """Outputs, at every position, its input at offset (dy, dx) within the (sub-)image, 0 outside: a
    network that copies one neighbour's value, the way a leak would be exploited."""

    def __init__(self, dy: int, dx: int):
        super().__init__()
        self.dy, self.dx = dy, dx

    def forward(self, x):
        h, w = x.shape[-2:]
        padded = nn.functional.pad(x, (2, 2, 2, 2))
        return padded[..., 2 + self.dy:2 + self.dy + h, 2 + self.dx:2 + self.dx + w]


def distinct_image(h: int, w: int) -> torch.Tensor:
    """(1, 3, h, w) with every value different and > 0 (a copy of a pixel is recognised by its value)."""
    n = 3 * h * w
    return ((torch.randperm(n).float() + 1) / (n + 1)).reshape(1, 3, h, w)


def own_value_reaches_output(stride: int, size: tuple, **options) -> bool:
    """Whether, for some neighbour-copying network within 2 sub-image pixels, a pixel's output (taken from the
    branch that hid it) equals its own noisy value."""
    torch.manual_seed(0)
    noisy = distinct_image(*size)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            method = AMSNet(NeighbourNet(dy, dx), pd_test=stride, **options).eval()
            if (method.denoise(noisy) == noisy).any():
                return True
    return False


@pytest.mark.parametrize("stride, size", [(2, (9, 11)), (2, (8, 7)), (3, (10, 8)), (4, (9, 10)), (5, (12, 13))])
def test_default_padding_never_shows_a_hidden_pixel_its_own_value(stride, size):
    default = AMSNet(TinyNet()).pad_mode
    sub = pd_down(distinct_image(*size), stride, pad_mode=default)
    for image in sub:                                  # no value twice in one sub-image: no copy next to its pixel
        assert torch.unique(image).numel() == image.numel()
    assert not own_value_reaches_output(stride, size)


def test_reflect_padding_leaks_at_p2_with_odd_sizes():
    # the mode the default replaced: row H mirrors row H-2, same phase for s = 2, one sub-image row away
    assert own_value_reaches_output(2, (9, 11), pad_mode="reflect")
    assert not own_value_reaches_output(2, (8, 10), pad_mode="reflect")     # even sizes are not padded
