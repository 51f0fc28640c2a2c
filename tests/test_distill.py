"""AM-CFD distillation: frozen teacher, target cache, coarse and fine methods, resume, the student path."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from amcfd.archs import build_arch
from amcfd.engine.checkpoint import load_checkpoint
from amcfd.engine.teacher import FrozenTeacher, TeacherTargetCache, TeacherTargets
from amcfd.engine.trainer import Trainer
from amcfd.methods.distill_fine import DistillFine
from amcfd.ops.augment import apply_augmented, augment
from amcfd.ops.bilateral import bilateral_filter
from amcfd.options import validate
from amcfd.registry import DATASETS, ConfigError
from tests.test_engine import record_losses

REPO = Path(__file__).resolve().parents[1]
TINY_NET = {"type": "DnCNN", "in_nc": 3, "out_nc": 3, "nc": 8, "nb": 3}
TRAIN_SET = {"type": "SyntheticCameraNoise", "images": ["astronaut", "coffee"], "scale": 0.2, "crop_size": 24,
             "augment": True, "repeat": 4, "batch_size": 2, "num_workers": 0}


def save_teacher(path: Path, identity: bool = False, seed: int = 0) -> Path:
    """A tiny AMSNet checkpoint in our format; ``identity``: the network returns its input exactly
    (DnCNN's output is x - body(x); a zero last conv makes body(x) = 0), used with SinglePass."""
    torch.manual_seed(seed)
    net = build_arch(TINY_NET)
    if identity:
        last = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        torch.nn.init.zeros_(last.weight)
        if last.bias is not None:
            torch.nn.init.zeros_(last.bias)
    method = {"type": "SinglePass"} if identity else {"type": "AMSNet", "pd_train": 2, "pd_test": 2}
    torch.save({"network": net.state_dict(), "opt": {"network": TINY_NET, "method": method}}, path)
    return path


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory) -> Path:
    return save_teacher(tmp_path_factory.mktemp("teacher") / "teacher.pth")


def distill_options(root: Path, method: dict, total_iter: int = 4, **extra) -> dict:
    opt = {
        "name": "distill", "seed": 1, "device": "cpu", "network": TINY_NET, "method": method,
        "datasets": {"train": dict(TRAIN_SET)},
        "train": {"total_iter": total_iter, "lr": 1e-3},
        "val": {"val_freq": 0},
        "logger": {"print_freq": 1, "save_checkpoint_freq": 2, "keep_last": 5, "use_tb_logger": False,
                   "progress_bar": False},
        "path": {"experiments_root": str(root)},
        **extra,
    }
    return validate(opt, "train")


def coarse(checkpoint: Path, teacher: dict | None = None, **kw) -> dict:
    return {"type": "DistillCoarse", "teacher": {"checkpoint": str(checkpoint), **(teacher or {})},
            "bilateral": {"d": 5, "sigma_color": 20.0, "sigma_space": 3.0}, **kw}


# ----------------------------------------------------------------------------- the teacher
def test_teacher_defaults_to_amsnet_pe_and_settings_override(teacher_ckpt):
    pe = FrozenTeacher(str(teacher_ckpt))
    assert (pe.method.pd_test, pe.method.r3) == (2, True)
    b = FrozenTeacher(str(teacher_ckpt), method={"r3": False, "pd_test": 1})
    assert (b.method.pd_test, b.method.r3) == (1, False)
    assert pe.key() != b.key()
    assert all(not p.requires_grad for p in pe.parameters())


def test_teacher_options_are_checked_before_loading(tmp_path):
    with pytest.raises(ConfigError, match="method.teacher.*checkpoint"):
        FrozenTeacher.check_options({"method": {}})
    with pytest.raises(ConfigError, match="method.teacher.tiel"):
        FrozenTeacher.check_options({"checkpoint": "x.pth", "tiel": 3})
    with pytest.raises(ConfigError, match="does not exist"):
        FrozenTeacher(str(tmp_path / "missing.pth"))


