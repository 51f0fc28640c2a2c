"""APR-RD: pair sampling and replacement (amcfd/ops/replace.py), the APR loss and recharged distillation
(amcfd/methods/aprrd.py)."""
from __future__ import annotations

from itertools import product
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_atbsn_methods import TEACHER_NET, adam_steps, noisy_batch, save_atbsn

from amcfd.archs import build_arch
from amcfd.methods.aprrd import APR, RechargedDistill
from amcfd.ops.replace import recharge, replace_pixels, sample_pairs, window_pairs
from amcfd.registry import ConfigError

STUDENT_NET = {"type": "NBSN", "mid_channels": 4}
RD_HOLES = [-1, 1, 3, 5, 7, 9]


# ----------------------------------------------------------------------------- ops
def test_window_pairs_are_the_72_ordered_pairs_of_distinct_offsets_in_the_authors_order():
    pairs = window_pairs(3)
    assert pairs.shape == (72, 2, 2) and pairs.abs().max() == 1
    as_tuples = [tuple(map(tuple, p.tolist())) for p in pairs]
    assert len(set(as_tuples)) == 72 and all(o1 != o2 for o1, o2 in as_tuples)
    # the authors' window lists ((dx1, dy1), (dx2, dy2)) with dx1 outermost; ours holds (dy, dx)
    authors = [((b, a), (d, c)) for a, b, c, d in product((-1, 0, 1), repeat=4) if (a, b) != (c, d)]
    assert as_tuples == authors
    assert window_pairs(5).shape == (600, 2, 2)


def test_sampled_pairs_are_distinct_inside_the_window_and_shared_over_channels():
    o1, o2 = sample_pairs((2, 3, 6, 7), generator=torch.Generator().manual_seed(0))
    assert o1.shape == o2.shape == (2, 6, 7, 2)
    assert (o1 != o2).any(-1).all() and o1.abs().max() <= 1 and o2.abs().max() <= 1
    assert len({tuple(p) for p in torch.cat([o1, o2], -1).view(-1, 4).tolist()}) > 40   # many of the 72 pairs drawn
    x = torch.randint(0, 100, (2, 1, 6, 7)).float()
    rgb = torch.cat([x, x + 1000, x + 2000], dim=1)
    out = replace_pixels(rgb, o1)
    assert torch.equal(out[:, 1:2] - 1000, out[:, :1]) and torch.equal(out[:, 2:3] - 2000, out[:, :1])


def test_replacement_takes_the_neighbour_and_clamps_at_the_border():
    x = torch.arange(12.0).view(1, 1, 3, 4)
    up_left = torch.tensor([-1, -1]).expand(1, 3, 4, 2)
    down_right = torch.tensor([1, 1]).expand(1, 3, 4, 2)
    assert replace_pixels(x, up_left)[0, 0].tolist() == [[0, 0, 1, 2], [0, 0, 1, 2], [4, 4, 5, 6]]
    assert replace_pixels(x, down_right)[0, 0].tolist() == [[5, 6, 7, 7], [9, 10, 11, 11], [9, 10, 11, 11]]
    mixed = torch.zeros(1, 3, 4, 2, dtype=torch.long)
    mixed[0, 1, 2] = torch.tensor([1, -1])                           # pixel (1, 2) takes (2, 1)
    assert replace_pixels(x, mixed)[0, 0, 1, 2] == 9 and replace_pixels(x, mixed)[0, 0, 0, 0] == 0


def test_recharge_gives_every_pixel_the_noisy_value_in_exactly_the_chosen_target():
    targets, noisy = torch.rand(6, 2, 3, 5, 5), torch.rand(2, 3, 5, 5) + 2
    choice = torch.randint(0, 6, (2, 5, 5))
    out = recharge(targets, noisy, choice)
    for k in range(6):
        picked = (choice == k).unsqueeze(1).expand(2, 3, 5, 5)
        assert torch.equal(out[k][picked], noisy[picked]) and torch.equal(out[k][~picked], targets[k][~picked])
    assert ((out > 1.5).sum(0) == 1).all()                           # every element recharged once
    drawn = recharge(targets, noisy, generator=torch.Generator().manual_seed(0))
    counts = (drawn > 1.5).all(2).sum((1, 2, 3))                       # whole pixels, per target
    assert counts.sum() == 50 and (counts > 0).all()


