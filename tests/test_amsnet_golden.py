"""AMSNet against the authors' code (reference/amsnet_lightning_ckpt.pt): eval forward, training
loss and R^3, given their stored masks (and, as a bonus, from their seeds: the RNG stream matches)."""
from __future__ import annotations

import pytest
import torch
from conftest import load_reference

from amcfd.archs import build_arch, convert_state_dict, load_weights
from amcfd.methods.amsnet import AMSNet, amsnet_denoise, multi_mask_denoise, single_mask_loss
from amcfd.ops.pd import pd_down

TOL = 1e-5  # reference README: max(1e-5, 10 * noise)


@pytest.fixture(scope="module")
def ref():
    return load_reference("amsnet_lightning_ckpt.pt")


@pytest.fixture(scope="module")
def net(ref):
    config = ref["config"]["net"]["init_args"]["net_param"]["net_param"]
    net = build_arch({"type": "Restormer", **config}).eval()
    load_weights(net, convert_state_dict("Restormer", ref))
    return net


def assert_close(actual, expected):
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max().item() <= TOL


def test_masks_follow_the_authors_rule(ref):
    for masks in (ref["eval_masks"], ref["train_masks"], ref["r3_case"]["pd_masks"], ref["r3_case"]["r3_net_masks"]):
        assert torch.all((~masks).sum(0) == 1)                          # complementary (Eq. 5)
        assert torch.equal(masks, masks[:, :, :1].expand_as(masks))     # shared across channels


def test_eval_forward_matches_given_the_stored_masks(ref, net):
    assert torch.equal(pd_down(ref["input"], 2), ref["eval_pd_input"])
    with torch.no_grad():
        out, branches = multi_mask_denoise(net, ref["eval_pd_input"], ref["eval_masks"], return_branches=True)
        assert_close(branches, ref["eval_branch_outputs"])
        assert_close(amsnet_denoise(net, ref["input"], 2, masks=ref["eval_masks"]), ref["eval_forward_output"])


def test_training_loss_matches_given_the_stored_masks(ref, net):
    loss = single_mask_loss(net, ref["train_input"], 5, masks=ref["train_masks"])
    assert abs(loss.item() - ref["train_loss"].item()) <= TOL


def test_r3_matches_given_every_stored_draw(ref, net):
    case = ref["r3_case"]
    method = AMSNet(net, r3=True, r3_copies=case["r3_num"], r3_ratio=case["r3"]).eval()
    with torch.no_grad():
        denoised = method.multi_mask(case["input"], masks=case["pd_masks"])
        assert_close(denoised, case["denoised_before_r3"])
        out = method.refine(denoised, case["input"], case["r3_replace_masks"], case["r3_net_masks"])
    assert_close(out, case["output"])


def test_seeded_runs_reproduce_the_authors_random_stream(ref, net):
    method = AMSNet(net, r3=False).eval()
    torch.manual_seed(ref["eval_forward_seed"])
    assert_close(method.denoise(ref["input"]), ref["eval_forward_output"])
    case = ref["r3_case"]
    method.r3 = True
    torch.manual_seed(case["seed"])
    assert_close(method.denoise(case["input"]), case["output"])
    method.train()
    torch.manual_seed(ref["train_seed"])
    loss = method({"noisy": ref["train_input"]})["l_mask"]
    method.eval()
    assert abs(loss.item() - ref["train_loss"].item()) <= TOL
