"""AP-BSN and AM-BSN methods against the authors' wrappers (reference/apbsn_apbsn.pt, ambsn_bsn.pt).

The reference inputs and outputs are in [0, 255]: the methods get input / 255 with value_range 255
and their outputs are compared times 255, with the README's tolerance (1e-5 absolute on that scale).
"""
from __future__ import annotations

import pytest
import torch
from conftest import load_reference

import amcfd.archs.ambsn  # noqa: F401 - registers AMBSN
import amcfd.archs.dbsn  # noqa: F401 - registers DBSNl
from amcfd.archs import build_arch, convert_state_dict
from amcfd.methods.apbsn import AMBSN, APBSN, bsn_pd_forward
from amcfd.ops.refine import replacement_masks
from amcfd.registry import ConfigError

TOLERANCE = 1e-5  # reference README, on the [0, 255] scale of the golden outputs
VR = 255.0


def _load_net(ref: dict, arch: str):
    cfg = ref["config"]
    sd = convert_state_dict(arch, ref["state_dict"], prefix="bsn.")
    net = build_arch({"type": arch, "in_ch": cfg["in_ch"], "base_ch": cfg["bsn_base_ch"],
                      **({"num_module": cfg["bsn_num_module"]} if arch == "DBSNl" else {})})
    net.load_state_dict(sd, strict=True)
    return net.eval()


def _check(out: torch.Tensor, expected: torch.Tensor) -> float:
    assert out.shape == expected.shape
    err = (out * VR - expected).abs().max().item()
    assert err < TOLERANCE, f"max abs error {err:.3g} (0-255 scale)"
    return err


@pytest.fixture(scope="module")
def ap_ref() -> dict:
    return load_reference("apbsn_apbsn.pt")


@pytest.fixture(scope="module")
def am_ref() -> dict:
    return load_reference("ambsn_bsn.pt")


@pytest.fixture(scope="module")
def apbsn(ap_ref) -> APBSN:
    c = ap_ref["config"]
    return APBSN(_load_net(ap_ref, "DBSNl"), pd_a=c["pd_a"], pd_b=c["pd_b"], pd_pad=c["pd_pad"], r3=c["R3"],
                 r3_copies=c["R3_T"], r3_ratio=c["R3_p"], value_range=VR).eval()


@pytest.fixture(scope="module")
def ambsn(am_ref) -> AMBSN:
    c = am_ref["config"]
    return AMBSN(_load_net(am_ref, "AMBSN"), pd_a=c["pd_a"], pd_b=c["pd_b"], pd_pad=c["pd_pad"], r3=c["R3"],
                 r3_copies=c["R3_T"], r3_ratio=c["R3_p"], value_range=VR, tta=c["TTA"]).eval()


# -- AP-BSN ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("stride, inp, out", [(5, "input_60", "forward_pd5_input_60"),
                                              (2, "input", "forward_pd2_input"),
                                              (1, "input", "forward_pd1_input")])
def test_apbsn_pd_forward_matches_authors(ap_ref, apbsn, stride, inp, out):
    with torch.no_grad():
        _check(apbsn.pd_forward(ap_ref[inp] / VR, stride), ap_ref[out])


