"""NBSN, APR-RD's (and TM-BSN's) 1.02M plain U-Net, against the authors' code (reference/aprrd_nbsn102.pt)."""
from __future__ import annotations

import torch
from conftest import load_reference

from amcfd.archs import build_arch, load_weights

TOL = 3e-5  # reference README: max(1e-5, 10 * max(thr, fp64))


@torch.no_grad()
def test_nbsn_matches_the_authors_including_non_square():
    ref = load_reference("aprrd_nbsn102.pt")
    net = build_arch({"type": "NBSN", **ref["config"]}).eval()
    load_weights(net, ref["state_dict"], strict=True)
    assert list(net.state_dict()) == list(ref["state_dict"])
    for suffix in ("", "_32x96"):
        out = net(ref[f"input{suffix}"])
        assert out.shape == ref[f"output{suffix}"].shape
        assert (out - ref[f"output{suffix}"]).abs().max() <= TOL, suffix


def test_published_preset_has_the_published_parameter_count():
    ref = load_reference("aprrd_nbsn102.pt")
    with torch.device("meta"):
        net = build_arch({"type": "NBSN", "preset": "published"})
    assert sum(p.numel() for p in net.parameters()) == ref["published_params"] == 1_021_107


@torch.no_grad()
def test_small_preset_handles_odd_sizes():
    net = build_arch({"type": "NBSN", "preset": "small"}).eval()
    x = torch.rand(2, 3, 37, 45)
    out = net(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
