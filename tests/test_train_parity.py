"""scripts/train_parity.py without the authors' code: our step's determinism, the comparison and its exit code."""
from __future__ import annotations

import pytest
import torch
from conftest import load_script

tool = load_script("train_parity")



@pytest.fixture(autouse=True)
def _restore_global_settings():
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


LAST = r"parity amsnet: 3 steps, max loss rel diff \S+, max weight rel diff \S+"


def _options(lr: float = 1e-3) -> dict:
    from amcfd.options import resolved_options

    return resolved_options({
        "network": {"type": "DnCNN", "preset": "small"},
        "method": {"type": "AMSNet", "pd_train": 2},
        "train": {"optim": "AdamW", "lr": lr, "total_iter": 10, "scheduler": "cosine", "eta_min": 0.0},
    })


def _run(opt: dict, init: dict | None = None, steps: int = 3):
    batches = tool.make_batches(steps, 2, 16, seed=5)
    init = tool.initial_weights(opt, seed=1) if init is None else init
    return tool.train_ours(opt, init, batches, seed=7)


def test_our_training_step_is_deterministic():
    tool.deterministic(1)
    a, b = _run(_options()), _run(_options())
    assert a.losses == b.losses and len(a.losses) == 3
    assert a.losses[0] != a.losses[-1]                              # it trained
    assert all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights)
    init = tool.initial_weights(_options(), seed=1)
    assert any(not torch.equal(a.weights[k], init[k]) for k in init)


def test_the_same_code_twice_is_parity(capsys):
    tool.deterministic(1)
    status, lines = tool.finish("amsnet", _run(_options()), _run(_options()))
    assert status == 0
    assert lines[-1] == "parity amsnet: 3 steps, max loss rel diff 0.000e+00, max weight rel diff 0.000e+00"
    assert capsys.readouterr().out.strip().splitlines()[-1] == lines[-1]


@pytest.mark.parametrize("perturb", ["lr", "weight"])
def test_a_perturbed_copy_fails(perturb):
    import re

    tool.deterministic(1)
    opt = _options()
    init = tool.initial_weights(opt, seed=1)
    if perturb == "lr":
        other = _run(_options(lr=2e-3), init)
    else:
        changed = dict(init)
        key = next(k for k, v in init.items() if v.dtype.is_floating_point and v.dim() == 4)
        changed[key] = init[key] * 1.01
        other = _run(opt, changed)
    status, lines = tool.finish("amsnet", _run(opt, init), other, out=lambda line: None)
    assert status == 1
    assert re.fullmatch(LAST, lines[-1])
    cmp = tool.compare(_run(opt, init), other)
    assert cmp["max_loss"] > tool.LOSS_TOL or cmp["max_weight"] > tool.WEIGHT_TOL


def test_compare_thresholds_and_missing_weights():
    w = {"a": torch.ones(4)}
    near = tool.compare(tool.Result([1.0, 2.0], [1e-4] * 2, w), tool.Result([1.00005, 2.0], [1e-4] * 2,
                                                                          {"a": torch.ones(4) * 1.0009}))
    assert near["ok"] and near["max_loss"] == pytest.approx(5e-5, rel=1e-3)
    assert near["max_weight"] == pytest.approx(9e-4, rel=1e-3)
    far = tool.compare(tool.Result([1.0], [0], w), tool.Result([1.0002], [0], w))
    assert not far["ok"]
    missing = tool.compare(tool.Result([1.0], [0], w), tool.Result([1.0], [0], {"b": torch.ones(4)}))
    assert not missing["ok"] and missing["max_weight"] == float("inf")
    fewer = tool.compare(tool.Result([1.0, 1.0], [0, 0], w), tool.Result([1.0], [0], w))
    assert not fewer["ok"]


def test_masked_taps_are_compared_as_the_network_uses_them():
    mask = torch.tensor([1.0, 0.0, 1.0])
    theirs = {"conv.weight": torch.tensor([1.0, 0.0, 2.0]), "conv.mask": mask}
    ours = {"conv.weight": torch.tensor([1.0, 5.0, 2.0]), "conv.mask": mask}
    assert tool.compare(tool.Result([1.0], [0], theirs), tool.Result([1.0], [0], ours))["max_weight"] > 1
    assert tool.finish("m", tool.Result([1.0], [0], theirs), tool.Result([1.0], [0], ours), lambda s: None)[0] == 0


@pytest.mark.parametrize("argv", [
    ["--method", "amsnet"],
    ["--method", "nope", "--authors-code", "."],
    ["--method", "amsnet", "--authors-code", "/nonexistent/checkout"],
    ["--method", "apbsn", "--authors-code", ".", "--net", "nafnet"],
    ["--method", "aprrd", "--authors-code", "."],
    ["--method", "ambsn", "--authors-code", "."],
    ["--method", "apbsn", "--authors-code", ".", "--steps2", "3"],
    ["--method", "atbsn", "--authors-code", ".", "--preset", "small"],
    ["--method", "apbsn", "--authors-code", ".", "--images", "/nonexistent/folder"],
])
def test_bad_arguments_are_one_line_and_exit_2(argv, capsys):
    assert tool.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


