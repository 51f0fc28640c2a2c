"""AT-BSN methods (amcfd/methods/atbsn.py): ATBSN training/inference and AT-BSN-D distillation from a frozen teacher."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from amcfd.archs import build_arch
from amcfd.engine.checkpoint import load_checkpoint
from amcfd.engine.inference import build_denoiser
from amcfd.engine.trainer import Trainer
from amcfd.methods.atbsn import ATBSN, ATBSNDistill
from amcfd.options import validate
from amcfd.registry import ConfigError

TEACHER_NET = {"type": "ATBSN", "mid_channels": 4}
STUDENT_NET = {"type": "ATBSNStudent", "mid_channels": 4}
HOLES = [0, 1, 3, 5, 7, 9, 11]
TRAIN_SET = {"type": "SyntheticCameraNoise", "images": ["astronaut", "coffee"], "scale": 0.2, "crop_size": 32,
             "augment": True, "repeat": 2, "batch_size": 2, "num_workers": 0}


def save_atbsn(path: Path, net: dict = TEACHER_NET, method: dict | None = None, seed: int = 0) -> Path:
    """A checkpoint of a (randomly initialised) ATBSN in our format, as a training run writes it."""
    torch.manual_seed(seed)
    weights = build_arch(net).state_dict()
    torch.save({"network": weights, "opt": {"network": net, "method": method or {"type": "ATBSN"}}}, path)
    return path


def adam_steps(method, noisy: torch.Tensor, steps: int = 8, lr: float = 3e-3) -> list:
    """Total loss of ``steps`` Adam steps on one fixed batch (seeded)."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(method.net.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        total = sum(method({"noisy": noisy}).values())
        assert torch.isfinite(total)
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(float(total.detach()))
    return losses


def noisy_batch(seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    clean = torch.linspace(0.2, 0.8, 32).view(1, 1, 1, 32).expand(2, 3, 32, 32)
    return (clean + 0.05 * torch.randn(2, 3, 32, 32, generator=g)).clamp(0, 1)


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory) -> Path:
    return save_atbsn(tmp_path_factory.mktemp("atbsn") / "teacher.pth")


def distill(teacher_ckpt: Path, student: dict = STUDENT_NET, **kw) -> ATBSNDistill:
    """The method as a fresh training run sees it (the engine calls on_train_start)."""
    torch.manual_seed(5)
    method = ATBSNDistill(build_arch(student), {"checkpoint": str(teacher_ckpt)}, **kw)
    method.on_train_start()
    return method


# ----------------------------------------------------------------------------- ATBSN
def test_atbsn_trains_with_hole_9_and_denoises_with_hole_3():
    net = build_arch(TEACHER_NET)
    method = ATBSN(net)
    seen = []
    forward_holes = net.forward_holes
    net.forward_holes = lambda x, holes, pad=0: seen.append(list(holes)) or forward_holes(x, holes, pad)
    x = noisy_batch()
    losses = adam_steps(method, x)
    assert seen[0] == [9] and losses[-1] < losses[0]
    seen.clear()
    method.eval()
    out = method.denoise(x)
    assert seen == [[3]] and torch.equal(out, forward_holes(x, [3])[0])


def test_atbsn_option_errors_are_one_line_and_name_the_option():
    with pytest.raises(ConfigError, match=r"option 'network.type'.*ATBSN.*ATBSNStudent"):
        ATBSN(build_arch(STUDENT_NET))
    for kw, name in (({"hole_train": 0}, "hole_train"), ({"hole_test": "3"}, "hole_test")):
        with pytest.raises(ConfigError, match=f"method.{name}") as err:
            ATBSN(build_arch(TEACHER_NET), **kw)
        assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- ATBSNDistill
def test_seven_targets_from_one_teacher_unet_pass_and_the_loss_sums_seven_l1(teacher_ckpt):
    method = distill(teacher_ckpt, init_from_teacher=False)
    teacher = method.teacher.network()
    calls = []
    hook = teacher.unet.intro.conv.register_forward_hook(lambda *_: calls.append(1))
    x = noisy_batch()
    targets = method.teacher_outputs(x)
    loss = method({"noisy": x})["l_distill"]
    assert len(targets) == 7 and len(calls) == 2          # one U-Net pass per call (the 4 rotations are one batch)
    hook.remove()
    with torch.no_grad():
        for hole, target in zip(HOLES, targets):
            assert torch.allclose(target, teacher(x, hole), atol=1e-6), hole
        expect = sum((method.net(x) - teacher(x, h)).abs().mean() for h in HOLES)
    assert torch.allclose(loss, expect, atol=1e-6)


def test_student_starts_from_the_teacher_but_its_head_and_last_decoder_block(teacher_ckpt):
    theirs = load_checkpoint(teacher_ckpt)["network"]
    torch.manual_seed(5)
    fresh = build_arch(STUDENT_NET).state_dict()
    method = distill(teacher_ckpt)
    mine = method.net.state_dict()
    skipped = {k for k in mine if k.startswith("unet.dec1.")}
    assert skipped == {"unet.dec1.conv1.conv.weight", "unet.dec1.conv1.conv.bias", "unet.dec1.conv2.conv.weight",
                       "unet.dec1.conv2.conv.bias"}
    assert set(method.copied_keys) == set(mine) - skipped
    for key, value in mine.items():
        assert torch.equal(value, fresh[key] if key in skipped else theirs[key]), key
    untouched = distill(teacher_ckpt, init_from_teacher=False).net.state_dict()
    assert all(torch.equal(v, fresh[k]) for k, v in untouched.items())


