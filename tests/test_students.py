"""AM-CFD student presets: NAFNet ``amcfd_student`` (the paper's 20.2M / 12.46 GMACs), ``cpu_student``,
DeamNet ``published``; the closed-form NAFNet cost against FlopCounterMode."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from amcfd.archs import build_arch, preset_names
from amcfd.archs.nafnet import NAFNet, nafnet_cost, search_nafnet_configs

PAPER_PARAMS, PAPER_GMACS = 20.226e6, 12.46  # AM-CFD results table: 20.226M params, "12.46 GFLOPs" at 256x256


def _params_and_macs(cfg: dict, size: int = 256) -> tuple[int, float]:
    """Parameters and FlopCounterMode MACs (FLOPs / 2, as amcfd.analysis.cost.network_cost) on the meta device."""
    with torch.device("meta"):
        net = build_arch(cfg)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net(torch.empty(1, 3, size, size))
    return sum(p.numel() for p in net.parameters()), counter.get_total_flops() / 2


def test_amcfd_student_matches_the_paper_size_within_5_percent():
    params, macs = _params_and_macs({"type": "NAFNet", "preset": "amcfd_student"})
    assert abs(params / PAPER_PARAMS - 1) < 0.05, params
    assert abs(macs / 1e9 / PAPER_GMACS - 1) < 0.05, macs
    assert (params, macs) == (20_112_675, 12_377_411_584)  # the numbers the preset comment states


def test_amcfd_student_builds_on_cpu_with_the_same_parameter_count():
    net = build_arch({"type": "NAFNet", "preset": "amcfd_student"})
    assert sum(p.numel() for p in net.parameters()) == 20_112_675


@pytest.mark.parametrize("preset", ["amcfd_student", "cpu_student", "small", "sidd_width32"])
def test_nafnet_cost_equals_counted_params_and_macs(preset):
    cfg = NAFNet.PRESETS[preset]
    expected = _params_and_macs({"type": "NAFNet", **cfg}, size=128)
    cost = nafnet_cost(cfg["width"], cfg["enc_blk_nums"], cfg["middle_blk_num"], cfg["dec_blk_nums"], size=128)
    assert cost == expected


def test_search_finds_the_amcfd_student_first():
    found = search_nafnet_configs(PAPER_PARAMS, PAPER_GMACS * 1e9, widths=(32,), max_blocks=5, max_middle=10)
    err, cfg, params, macs = found[0]
    want = NAFNet.PRESETS["amcfd_student"]
    assert cfg == {k: want[k] for k in cfg} and err < 0.01
    assert all(e <= 0.05 for e, *_ in found) and [e for e, *_ in found] == sorted(e for e, *_ in found)


def test_cpu_student_is_small_and_denoises_any_size():
    assert {"amcfd_student", "cpu_student"} <= set(preset_names("NAFNet"))
    net = build_arch({"type": "NAFNet", "preset": "cpu_student"}).eval()
    params = sum(p.numel() for p in net.parameters())
    assert params == 289_291 and params < sum(p.numel() for p in build_arch({"type": "NAFNet", "preset": "small"})
                                              .parameters())
    _, macs = _params_and_macs({"type": "NAFNet", "preset": "cpu_student"})
    assert macs == 288_713_216
    x = torch.rand(1, 3, 37, 45)
    with torch.no_grad():
        assert net(x).shape == x.shape


def test_nafnet_docstring_lists_the_student_presets():
    assert "amcfd_student" in NAFNet.__doc__ and "cpu_student" in NAFNet.__doc__


def test_deamnet_published_parameter_count():
    with torch.device("meta"):  # no weights allocated: only the count matters
        net = build_arch({"type": "DeamNet", "preset": "published"})
    assert sum(p.numel() for p in net.parameters()) == 2_228_131