def test_bad_filter_or_map_values_are_option_errors(teacher_ckpt):
    from amcfd.methods.distill_coarse import DistillCoarse

    net = build_arch(TINY_NET)
    with pytest.raises(ConfigError, match="method.texture.*low"):
        DistillCoarse(net, {"checkpoint": str(teacher_ckpt)}, texture={"low": 0.5, "high": 0.1})
    with pytest.raises(ConfigError, match="method.bilateral.sigma"):
        DistillCoarse(net, {"checkpoint": str(teacher_ckpt)}, bilateral={"sigma_space": "wide"})
    with pytest.raises(ConfigError, match="method.aug_modes"):
        DistillCoarse(net, {"checkpoint": str(teacher_ckpt)}, aug_modes=[1, 9])


def test_teacher_is_frozen_during_distillation(tmp_path, teacher_ckpt):
    trainer = Trainer(distill_options(tmp_path, coarse(teacher_ckpt, targets="online"), total_iter=3))
    teacher = trainer.method.teacher
    before = {k: v.clone() for k, v in teacher.method.state_dict().items()}
    student_before = {k: v.clone() for k, v in trainer.net.state_dict().items()}
    trainer.train()
    assert teacher.calls > 0
    for key, value in teacher.method.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in teacher.parameters())
    assert any(not torch.equal(v, student_before[k]) for k, v in trainer.net.state_dict().items())


# ----------------------------------------------------------------------------- the target cache
def test_second_run_reuses_cached_targets_and_a_changed_setting_recomputes(tmp_path, teacher_ckpt):
    first = Trainer(distill_options(tmp_path, coarse(teacher_ckpt)))
    assert first.method.teacher.calls > 0                     # computed before training
    first.train()
    cache = tmp_path / "teacher_targets"
    assert len(list(cache.glob("teacher-*/*.npy"))) == len(list(cache.glob("guide-*/*.npy"))) == 2  # per image
    second = Trainer(distill_options(tmp_path, coarse(teacher_ckpt)))
    second.train()
    assert second.method.teacher.calls == 0
    third = Trainer(distill_options(tmp_path, coarse(teacher_ckpt, teacher={"method": {"r3": False}})))
    assert third.method.teacher.calls > 0
    assert len(list(cache.glob("teacher-*/*.npy"))) == 4 and len(list(cache.glob("guide-*/*.npy"))) == 2
    other_filter = coarse(teacher_ckpt)
    other_filter["bilateral"] = {"d": 3}
    assert Trainer(distill_options(tmp_path, other_filter)).method.teacher.calls == 0   # only BF recomputed
    assert len(list(cache.glob("guide-*/*.npy"))) == 4
    other_modes = Trainer(distill_options(tmp_path, coarse(teacher_ckpt, aug_modes=[4])))
    assert other_modes.method.teacher.calls > 0


def test_cached_crops_of_noisy_bilateral_and_targets_stay_aligned(tmp_path):
    """With an identity teacher every target equals the noisy crop exactly (stored as float16), whatever crop and
    flip."""
    teacher = FrozenTeacher(str(save_teacher(tmp_path / "identity.pth", identity=True)))
    bf_opts = {"d": 5, "sigma_color": 20.0, "sigma_space": 3.0}
    dataset = DATASETS.build({**{k: v for k, v in TRAIN_SET.items() if k not in ("batch_size", "num_workers")}})
    cache = TeacherTargetCache(dataset, TeacherTargets(teacher, [1, 5], bf_opts), tmp_path / "cache",
                               torch.device("cpu"), progress=False)
    full = {name: torch.from_numpy(dataset.noisy[i]).permute(2, 0, 1)[None] for i, name in enumerate(dataset.names)}
    full_bf = {name: bilateral_filter(x, **bf_opts)[0] for name, x in full.items()}
    for index in range(6):
        torch.manual_seed(index)
        item = cache[index]
        assert item["aug_mode"] in (1, 5)
        assert torch.equal(item["target"], item["noisy"].half().float())
        assert torch.equal(item["target_aug"], item["noisy"].half().float())
        found = False                                   # the bf crop is the same window of BF(whole image)
        for mode in range(8):
            ref = augment(full_bf[item["name"]], mode)
            img = augment(full[item["name"]][0], mode)
            for top in range(img.shape[-2] - 23):
                for left in range(img.shape[-1] - 23):
                    if torch.equal(img[..., top:top + 24, left:left + 24], item["noisy"]):
                        found = found or torch.allclose(ref[..., top:top + 24, left:left + 24].half().float(),
                                                        item["guide"])
        assert found, index


