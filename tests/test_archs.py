"""The denoiser zoo against the authors' code: golden outputs, parameter counts, any input size."""
from __future__ import annotations

import pytest
import torch
from conftest import load_reference

from amcfd.archs import build_arch, load_weights

# reference file -> (registered type, extra input/output pairs stored beside 'input'/'output')
GOLDEN = {
    "amsnet_restormer.pt": ("Restormer", ["b2_40x48"]),
}
TOLERANCE = 1e-5  # reference README: max(1e-5, 10 * max(thr, fp64)) for all five networks


def _reference_net(ref: dict, arch_type: str, config: dict | None = None) -> torch.nn.Module:
    net = build_arch({"type": arch_type, **(config or ref["config"])}).eval()
    load_weights(net, ref["state_dict"], strict=True)
    return net


def _cases(ref: dict, extras: list[str]):
    yield "input", ref["input"], ref["output"]
    for name in extras:
        for key in ref:
            if key.startswith("input_") and key.endswith(name):
                yield key, ref[key], ref["output" + key[len("input"):]]


@pytest.mark.parametrize("file", sorted(GOLDEN))
def test_golden_output_matches_authors_code(file):
    ref = load_reference(file)
    arch_type, extras = GOLDEN[file]
    net = _reference_net(ref, arch_type)
    assert sum(p.numel() for p in net.parameters()) == ref["params"]
    checked = 0
    with torch.no_grad():
        for name, inp, expected in _cases(ref, extras):
            out = net(inp)
            assert out.shape == expected.shape, name
            err = (out - expected).abs().max().item()
            assert err <= TOLERANCE, f"{file} {name}: max abs diff {err:.3g}"
            checked += 1
    assert checked == 1 + len(extras)


def test_restormer_withbias_variant_matches():
    ref = load_reference("amsnet_restormer.pt")
    variant = ref["variants"]["withbias"]
    net = _reference_net(variant, "Restormer", variant["config"])
    with torch.no_grad():
        err = (net(variant["input"]) - variant["output"]).abs().max().item()
    assert err <= TOLERANCE


@pytest.mark.parametrize("file", sorted(GOLDEN))
def test_published_preset_has_published_parameter_count(file):
    ref = load_reference(file)
    arch_type, _ = GOLDEN[file]
    with torch.device("meta"):  # no memory, no init cost
        net = build_arch({"type": arch_type, "preset": "published"})
    assert sum(p.numel() for p in net.parameters()) == ref["published_params"]
    with torch.device("meta"):
        from_config = build_arch({"type": arch_type, **ref["published_config"]})
    assert sum(p.numel() for p in from_config.parameters()) == ref["published_params"]
