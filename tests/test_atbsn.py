"""AT-BSN and its student against the authors' code (reference/atbsn_*.pt, aprrd_atbsn_T.pt): golden outputs,
parameter counts, and the h x h blind spot."""
from __future__ import annotations

import pytest
import torch
from conftest import load_reference

from amcfd.archs import build_arch, load_weights

# reference README: max(1e-5, 10 * max(thr, fp64)); the AT-BSN files are in 0-255, APR-RD's in 0-1
TOL = {"atbsn_atbsn.pt": 5e-3, "atbsn_nbsn.pt": 6e-3, "aprrd_atbsn_T.pt": 3e-5}


def _net(file: str, arch: str) -> tuple[dict, torch.nn.Module]:
    ref = load_reference(file)
    net = build_arch({"type": arch, **ref["config"]}).eval()
    load_weights(net, ref["state_dict"], strict=True)
    assert list(net.state_dict()) == list(ref["state_dict"])
    assert sum(p.numel() for p in net.parameters()) == ref["params"]
    return ref, net


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


@torch.no_grad()
def test_atbsn_matches_the_authors_for_every_hole_size():
    ref, net = _net("atbsn_atbsn.pt", "ATBSN")
    tol = TOL["atbsn_atbsn.pt"]
    holes = sorted(ref["outputs_by_hole_size"], key=int)
    for hole in holes:
        assert _diff(net(ref["input"], hole_size=int(hole)), ref["outputs_by_hole_size"][hole]) <= tol, hole
    assert _diff(net(ref["input"]), ref["output"]) <= tol  # the default hole size 1
    assert _diff(net(ref["input_b2_32"], hole_size=3), ref["output_b2_32_hole_3"]) <= tol
    one_pass = net.forward_holes(ref["input"], [int(h) for h in holes])
    for hole, out in zip(holes, one_pass):
        assert _diff(out, ref["outputs_by_hole_size"][hole]) <= tol, hole


@torch.no_grad()
def test_aprrd_inference_and_its_six_targets_from_one_unet_pass():
    ref, net = _net("aprrd_atbsn_T.pt", "ATBSN")
    tol = TOL["aprrd_atbsn_T.pt"]
    assert _diff(net.forward_holes(ref["input"], [1], pad=ref["T_padding"])[0], ref["output"]) <= tol
    targets = net.forward_holes(ref["input"], ref["T_hole_sizes"], pad=ref["T_padding"])
    assert len(targets) == len(ref["T_elements"]) == 6
    for i, (ours, theirs) in enumerate(zip(targets, ref["T_elements"])):
        assert _diff(ours, theirs) <= tol, i


@torch.no_grad()
def test_atbsn_student_matches_the_authors_including_non_square():
    ref, net = _net("atbsn_nbsn.pt", "ATBSNStudent")
    assert _diff(net(ref["input"]), ref["output"]) <= TOL["atbsn_nbsn.pt"]
    assert _diff(net(ref["input_32x96"]), ref["output_32x96"]) <= TOL["atbsn_nbsn.pt"]


@pytest.mark.parametrize("file, arch", [("atbsn_atbsn.pt", "ATBSN"), ("atbsn_nbsn.pt", "ATBSNStudent")])
def test_published_presets_have_the_published_parameter_counts(file, arch):
    ref = load_reference(file)
    with torch.device("meta"):
        nets = [build_arch({"type": arch, "preset": "published"}),
                build_arch({"type": arch, **ref["published_config"]})]
    assert [sum(p.numel() for p in n.parameters()) for n in nets] == [ref["published_params"]] * 2


@torch.no_grad()
def test_value_range_scales_around_the_network_and_odd_sizes_round_trip():
    torch.manual_seed(1)
    for arch in ("ATBSN", "ATBSNStudent"):
        net = build_arch({"type": arch, "mid_channels": 4}).eval()
        scaled = build_arch({"type": arch, "mid_channels": 4, "value_range": 255}).eval()
        scaled.load_state_dict(net.state_dict())
        x = torch.rand(1, 3, 37, 45)
        assert net(x).shape == x.shape
        assert torch.allclose(scaled(x), net(x * 255) / 255, atol=1e-5)


# ---------------------------------------------------------------- the blind spot

def _grad_map(net: torch.nn.Module, hole: int, i: int, j: int) -> torch.Tensor:
    """|d output(i, j) / d input| summed over channels, (H, W), float64."""
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64, requires_grad=True)
    net(x, hole_size=hole)[0, :, i, j].sum().backward()
    return x.grad[0].abs().sum(0)


@pytest.fixture(scope="module")
def tiny_atbsn():
    torch.manual_seed(0)
    return build_arch({"type": "ATBSN", "mid_channels": 8}).double().eval()


PARITIES = [(32, 32), (33, 32), (32, 33), (33, 33)]  # the four row/column parities of the centre pixel


@pytest.mark.parametrize("hole", [1, 3, 9])
@torch.no_grad()
def test_perturbing_inside_the_square_leaves_the_centre_and_just_outside_changes_it(tiny_atbsn, hole):
    r = hole // 2
    for i, j in PARITIES:
        x = torch.rand(1, 3, 64, 64, dtype=torch.float64)
        base = tiny_atbsn(x, hole_size=hole)[0, :, i, j]
        inside = x.clone()
        inside[..., i - r: i + r + 1, j - r: j + r + 1] = torch.rand(3, hole, hole, dtype=torch.float64)
        assert torch.allclose(tiny_atbsn(inside, hole_size=hole)[0, :, i, j], base, rtol=0, atol=1e-12), (i, j)
        for di, dj in [(-r - 1, 0), (r + 1, 0), (0, -r - 1), (0, r + 1)]:  # straight beyond each side
            outside = x.clone()
            outside[..., i + di, j + dj] += 1.0
            change = (tiny_atbsn(outside, hole_size=hole)[0, :, i, j] - base).abs().max()
            assert change > 1e-6, (i, j, di, dj)


def test_no_hole_sees_the_pixel_itself(tiny_atbsn):
    assert _grad_map(tiny_atbsn, 0, 32, 33)[32, 33] > 0


@pytest.mark.parametrize("hole, hidden", [(5, 26), (9, 90)])
def test_large_holes_hide_a_bit_more_on_the_side_given_by_parity(tiny_atbsn, hole, hidden):
    """Measured (and the reference README's probe: 26 and 90 zero-gradient pixels): for h = 5 and 9 the
    centred h x h square is hidden for every pixel parity, plus hidden - h*h further pixels (1 for 5, 9 for 9)
    that lie in an (h+1) x (h+1) box: it has the extra row above the square for even rows and below it for odd
    rows, the extra column left of it for even columns and right of it for odd columns. So the blind window's
    position depends on parity only through these few extra pixels; the centred square is always blind."""
    r = hole // 2
    for i, j in PARITIES:
        zero = _grad_map(tiny_atbsn, hole, i, j) == 0
        assert zero[i - r: i + r + 1, j - r: j + r + 1].all(), (i, j)
        rows, cols = zero.nonzero().unbind(1)
        assert len(rows) == hidden, (i, j)
        top, left = (i - r - 1, j - r - 1)
        top, left = top + i % 2, left + j % 2  # odd: the box starts at the square and grows down/right
        assert (rows.min().item(), rows.max().item()) == (top, top + hole), (i, j)
        assert (cols.min().item(), cols.max().item()) == (left, left + hole), (i, j)