# ----------------------------------------------------------------------------- APR
def test_apr_loss_equals_a_hand_computation():
    net = build_arch(TEACHER_NET)
    net.forward = lambda x, hole_size=None: 2 * x                    # f(x) = 2x
    method = APR(net)
    y = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    o1 = torch.tensor([0, 1]).expand(1, 2, 2, 2)                      # right neighbour: h1 y = [[2, 2], [4, 4]]
    o2 = torch.tensor([1, 0]).expand(1, 2, 2, 2)                      # below: h2 y = [[3, 4], [3, 4]]
    losses = method.apr_loss(y, o1, o2)
    # f(h1 y) = [[4, 4], [8, 8]]: L_rec = mean(1, 0, 5, 4) = 2.5
    # h1(f y) - h2(f y) = [[4, 4], [8, 8]] - [[6, 8], [6, 8]] = [[-2, -4], [2, 0]]
    # L_reg = mean|[[1, 0], [5, 4]] - [[-2, -4], [2, 0]]| = mean(3, 4, 3, 4) = 3.5, weighted 4
    assert float(losses["l_rec"]) == 2.5 and float(losses["l_reg"]) == 14.0


def test_apr_gradient_through_f_y_follows_detach_full():
    def grads(detach: bool) -> torch.Tensor:
        torch.manual_seed(0)
        method = APR(build_arch(TEACHER_NET), detach_full=detach)
        y = noisy_batch()
        o1, o2 = sample_pairs(y.shape, generator=torch.Generator().manual_seed(0))
        method.apr_loss(y, o1, o2)["l_reg"].backward()
        return method.net.nin_C.weight.grad.clone()

    assert APR(build_arch(TEACHER_NET)).detach_full is False          # the authors' default
    assert not torch.allclose(grads(True), grads(False))


def test_apr_training_lowers_the_loss_and_denoise_is_hole_1_on_the_padded_image():
    torch.manual_seed(0)
    method = APR(build_arch(TEACHER_NET))
    y = noisy_batch()
    o1, o2 = sample_pairs(y.shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = sum(method.apr_loss(y, o1, o2).values())
    adam_steps(method, y, steps=10)
    with torch.no_grad():
        assert sum(method.apr_loss(y, o1, o2).values()) < before
    method.eval()
    expect = method.net(F.pad(y, (16,) * 4, mode="reflect"), 1)[..., 16:48, 16:48]
    assert torch.allclose(method.denoise(y), expect, atol=1e-6)
    assert method.denoise(y[..., :8, :8]).shape == (2, 3, 8, 8)       # small images: smaller reflect padding


def test_apr_option_errors_are_one_line_and_name_the_option():
    with pytest.raises(ConfigError, match="network.type"):
        APR(build_arch(STUDENT_NET))
    for kw in ({"window": 4}, {"reg_weight": -1}, {"detach_full": "no"}, {"hole_train": 0}, {"pad_test": -1}):
        with pytest.raises(ConfigError, match=f"method.{next(iter(kw))}") as err:
            APR(build_arch(TEACHER_NET), **kw)
        assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- recharged distillation
@pytest.fixture(scope="module")
def apr_ckpt(tmp_path_factory) -> Path:
    return save_atbsn(tmp_path_factory.mktemp("apr") / "apr.pth", method={"type": "APR"})


def test_recharged_targets_are_the_six_teacher_outputs_with_the_chosen_pixel_noisy(apr_ckpt):
    method = RechargedDistill(build_arch(STUDENT_NET), {"checkpoint": str(apr_ckpt)})
    teacher = method.teacher.network()
    y = noisy_batch()
    choice = torch.randint(0, 6, (2, 32, 32))
    targets = method.targets(y, choice)
    assert targets.shape == (6, 2, 3, 32, 32)
    with torch.no_grad():
        padded = F.pad(y, (16,) * 4, mode="reflect")
        for k, hole in enumerate(RD_HOLES):
            expect = torch.where((choice == k).unsqueeze(1), y, teacher(padded, hole)[..., 16:48, 16:48])
            assert torch.allclose(targets[k], expect, atol=1e-6), hole


def test_recharged_distillation_lowers_the_loss_and_the_teacher_stays_out(apr_ckpt):
    torch.manual_seed(0)
    method = RechargedDistill(build_arch(STUDENT_NET), {"checkpoint": str(apr_ckpt)})
    losses = adam_steps(method, noisy_batch(), steps=10)
    assert losses[-1] < losses[0]
    assert all(p.grad is None for p in method.teacher.parameters())
    assert set(method.state_dict()) == {f"net.{k}" for k in method.net.state_dict()}
    with pytest.raises(ConfigError, match="method.recharge"):
        RechargedDistill(build_arch(STUDENT_NET), {"checkpoint": str(apr_ckpt)}, recharge=1)
    with pytest.raises(ConfigError, match="method.pad"):
        RechargedDistill(build_arch(STUDENT_NET), {"checkpoint": str(apr_ckpt)}, pad=-1)