def test_distillation_lowers_the_loss_and_never_touches_the_teacher(teacher_ckpt):
    method = distill(teacher_ckpt)
    teacher = method.teacher.network()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    losses = adam_steps(method, noisy_batch())
    assert losses[-1] < losses[0]
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert set(method.state_dict()) == {f"net.{k}" for k in method.net.state_dict()}   # no teacher weights
    assert method.checkpoint_state() == {}


def test_distill_option_errors(teacher_ckpt, tmp_path):
    with pytest.raises(ConfigError, match="method.teacher"):
        ATBSNDistill(build_arch(STUDENT_NET), None)
    with pytest.raises(ConfigError, match="method.holes"):
        distill(teacher_ckpt, holes=[1, -2])
    with pytest.raises(ConfigError, match="method.init_from_teacher"):
        distill(teacher_ckpt, init_from_teacher="yes")
    with pytest.raises(ConfigError, match="method.init_from_teacher"):            # no key matches
        distill(teacher_ckpt, student={"type": "NBSN", "mid_channels": 4})
    with pytest.raises(ConfigError, match="network.value_range"):
        distill(teacher_ckpt, student={**STUDENT_NET, "value_range": 255.0})
    dncnn = {"type": "DnCNN", "in_nc": 3, "out_nc": 3, "nc": 4, "nb": 2}
    other = save_atbsn(tmp_path / "dncnn.pth", dncnn, {"type": "SinglePass"})
    with pytest.raises(ConfigError, match="method.teacher.checkpoint.*ATBSN.*DnCNN"):
        distill(other, init_from_teacher=False).teacher_outputs(noisy_batch())


def test_atbsn_then_distill_end_to_end_through_the_trainer(tmp_path):
    def options(name: str, network: dict, method: dict) -> dict:
        return validate({
            "name": name, "seed": 1, "device": "cpu", "network": network, "method": method,
            "datasets": {"train": dict(TRAIN_SET)}, "train": {"total_iter": 2, "lr": 1e-3}, "val": {"val_freq": 0},
            "logger": {"print_freq": 1, "save_checkpoint_freq": 2, "use_tb_logger": False, "progress_bar": False},
            "path": {"experiments_root": str(tmp_path)}}, "train")

    teacher_run = Trainer(options("atbsn", TEACHER_NET, {"type": "ATBSN"}))
    teacher_run.train()
    teacher_ckpt = teacher_run.ckpt_dir / "iter_00000002.pth"
    student_run = Trainer(options("student", STUDENT_NET, {"type": "ATBSNDistill",
                                                            "teacher": {"checkpoint": str(teacher_ckpt)}}))
    trained = teacher_run.net.state_dict()
    assert all(torch.equal(student_run.method.teacher.network().state_dict()[k], v) for k, v in trained.items())
    assert torch.equal(student_run.net.state_dict()["unet.intro.conv.weight"], trained["unet.intro.conv.weight"])
    student_run.train()
    saved = load_checkpoint(student_run.ckpt_dir / "iter_00000002.pth")
    assert set(saved["network"]) == set(build_arch(STUDENT_NET).state_dict())
    opt = validate({"name": "t", "device": "cpu", "method": {"type": "SinglePass"},
                    "path": {"pretrain_network": str(student_run.ckpt_dir / "iter_00000002.pth")}}, "valid")
    method, denoise = build_denoiser(opt)
    x = noisy_batch()[:1]
    with torch.no_grad():
        assert torch.allclose(denoise(x), student_run.net.eval()(x).clamp(0, 1), atol=1e-6)
    # applied with its own method (teacher given): the trained student is used, never re-initialised
    method, denoise = build_denoiser(validate({
        "name": "t", "device": "cpu", "method": {"type": "ATBSNDistill", "teacher": {"checkpoint": str(teacher_ckpt)}},
        "path": {"pretrain_network": str(student_run.ckpt_dir / "iter_00000002.pth")}}, "valid"))
    assert all(torch.equal(method.net.state_dict()[k], v) for k, v in saved["network"].items())


@pytest.mark.parametrize("name", ["atbsn.yml", "atbsn_distill.yml", "apr.yml", "aprrd.yml"])
def test_shipped_training_files_build_their_methods(tmp_path, name):
    from amcfd.engine.inference import build_method
    from amcfd.options import load_options

    opt = load_options(Path(__file__).resolve().parents[1] / "options/train" / name)
    if "teacher" in opt["method"]:
        net = {"type": "ATBSN", "preset": "published", "value_range": 255.0 if name == "atbsn_distill.yml" else 1.0}
        opt["method"]["teacher"]["checkpoint"] = str(save_atbsn(tmp_path / "teacher.pth", net))
    opt["datasets"] = {"train": dict(TRAIN_SET)}
    method = build_method(validate(opt, "train"), build_arch(opt["network"]))
    method.on_train_start()
    assert type(method).__name__ == opt["method"]["type"]
    if name == "atbsn_distill.yml":
        assert len(method.copied_keys) == len(method.net.state_dict()) - 4