def test_datasets_without_whole_images_ask_for_online_targets(tmp_path, teacher_ckpt):
    targets = TeacherTargets(FrozenTeacher(str(teacher_ckpt)), [1])
    with pytest.raises(ConfigError, match="targets: online"):
        TeacherTargetCache([1, 2], targets, tmp_path, torch.device("cpu"))


# ----------------------------------------------------------------------------- augmentation
def test_augmented_target_inverse_is_exact():
    x = torch.rand(8, 3, 6, 10)
    modes = list(range(8))
    assert torch.equal(apply_augmented(lambda t: t, x, modes), x)
    shifted = apply_augmented(lambda t: t.roll(1, dims=-1), x, modes)   # not equivariant: differs per mode
    assert torch.equal(shifted[0], x[0].roll(1, dims=-1))
    assert not torch.equal(shifted[1], x[1].roll(1, dims=-1))


# ----------------------------------------------------------------------------- fine distillation
def test_frozen_student_is_replaced_exactly_on_schedule():
    net = build_arch(TINY_NET)
    method = DistillFine(net, refresh_every=3)
    for p in net.parameters():
        p.data.add_(1.0)
    for it in (1, 2):
        method.on_train_iter(it)
        assert not torch.equal(method.frozen_student.state_dict()["model.0.weight"], net.state_dict()["model.0.weight"])
    method.on_train_iter(3)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in method.frozen_student.state_dict().items())
    assert method.refreshed_at == 3
    assert not any(p.requires_grad for p in method.frozen_student.parameters())


def test_fine_distillation_resume_is_bitwise_identical(tmp_path, teacher_ckpt):
    method = {"type": "DistillFine", "refresh_every": 3}
    straight = Trainer(distill_options(tmp_path / "a", method, total_iter=7))
    straight.train()
    first = Trainer(distill_options(tmp_path / "b", method, total_iter=7))
    first.train(stop_at=5)                                   # checkpoint at 4, S* replaced at 3
    saved = load_checkpoint(first.ckpt_dir / "iter_00000004.pth")
    assert saved["method_state"]["refreshed_at"] == 3
    resumed = Trainer(distill_options(tmp_path / "b", method, total_iter=7), auto_resume=True)
    assert resumed.iteration == 4 and resumed.method.refreshed_at == 3
    resumed.train()
    for ours, theirs in ((straight.net, resumed.net), (straight.method.frozen_student, resumed.method.frozen_student)):
        for key, value in ours.state_dict().items():
            assert torch.equal(value, theirs.state_dict()[key]), key


