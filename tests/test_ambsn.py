"""AM-BSN's AMBSN against the authors' code (reference/ambsn_ambsn.pt): golden outputs, keys, sharing, blind spot."""
from __future__ import annotations

import pytest
import torch
from conftest import load_reference

import amcfd.archs.ambsn  # noqa: F401 - registers AMBSN
from amcfd.archs.ambsn import AMBSN
from amcfd.registry import ConfigError

TOLERANCE = 1e-5  # reference README
REF = "ambsn_ambsn.pt"


@pytest.fixture(scope="module")
def ref() -> dict:
    return load_reference(REF)


@pytest.fixture(scope="module")
def net(ref) -> AMBSN:
    model = AMBSN(**ref["config"]).eval()
    model.load_state_dict(ref["state_dict"], strict=True)
    return model


@pytest.mark.parametrize("case", ["", "_odd_37x45"])
def test_golden_output_matches_authors_code(ref, net, case):
    with torch.no_grad():
        out = net(ref["input" + case])
    expected = ref["output" + case]
    assert out.shape == expected.shape
    err = (out - expected).abs().max().item()
    assert err < TOLERANCE, f"max abs error {err:.3g}"


def test_masked_taps_are_not_mutated(ref, net):
    # The reference weights hold non-zero masked taps: the mask is applied in forward, not in place.
    for name in ("branch_local.head.0", "branch_global.head.0"):
        weight = ref["state_dict"][f"{name}.weight"]
        assert (weight * (1 - ref["state_dict"][f"{name}.mask"])).abs().max() > 0
        with torch.no_grad():
            net(ref["input"][..., :16, :16])
        assert torch.equal(net.get_submodule(name).weight, weight)


def test_masks_match_authors(ref, net):
    sd = net.state_dict()
    for key in ("branch_local.head.0.mask", "branch_global.head.0.mask"):
        assert torch.equal(sd[key], ref["state_dict"][key])
    assert int((sd["branch_local.head.0.mask"][0, 0] == 0).sum()) == 1
    assert int((sd["branch_global.head.0.mask"][0, 0] == 0).sum()) == 9


def test_parameter_counts(ref):
    assert ref["published_params"] == 3_837_251
    published = AMBSN(**AMBSN.PRESETS["published"])
    assert sum(p.numel() for p in published.parameters()) == ref["published_params"]
    small = AMBSN(**AMBSN.PRESETS["small"])
    assert sum(p.numel() for p in small.parameters()) == ref["params"]


def test_state_dict_keys_and_shared_modules(ref, net):
    sd = net.state_dict()
    assert list(sd) == list(ref["state_dict"])
    assert all(sd[k].shape == v.shape for k, v in ref["state_dict"].items())
    for branch in (net.branch_local, net.branch_global):
        assert branch.conv1_2 is branch.conv1_1
        assert branch.conv1_2[0].weight is branch.conv1_1[0].weight
    assert net.conv2_2 is net.conv2_1
    for a, b in ref["shared_state_dict_keys"]:
        assert sd[a].data_ptr() == sd[b].data_ptr()
    params = dict(net.named_parameters())
    assert "conv2_2.0.weight" not in params and "branch_local.conv1_2.0.weight" not in params


def test_ignored_constructor_arguments():
    a = AMBSN(base_ch=8, DCL1_num=5, DCL2_num=1, mask_type="central")
    b = AMBSN(base_ch=8)
    assert list(a.state_dict()) == list(b.state_dict())
    with pytest.raises(ConfigError):
        AMBSN(base_ch=7)


def test_blind_spot():
    torch.manual_seed(3)
    model = AMBSN(base_ch=16).eval()
    x = torch.rand(1, 3, 33, 35) * 255
    with torch.no_grad():
        y = model(x)
    x_pert = x.clone()
    i, j = 16, 17
    x_pert[0, :, i, j] += 100.0
    with torch.no_grad():
        diff = (model(x_pert) - y).abs().amax(dim=1)[0]
    assert diff[i, j].item() == 0.0
    assert diff[i, j + 1] > 0 and diff[i + 1, j] > 0
    assert (diff > 0).sum() > 100


def test_any_size_and_backward():
    model = AMBSN(**AMBSN.PRESETS["small"])
    x = torch.rand(2, 3, 19, 26, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 3, 19, 26)
    out.mean().backward()
    head = model.branch_global.head[0]
    assert head.weight.grad is not None
    assert (head.weight.grad * (1 - head.mask)).abs().max() == 0
