"""DBSNl (AP-BSN): golden outputs, published size, blind-spot property, state_dict round trip."""
from __future__ import annotations

import pytest
import torch
from conftest import load_reference

import amcfd.archs.dbsn  # noqa: F401  (registers DBSNl)
from amcfd.archs.dbsn import DBSNl
from amcfd.registry import ARCHS

TOL = 1e-5


@pytest.fixture(scope="module")
def ref():
    return load_reference("apbsn_dbsnl.pt")


@pytest.fixture(scope="module")
def ref_net(ref):
    net = DBSNl(**ref["config"]).eval()
    net.load_state_dict(ref["state_dict"], strict=True)
    return net


def test_registered():
    assert ARCHS.get("DBSNl") is DBSNl
    assert set(DBSNl.PRESETS) >= {"published", "small"}


def test_reference_has_nonzero_centre_taps(ref):
    # the point of the golden test: the saved weights are not pre-masked
    w = ref["state_dict"]["branch1.body.0.weight"]
    assert w[:, :, 1, 1].abs().max() > 0


@pytest.mark.parametrize("case", ["", "_odd_37x45"])
def test_golden(ref, ref_net, case):
    with torch.no_grad():
        out = ref_net(ref["input" + case])
    expected = ref["output" + case]
    assert out.shape == expected.shape
    assert (out - expected).abs().max().item() <= TOL


def test_forward_does_not_mutate_weights(ref, ref_net):
    before = ref_net.branch2.body[0].weight.detach().clone()
    with torch.no_grad():
        ref_net(ref["input"][..., :16, :16])
    assert torch.equal(ref_net.branch2.body[0].weight, before)
    assert torch.equal(before, ref["state_dict"]["branch2.body.0.weight"])


def test_param_counts(ref):
    assert ref["published_config"] == DBSNl.PRESETS["published"]
    with torch.device("meta"):
        net = DBSNl(**DBSNl.PRESETS["published"])
    assert sum(p.numel() for p in net.parameters()) == ref["published_params"] == 3_656_131
    small = DBSNl(**ref["config"])
    assert sum(p.numel() for p in small.parameters()) == ref["params"]


def test_state_dict_round_trip(ref, ref_net):
    sd = ref_net.state_dict()
    assert list(sd) == list(ref["state_dict"])
    fresh = DBSNl(**ref["config"])
    fresh.load_state_dict(sd, strict=True)
    for k, v in ref["state_dict"].items():
        assert torch.equal(fresh.state_dict()[k], v), k


def test_blind_spot():
    torch.manual_seed(0)
    net = DBSNl(**DBSNl.PRESETS["small"]).eval()
    with torch.no_grad():  # non-zero centre taps must not leak through
        net.branch1.body[0].weight.normal_()
        net.branch2.body[0].weight.normal_()
    x = torch.rand(1, 3, 32, 32) * 255
    i, j = 15, 17
    x2 = x.clone()
    x2[0, :, i, j] += 100.0
    with torch.no_grad():
        y, y2 = net(x), net(x2)
    assert torch.equal(y[0, :, i, j], y2[0, :, i, j])
    diff = (y - y2).abs()
    assert diff.max() > 0
    # and gradient check: d out(i,j) / d in(i,j) is exactly zero, for every channel pair
    xg = x.clone().requires_grad_(True)
    net(xg)[0, :, i, j].sum().backward()
    assert xg.grad[0, :, i, j].abs().max() == 0
    assert xg.grad.abs().sum() > 0