# ----------------------------------------------------------------------------- end to end
def test_tiny_coarse_then_fine_run_lowers_the_loss_and_test_py_uses_the_student(tmp_path, teacher_ckpt):
    coarse_opt = distill_options(tmp_path, coarse(teacher_ckpt), total_iter=40, name="coarse")
    coarse_opt["train"]["lr"] = 3e-3
    trainer = Trainer(coarse_opt)
    losses = record_losses(trainer)
    trainer.train()
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    coarse_ckpt = trainer.ckpt_dir / "iter_00000040.pth"

    fine = Trainer(distill_options(tmp_path, {"type": "DistillFine", "refresh_every": 2}, total_iter=4, name="fine",
                                   path={"experiments_root": str(tmp_path), "pretrain_network": str(coarse_ckpt)}))
    assert all(torch.equal(v, trainer.net.state_dict()[k]) for k, v in fine.method.frozen_student.state_dict().items())
    fine.train()
    fine_ckpt = fine.ckpt_dir / "iter_00000004.pth"

    photos = tmp_path / "photos"
    photos.mkdir()
    import cv2

    cv2.imwrite(str(photos / "a.png"), (np.random.default_rng(0).random((40, 52, 3)) * 255).astype(np.uint8))
    result = subprocess.run([sys.executable, str(REPO / "test.py"), "-opt", str(REPO / "options/test/student.yml"),
                             "--input", str(photos), "--output", str(tmp_path / "out"),
                             "--set", f"path.pretrain_network={fine_ckpt}"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    out = cv2.imread(str(tmp_path / "out" / "a.png"))
    assert out is not None and out.shape == (40, 52, 3)
    # SinglePass: test.py's output is exactly one student forward
    net = build_arch(TINY_NET)
    net.load_state_dict(load_checkpoint(fine_ckpt)["network"])
    net.eval()
    img = cv2.imread(str(photos / "a.png"))[..., ::-1].astype(np.float32) / 255
    with torch.no_grad():
        expect = net(torch.from_numpy(img.copy()).permute(2, 0, 1)[None]).clamp(0, 1)
    expect = np.round(expect[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)[..., ::-1]
    assert np.abs(out.astype(int) - expect.astype(int)).max() <= 1


@pytest.mark.parametrize("name", ["distill_coarse.yml", "distill_fine.yml", "distill_coarse_cpu.yml",
                                  "distill_fine_cpu.yml"])
def test_distillation_option_files_validate_and_build(tmp_path, teacher_ckpt, name):
    """Every key of the shipped files is known; the method builds without loading its teacher."""
    from amcfd.engine.inference import build_method
    from amcfd.options import load_options

    opt = load_options(REPO / "options/train" / name)
    if opt.get("path", {}).get("pretrain_network"):
        opt["path"]["pretrain_network"] = str(teacher_ckpt)
    if opt["method"]["type"] == "DistillCoarse":
        opt["method"]["teacher"]["checkpoint"] = str(tmp_path / "not_read_yet.pth")
    opt["datasets"] = {"train": dict(TRAIN_SET)}
    opt = validate(opt, "train")
    method = build_method(opt, build_arch(opt["network"]))
    assert type(method).__name__ == opt["method"]["type"]


def test_teacher_from_a_bare_state_dict_needs_only_its_network(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "bare.pth"
    torch.save(build_arch(TINY_NET).state_dict(), path)       # e.g. weights as the authors publish them
    with pytest.raises(ConfigError, match="network"):
        FrozenTeacher(str(path))
    teacher = FrozenTeacher(str(path), network=TINY_NET)
    assert (type(teacher.method).__name__, teacher.method.pd_test, teacher.method.r3) == ("AMSNet", 2, True)
    assert teacher(torch.rand(1, 3, 16, 16)).shape == (1, 3, 16, 16)


# ----------------------------------------------------------------------------- the guide
@pytest.mark.parametrize("targets", ["cache", "online"])
@pytest.mark.parametrize("guide, options", [("nlm", {"strength": 1.5}), ("classical", {"strength": 3})])
def test_another_guide_is_the_guide_target_and_trains(tmp_path, teacher_ckpt, targets, guide, options):
    """guide: nlm (OpenCV non-local means at the image's own noise level) or classical (the classical core: BM3D
    at the image's own level) where BF(I_N) was; cached apart, each stored guide that filter on its whole image."""
    from amcfd.ops.guides import GUIDES

    method = {**coarse(teacher_ckpt, targets=targets, guide=guide, **{guide: options}), "bilateral": None}
    trainer = Trainer(distill_options(tmp_path, method, total_iter=2))
    assert trainer.method.guide == guide and trainer.method.guide_options["strength"] == options["strength"]
    if targets == "cache":
        dataset = DATASETS.build({k: v for k, v in TRAIN_SET.items() if k not in ("batch_size", "num_workers")})
        expected = [GUIDES[guide](torch.from_numpy(x).permute(2, 0, 1)[None], **options)[0].permute(1, 2, 0)
                    .numpy() for x in dataset.noisy]
        stored = sorted((tmp_path / "teacher_targets").glob("guide-*/*.npy"))
        assert len(stored) == len(expected)
        for file in stored:
            got = np.load(file)[0]
            assert min(np.abs(got - e).max() for e in expected if e.shape == got.shape) < 1e-3   # float16 storage
    trainer.train()
    assert trainer.iteration == 2


def test_the_guide_and_its_options_are_checked(teacher_ckpt):
    from amcfd.methods.distill_coarse import DistillCoarse

    net = build_arch(TINY_NET)
    with pytest.raises(ConfigError, match="method.guide' must be one of"):
        DistillCoarse(net, {"checkpoint": str(teacher_ckpt)}, guide="median")
    with pytest.raises(ConfigError, match="method.nlm"):
        DistillCoarse(net, {"checkpoint": str(teacher_ckpt)}, guide="nlm", nlm={"strength": -1})
    with pytest.raises(ConfigError, match="method.classical"):
        DistillCoarse(net, {"checkpoint": str(teacher_ckpt)}, guide="classical", classical={"strength": 0})


# ----------------------------------------------------------------------------- alpha from a posterior teacher
POSTERIOR_NET = {"type": "Posterior", "net": TINY_NET, "head_channels": 4}


@pytest.fixture(scope="module")
def posterior_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = build_arch(POSTERIOR_NET)
    path = tmp_path_factory.mktemp("posterior") / "teacher.pth"
    torch.save({"network": net.state_dict(), "opt": {"network": POSTERIOR_NET, "method": {
        "type": "AMSNet", "pd_train": 2, "pd_test": 2, "posterior": True}}}, path)
    return path


@pytest.mark.parametrize("targets", ["cache", "online"])
def test_alpha_from_the_posterior_teachers_pixel_share_trains(tmp_path, posterior_ckpt, targets):
    """alpha: posterior takes alpha^r from the teacher's w_y maps (cached per image and view, or computed on each
    batch) instead of the texture map of its output; cached, each stored map is the teacher's on the whole image."""
    method = coarse(posterior_ckpt, {"method": {"r3": False}}, targets=targets, alpha="posterior", aug_modes=[1])
    trainer = Trainer(distill_options(tmp_path, method, total_iter=2))
    if targets == "cache":
        teacher = FrozenTeacher(str(posterior_ckpt), method={"r3": False})
        dataset = DATASETS.build({k: v for k, v in TRAIN_SET.items() if k not in ("batch_size", "num_workers")})
        stored = sorted((tmp_path / "teacher_targets").glob("share-*/*.npy"))
        assert len(stored) == len(dataset.noisy)
        for file in stored:
            got = np.load(file)                                  # (1 + modes, H, W, 1)
            assert got.shape[0] == 2 and got.shape[-1] == 1 and 0 <= got.min() and got.max() <= 1
            expected = [teacher.pixel_share(torch.from_numpy(x).permute(2, 0, 1)[None])[0, 0].numpy()
                        for x in dataset.noisy if x.shape[:2] == got.shape[1:3]]
            assert min(np.abs(got[0, ..., 0] - e).max() for e in expected) < 2e-3          # float16 storage
        item = trainer.train_set[0]
        assert item["alpha"].shape == (1, *item["noisy"].shape[1:]) == item["alpha_aug"].shape
    trainer.train()
    assert trainer.iteration == 2


def test_alpha_posterior_needs_a_posterior_teacher(tmp_path, teacher_ckpt):
    with pytest.raises(ConfigError, match="method.alpha: posterior"):
        Trainer(distill_options(tmp_path, coarse(teacher_ckpt, alpha="posterior"), total_iter=1)).train()
    with pytest.raises(ConfigError, match="option 'method.alpha' must be one of"):
        Trainer(distill_options(tmp_path, coarse(teacher_ckpt, alpha="flat")))