def test_two_stage_weights_from_the_authors_layout():
    from amcfd.archs import build_arch

    teacher = build_arch({"type": "ATBSN", "preset": "small"}).state_dict()
    nbsn = build_arch({"type": "NBSN", "preset": "small"}).state_dict()
    t, s = tool.two_stage_from_authors("aprrd", "ATBSN", "NBSN", {"teacher": {"model_state_dict": teacher},
                                                                   "student": nbsn})
    assert t.keys() == teacher.keys() and s.keys() == nbsn.keys()
    assert all(torch.equal(s[k], nbsn[k]) for k in nbsn)
    student = build_arch({"type": "ATBSNStudent", "preset": "small"}).state_dict()
    double = {**{f"nbsn.{k}": v for k, v in student.items()}, **{f"bsn.{k}": v for k, v in teacher.items()}}
    _, s = tool.two_stage_from_authors("atbsn", "ATBSN", "ATBSNStudent", {"teacher": teacher, "student": double})
    assert s.keys() == student.keys()


def _images(folder, sizes=((40, 48), (36, 36), (8, 8))):
    import numpy as np
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


def test_image_crops_are_seeded_slices_the_same_in_both_processes(tmp_path):
    folder = _images(tmp_path / "noisy")
    crops = tool.image_crops(folder, steps=4, batch=3, crop=32, seed=9)
    assert len(crops) == 4 and crops[0].shape == (3, 3, 32, 32) and len(crops.images) == 2   # the 8x8 one skipped
    again = tool.batches_of(tool.portable(tool.image_crops(folder, 4, 3, 32, seed=9)))
    assert all(torch.equal(a, b) for a, b in zip(crops, again))
    k, y, x = crops.where[2, 1].tolist()
    assert torch.equal(crops[2][1], crops.images[k][:, y:y + 32, x:x + 32])
    other = tool.image_crops(folder, 4, 3, 32, seed=10)
    assert not torch.equal(other.where, crops.where)
    with pytest.raises(tool.ArgumentError, match="--images .*no RGB image of at least 64 x 64"):
        tool.image_crops(folder, 1, 1, 64, seed=0)


def test_a_fitted_schedule_is_the_one_both_codes_step_at():
    import argparse

    from amcfd.options import resolved_options

    opt = resolved_options({"network": {"type": "DnCNN", "preset": "small"},
                            "method": {"type": "AMSNet", "pd_train": 2},
                            "train": {"optim": "Adam", "lr": 1e-3, "total_iter": 1000, "scheduler": "multistep",
                                      "milestones": [400, 800], "gamma": 0.1}})
    opt = tool.as_run(opt, argparse.Namespace(fit_schedule=True), steps=5)
    assert opt["train"]["total_iter"] == 5 and opt["train"]["milestones"] == [2, 4]
    lrs = tool.schedule_lrs(opt, 5)
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-5])
    tool.deterministic(1)
    ours = tool.train_ours(opt, tool.initial_weights(opt, 1), tool.make_batches(5, 2, 16, seed=5), seed=7)
    assert ours.lrs == pytest.approx(lrs)
    net = torch.nn.Linear(2, 2)
    single, by_module = torch.optim.Adam(net.parameters(), lr=1.0), {"d": torch.optim.Adam(net.parameters(), lr=1.0)}
    for optimiser in (single, by_module):
        tool.follow_lr(optimiser, lrs, 3)
    assert single.param_groups[0]["lr"] == by_module["d"].param_groups[0]["lr"] == pytest.approx(1e-4)
    tool.follow_lr(single, None, 3)
    assert single.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_saved_networks_are_our_checkpoints(tmp_path):
    import argparse

    from amcfd.engine.checkpoint import load_checkpoint

    opt = _options()
    tool.deterministic(1)
    trained = _run(opt)
    args = argparse.Namespace(save=tmp_path / "out", method="amsnet", steps=3)
    tool.save_networks(args, opt, {"authors": trained.weights, "ours": trained.weights})
    for code in ("authors", "ours"):
        ckpt = load_checkpoint(tmp_path / "out" / f"{code}.pth")
        assert ckpt["opt"]["network"]["type"] == "DnCNN" and ckpt["imported_from"]["code"] == code
        assert all(torch.equal(ckpt["network"][k], v) for k, v in trained.weights.items())


def test_a_long_run_prints_at_most_max_rows_and_its_last_step():
    rows = [(i + 1, 1.0, 1.0, 0.0, 1e-4, 1e-4) for i in range(1255)]
    lines = tool.report_lines("apbsn", {"rows": rows, "steps": 1255, "max_loss": 0.0, "max_weight": 0.0,
                                        "worst": None})
    steps = [int(line.split("|")[1]) for line in lines[2:-1]]
    assert len(steps) <= tool.MAX_ROWS + 1 and steps[0] == 1 and steps[-1] == 1255