def test_apbsn_training_mosaic_matches_authors(ap_ref, apbsn):
    # The BSN input of the training path is the authors' mosaic (value range 255 applied).
    seen = []
    handle = apbsn.net.register_forward_hook(lambda m, args, o: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            apbsn.pd_forward(ap_ref["input_60"] / VR)
    finally:
        handle.remove()
    assert torch.allclose(seen[0], ap_ref["forward_pd5_bsn_input"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("inp, out", [("input", "denoise_noR3_input"),
                                      ("input_odd_37x45", "denoise_noR3_input_odd_37x45")])
def test_apbsn_denoise_without_r3_matches_authors(ap_ref, apbsn, inp, out):
    with torch.no_grad():
        _check(apbsn.denoise_with(ap_ref[inp] / VR, r3=False), ap_ref[out])
    assert torch.equal(ap_ref["output"], ap_ref["denoise_noR3_input"])


def test_apbsn_denoise_with_r3_matches_authors(ap_ref, apbsn):
    with torch.no_grad():
        _check(apbsn.denoise_with(ap_ref["input"] / VR, replace_masks=ap_ref["denoise_R3_masks"]),
               ap_ref["denoise_R3_input"])


def test_apbsn_r3_masks_follow_authors_random_stream(ap_ref, apbsn):
    # The authors draw rand_like(x) < p per copy after manual_seed(7): replacement_masks does the same,
    # so a seeded denoise() reproduces their R3 output without injected masks.
    torch.manual_seed(ap_ref["denoise_R3_seed"])
    masks = replacement_masks(ap_ref["input"].shape, 8, 0.16, "element")
    assert torch.equal(masks, ap_ref["denoise_R3_masks"])
    torch.manual_seed(ap_ref["denoise_R3_seed"])
    _check(apbsn.denoise(ap_ref["input"] / VR), ap_ref["denoise_R3_input"])


def test_apbsn_value_range_one_on_raw_input(ap_ref, apbsn):
    method = APBSN(apbsn.net, value_range=1.0, r3=False).eval()
    with torch.no_grad():
        out = method.denoise(ap_ref["input"])
    assert (out - ap_ref["denoise_noR3_input"]).abs().max().item() < TOLERANCE


def test_apbsn_odd_size_with_r3_keeps_shape(ap_ref, apbsn):
    torch.manual_seed(0)
    with torch.no_grad():
        out = apbsn.denoise(ap_ref["input_odd_37x45"] / VR)
    assert out.shape == ap_ref["input_odd_37x45"].shape and torch.isfinite(out).all()


# -- AM-BSN ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("stride, inp, out", [(5, "input_60", "forward_pd5_input_60"),
                                              (2, "input", "forward_pd2_input")])
def test_ambsn_pd_forward_matches_authors(am_ref, ambsn, stride, inp, out):
    with torch.no_grad():
        _check(ambsn.pd_forward(am_ref[inp] / VR, stride), am_ref[out])


@pytest.mark.parametrize("inp, out", [("input", "denoise_TTA_noR3_input"),
                                      ("input_60", "denoise_TTA_noR3_input_60")])
def test_ambsn_tta_without_r3_matches_authors(am_ref, ambsn, inp, out):
    with torch.no_grad():
        _check(ambsn.denoise_with(am_ref[inp] / VR, r3=False), am_ref[out])


def test_ambsn_no_tta_odd_size_matches_authors(am_ref, ambsn):
    method = AMBSN(ambsn.net, tta=False, r3=False).eval()
    with torch.no_grad():
        _check(method.denoise(am_ref["input_odd_37x45"] / VR), am_ref["denoise_noTTA_noR3_input_odd_37x45"])


def test_ambsn_tta_with_r3_matches_authors(am_ref, ambsn):
    with torch.no_grad():
        _check(ambsn.denoise_with(am_ref["input"] / VR, replace_masks=am_ref["denoise_R3_masks"]),
               am_ref["denoise_TTA_R3_input"])


def test_ambsn_tta_odd_size_keeps_shape(am_ref, ambsn):
    with torch.no_grad():
        out = ambsn.denoise_with(am_ref["input_odd_37x45"] / VR, r3=False)
    assert out.shape == am_ref["input_odd_37x45"].shape and torch.isfinite(out).all()


# -- options and training -------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [dict(pd_a=0), dict(pd_b=2.0), dict(pd_pad=-1), dict(r3=1),
                                    dict(r3_ratio=1.5), dict(value_range=0), dict(pad_mode="wrap"),
                                    dict(chunk_size=-1)])
def test_apbsn_rejects_bad_options(kwargs):
    with pytest.raises(ConfigError, match="option 'method"):
        APBSN(torch.nn.Identity(), **kwargs)


@pytest.mark.parametrize("kwargs", [dict(tta_strides=[2, 0]), dict(tta_weights=[0.8]), dict(tta="yes")])
def test_ambsn_rejects_bad_options(kwargs):
    with pytest.raises(ConfigError, match="option 'method"):
        AMBSN(torch.nn.Identity(), **kwargs)


def test_training_is_blind_to_the_target_pixel():
    # Through P_5 and the BSN, output pixel p never depends on input pixel p (no identity shortcut).
    torch.manual_seed(0)
    net = build_arch({"type": "DBSNl", "preset": "small"})
    x = torch.rand(1, 3, 30, 30, requires_grad=True)
    out = bsn_pd_forward(net, x * VR, 5, 2)
    out[0, :, 12, 17].sum().backward()
    assert x.grad[0, :, 12, 17].abs().max().item() == 0.0
    assert x.grad.abs().sum().item() > 0


def test_apbsn_training_lowers_the_loss():
    torch.manual_seed(0)
    clean = torch.rand(1, 3, 1, 1) * 0.6 + 0.2 + 0.1 * torch.rand(8, 3, 60, 60)   # flat-ish images
    noisy = (clean + 0.1 * torch.randn_like(clean)).clamp(0, 1)
    method = APBSN(build_arch({"type": "DBSNl", "preset": "small"}))  # value_range 255, as the authors
    opt = torch.optim.Adam(method.net.parameters(), lr=5e-3)
    losses = []
    for step in range(30):
        batch = noisy[(step * 2) % 8:(step * 2) % 8 + 2]
        loss = method({"noisy": batch})["l_l1"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, f"loss {first:.4f} -> {last:.4f}"


def test_training_crop_not_divisible_is_cut():
    method = APBSN(build_arch({"type": "DBSNl", "preset": "small"}))
    losses = method({"noisy": torch.rand(2, 3, 62, 61)})
    assert set(losses) == {"l_l1"} and torch.isfinite(losses["l_l1"])
