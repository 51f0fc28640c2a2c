"""The denoiser zoo against the authors' code: golden outputs, parameter counts, any input size,
checkpoint import, activation checkpointing."""
from __future__ import annotations

import pytest
import torch
from conftest import load_reference

from amcfd.archs import build_arch, convert_state_dict, load_weights, preset_names
from amcfd.archs.nafnet import NAFBlock, SimpleGate
from amcfd.ops.pd import pad_to_multiple
from amcfd.registry import ARCHS, ConfigError

# reference file -> (registered type, suffixes of the extra input_*/output_* pairs it stores)
GOLDEN = {
    "amsnet_restormer.pt": ("Restormer", ["b2_40x48"]),
    "amsnet_nafnetbase.pt": ("NAFNetBase", ["odd_37x45"]),
    "amsnet_unet.pt": ("UNet", ["32x96"]),
    "amsnet_dncnn.pt": ("DnCNN", ["odd_37x45"]),
    "amsnet_deamnet.pt": ("DeamNet", ["32x48"]),
}
TOLERANCE = 1e-5  # reference README: max(1e-5, 10 * max(thr, fp64)) = 1e-5 for all five networks
ALL_ARCHS = ["Restormer", "NAFNetBase", "NAFNet", "DnCNN", "UNet", "DeamNet", "ATBSNStudent", "NBSN"]


def _reference_net(ref: dict, arch_type: str, config: dict | None = None) -> torch.nn.Module:
    net = build_arch({"type": arch_type, **(config or ref["config"])}).eval()
    load_weights(net, ref["state_dict"], strict=True)
    return net


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


def _count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# ---------------------------------------------------------------- golden outputs and sizes

@pytest.mark.parametrize("file", sorted(GOLDEN))
def test_golden_output_matches_authors_code(file):
    ref = load_reference(file)
    arch_type, extras = GOLDEN[file]
    net = _reference_net(ref, arch_type)
    assert _count(net) == ref["params"]
    with torch.no_grad():
        assert _max_diff(net(ref["input"]), ref["output"]) <= TOLERANCE
        for suffix in extras:
            out = net(ref[f"input_{suffix}"])
            assert _max_diff(out, ref[f"output_{suffix}"]) <= TOLERANCE, suffix


def test_restormer_withbias_variant_matches():
    ref = load_reference("amsnet_restormer.pt")
    variant = ref["variants"]["withbias"]
    net = _reference_net(variant, "Restormer", variant["config"])
    with torch.no_grad():
        assert _max_diff(net(variant["input"]), variant["output"]) <= TOLERANCE


@pytest.mark.parametrize("file", sorted(GOLDEN))
def test_published_preset_has_published_parameter_count(file):
    ref = load_reference(file)
    arch_type, _ = GOLDEN[file]
    with torch.device("meta"):  # no memory, no init cost
        from_preset = build_arch({"type": arch_type, "preset": "published"})
        from_config = build_arch({"type": arch_type, **ref["published_config"]})
    assert _count(from_preset) == ref["published_params"]
    assert _count(from_config) == ref["published_params"]
    assert list(from_preset.state_dict()) == list(from_config.state_dict())


def test_nafnet_presets_follow_the_nafnet_sidd_configs():
    with torch.device("meta"):
        width32 = build_arch({"type": "NAFNet", "preset": "sidd_width32"})
        width64 = build_arch({"type": "NAFNet", "preset": "sidd_width64"})
    # the counts the NAFNet docstring states; width 64 has ~4x the parameters of width 32
    assert _count(width32) == 29_159_715
    assert _count(width64) == 115_982_915


@pytest.mark.parametrize("arch_type", ALL_ARCHS)
def test_small_preset_accepts_odd_sizes_and_keeps_the_shape(arch_type):
    net = build_arch({"type": arch_type, "preset": "small"}).eval()
    channels = 1 if arch_type == "DnCNN" and net.model[0].in_channels == 1 else 3
    with torch.no_grad():
        for h, w in [(37, 45), (33, 16), (5, 7)]:
            x = torch.rand(2, channels, h, w)
            out = net(x)
            assert out.shape == x.shape, (h, w)
            assert torch.isfinite(out).all()


def test_a_481x321_image_round_trips():
    net = build_arch({"type": "UNet", "n_feature": 8}).eval()
    x = torch.rand(1, 3, 321, 481)
    with torch.no_grad():
        assert net(x).shape == x.shape


def test_padding_leaves_divisible_inputs_alone_and_crops_back():
    x = torch.rand(1, 3, 32, 48)
    assert pad_to_multiple(x, 16) is x
    padded = pad_to_multiple(torch.rand(1, 3, 37, 45), 8)
    assert padded.shape[-2:] == (40, 48)
    tiny = pad_to_multiple(torch.rand(1, 3, 3, 2), 32)  # reflect impossible: replicate instead
    assert tiny.shape[-2:] == (32, 32)


# ---------------------------------------------------------------- NAFNet (no golden file)

def test_simple_gate_halves_channels_by_multiplying_the_halves():
    x = torch.rand(2, 6, 4, 5)
    out = SimpleGate()(x)
    assert out.shape == (2, 3, 4, 5)
    assert torch.equal(out, x[:, :3] * x[:, 3:])


def test_nafblock_starts_as_identity_and_every_parameter_gets_gradient():
    block = NAFBlock(8)
    x = torch.rand(2, 8, 6, 6)
    assert torch.equal(block(x), x)  # beta = gamma = 0 at init, as in the paper's code
    with torch.no_grad():
        block.beta.fill_(0.5)
        block.gamma.fill_(0.5)
    block(x).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())


def test_nafnet_uses_simple_gate_not_gelu_and_flows_gradient():
    net = build_arch({"type": "NAFNet", "preset": "small"})
    blocks = [m for m in net.modules() if isinstance(m, NAFBlock)]
    assert len(blocks) == 9
    assert not any(isinstance(m, torch.nn.GELU) for m in net.modules())
    assert blocks[0].conv3.in_channels == blocks[0].conv1.out_channels // 2
    for p in net.parameters():
        if p.dim() == 4 and p.shape[0] == 1:  # beta, gamma
            torch.nn.init.normal_(p, std=0.1)
    x = torch.rand(1, 3, 21, 19, requires_grad=True)
    out = net(x)
    assert out.shape == x.shape
    out.mean().backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters())


# ---------------------------------------------------------------- activation checkpointing

@pytest.mark.parametrize("arch_type", ["Restormer", "NAFNet", "NAFNetBase"])
def test_activation_checkpointing_gives_the_same_gradients(arch_type, monkeypatch):
    import amcfd.archs.common as common

    calls = []
    real_checkpoint = common.checkpoint
    monkeypatch.setattr(common, "checkpoint", lambda *a, **k: calls.append(1) or real_checkpoint(*a, **k))
    torch.manual_seed(3)
    plain = build_arch({"type": arch_type, "preset": "small"})
    for p in plain.parameters():  # move beta/gamma off zero so every path matters
        if p.dim() == 4 and p.shape[0] == 1:
            torch.nn.init.normal_(p, std=0.1)
    ckpt = build_arch({"type": arch_type, "preset": "small", "checkpointing": True})
    ckpt.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 24, 24)
    grads = []
    for net in (plain, ckpt):
        net.train()
        net.zero_grad()
        inp = x.clone().requires_grad_(True)
        net(inp).square().mean().backward()
        grads.append([inp.grad] + [p.grad for p in net.parameters()])
    n_blocks = sum(1 for m in ckpt.modules() if type(m).__name__ in ("TransformerBlock", "NAFBlock",
                                                                       "BaselineBlock"))
    assert len(calls) == n_blocks  # every block of the checkpointing net, none of the plain one
    ckpt.eval()
    with torch.no_grad():
        ckpt(x)
    assert len(calls) == n_blocks  # never at inference
    for g_plain, g_ckpt in zip(*grads):
        assert torch.allclose(g_plain, g_ckpt, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- UNet blind-spot mode

def test_unet_blindspot_output_never_sees_its_own_pixel():
    torch.manual_seed(0)
    net = build_arch({"type": "UNet", "n_feature": 8, "blindspot": True}).eval()
    x = torch.rand(1, 3, 24, 40, requires_grad=True)  # not square, not a multiple of 32
    out = net(x)
    assert out.shape == x.shape
    out[0, :, 10, 17].sum().backward()
    grad = x.grad[0].abs().sum(0)
    assert grad[10, 17] == 0
    assert grad[9, 17] > 0 and grad[11, 17] > 0 and grad[10, 16] > 0 and grad[10, 18] > 0


def test_unet_blindspot_state_dict_has_the_wide_heads():
    net = build_arch({"type": "UNet", "n_feature": 8, "blindspot": True})
    assert net.nin_a.weight.shape == (384, 384, 1, 1)
    assert net.nin_b.weight.shape == (96, 384, 1, 1)


# ---------------------------------------------------------------- building and presets

def test_all_architectures_are_registered_with_published_and_small_presets():
    for name in ALL_ARCHS:
        assert name in ARCHS
        assert {"published", "small"} <= set(preset_names(name))
    assert ARCHS.get("Deam") is ARCHS.get("DeamNet")


def test_explicit_keys_override_the_preset_and_cfg_is_not_mutated():
    cfg = {"type": "UNet", "preset": "published", "n_feature": 8}
    net = build_arch(cfg)
    assert net.enc_conv0.out_channels == 8
    assert cfg == {"type": "UNet", "preset": "published", "n_feature": 8}


@pytest.mark.parametrize("cfg, message", [
    ({"type": "UNet", "preset": "huge"}, "network.preset"),
    ({"type": "UNet", "n_features": 8}, "network.n_features"),
    ({"type": "Restormr"}, "did you mean 'Restormer'"),
    ({"n_feature": 8}, "'type'"),
    ({"type": "DnCNN", "act_mode": "BX"}, "act_mode"),
    ({"type": "Restormer", "LayerNorm_type": "Batch"}, "LayerNorm_type"),
    ({"type": "Restormer", "dim": 6, "heads": [4, 2, 4, 8]}, "heads"),
])
def test_bad_configs_fail_with_a_clear_message(cfg, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        build_arch(cfg)


# ---------------------------------------------------------------- foreign checkpoints

def test_amsnet_lightning_checkpoint_converts_and_reproduces_the_denoiser():
    ref = load_reference("amsnet_lightning_ckpt.pt")
    dump = {k: ref[k] for k in ref["lightning_dump_keys"]}  # exactly what ModelCheckpoint writes
    arch_cfg = ref["config"]["net"]["init_args"]["net_param"]["net_param"]
    net = build_arch({"type": "Restormer", **arch_cfg}).eval()
    load_weights(net, convert_state_dict("Restormer", dump), strict=True)
    with torch.no_grad():
        assert _max_diff(net(ref["input"]), ref["output"]) <= TOLERANCE


def test_published_lightning_keys_equal_our_published_restormer_keys():
    ref = load_reference("amsnet_lightning_ckpt.pt")
    prefix = ref["denoiser_key_prefix"]
    with torch.device("meta"):
        net = build_arch({"type": "Restormer", "preset": "published"})
    theirs = [k[len(prefix):] for k in ref["published_state_dict_keys"]]
    assert sorted(theirs) == sorted(net.state_dict())


def _tiny_dncnn_state():
    net = build_arch({"type": "DnCNN", "in_nc": 1, "out_nc": 1, "nc": 4, "nb": 3})
    return net, net.state_dict()


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"params": {f"module.{k}": v for k, v in sd.items()}},
    lambda sd: {"model_weight": {"denoiser": {f"bsn.{k}": v for k, v in sd.items()}}, "epoch": 3},
    lambda sd: {"model_state_dict": sd, "optimizer": {"lr": 1.0}},
    lambda sd: {"state_dict": {f"net.dn.branches.0.{k}": v for k, v in sd.items()}, "epoch": 0},
])
def test_convert_state_dict_unwraps_containers_and_prefixes_but_keeps_real_names(wrap):
    net, sd = _tiny_dncnn_state()
    converted = convert_state_dict("DnCNN", wrap(sd))
    assert list(converted) == list(sd)  # 'model.' (DnCNN's own name) is kept
    load_weights(net, converted)


def test_convert_state_dict_with_explicit_key_and_prefix():
    _, sd = _tiny_dncnn_state()
    ckpt = {"params": {}, "params_ema": {f"net.dn.branches.1.{k}": v for k, v in sd.items()}}
    ckpt["params_ema"]["net.dn.branches.0.model.0.bias"] = sd["model.0.bias"]
    with pytest.warns(UserWarning, match="1 keys without prefix"):
        converted = convert_state_dict("DnCNN", ckpt, param_key="params_ema", prefix="net.dn.branches.1.")
    assert list(converted) == list(sd)
    with pytest.raises(ValueError, match="no 'ema'"):
        convert_state_dict("DnCNN", ckpt, param_key="ema")
    with pytest.raises(ConfigError, match="unknown architecture"):
        convert_state_dict("DnCNNN", sd)


def test_load_weights_names_missing_unexpected_and_mismatched_keys():
    net, sd = _tiny_dncnn_state()
    bad = dict(sd)
    bad.pop("model.0.weight")
    bad["model.99.weight"] = torch.zeros(1)
    bad["model.2.bias"] = torch.zeros(7)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(RuntimeError) as info:
        load_weights(net, {k: v + 1 if v.is_floating_point() else v for k, v in bad.items()})
    msg = str(info.value)
    assert "1 missing: model.0.weight" in msg and "1 unexpected: model.99.weight" in msg
    assert "model.2.bias (7,) vs (4,)" in msg
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # nothing loaded

    with pytest.warns(UserWarning, match="non-strictly"):
        report = load_weights(net, {k: v + 1 if v.is_floating_point() else v for k, v in bad.items()},
                              strict=False)
    assert report.missing == ["model.0.weight"] and report.unexpected == ["model.99.weight"]
    assert torch.equal(net.state_dict()["model.0.bias"], before["model.0.bias"] + 1)
    assert torch.equal(net.state_dict()["model.0.weight"], before["model.0.weight"])


def test_deamnet_unused_weights_are_kept_for_strict_loading():
    ref = load_reference("amsnet_deamnet.pt")
    net = build_arch({"type": "DeamNet"})
    unused = [k for k in ref["state_dict"] if k.startswith(("net2.conv_dila", "net2.cat1"))]
    assert sum(ref["state_dict"][k].numel() for k in unused) == 352_512
    assert set(net.state_dict()) == set(ref["state_dict"])
