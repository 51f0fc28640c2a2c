"""scripts/benchmark.py and amcfd/analysis/ on tiny pairs: trained stages through the engine, a distilled student
from a teacher stage, classical rows, a failing entry, reruns that keep work, the reports and the cost counts."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from conftest import load_script

from amcfd.analysis.benchmark import Benchmark, dataset_entries, load_benchmark
from amcfd.analysis.classical import bilateral
from amcfd.analysis.report import markdown, pareto_front
from amcfd.ops.guides import nlm_filter as nlm
from amcfd.registry import ConfigError

REPO = Path(__file__).resolve().parents[1]
TINY = {"network.type": "DnCNN", "network.preset": "small", "train.total_iter": 3, "train.warmup_iter": 0,
        "datasets.train.batch_size": 1, "datasets.train.crop_size": 32, "datasets.train.num_workers": 0}


def make_pairs(root: Path, n: int = 2, size: int = 48) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("noisy", "clean"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        clean = np.clip(rng.random((1, 1, 3)) * 0.6 + 0.2 + 0.1 * np.sin(np.arange(size)[:, None, None] / 4),
                        0, 1).repeat(size, 1)
        noisy = np.clip(clean + rng.normal(0, 0.05, clean.shape), 0, 1)
        for sub, image in (("noisy", noisy), ("clean", clean)):
            cv2.imwrite(str(root / sub / f"img{i}.png"), np.round(image * 255).astype(np.uint8))
    return root


def write_config(tmp_path: Path, methods: list, **extra) -> Path:
    cfg = {"name": "tiny", "work": str(tmp_path / "work"), "data": {"root": str(make_pairs(tmp_path / "pairs"))},
           "budget": TINY, "metrics": ["psnr", "ssim_matlab", "ssim_y"], "device": "cpu", "methods": methods,
           **extra}
    path = tmp_path / "bench.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


METHODS = [
    {"name": "AMSNet", "train": str(REPO / "options/train/photos.yml"),
     "set": {"method.pd_train": 2, "method.pd_test": 2, "method.recharge": False},
     "rows": {"B": {"r3": False}, "B-E": {"r3": True, "r3_copies": 2}}},
    {"name": "student", "train": str(REPO / "options/train/distill_coarse_cpu.yml"), "teacher": "AMSNet",
     "set": {"method.teacher.method": {"r3": False}, "method.aug_modes": [1]},
     "rows": {"student": {"type": "SinglePass"}, "student bf16": {"type": "SinglePass", "test": {"amp": "bf16"}}}},
    {"name": "broken", "train": str(REPO / "options/train/photos.yml"), "set": {"method.pd_train": 0}},
    {"name": "after broken", "train": str(REPO / "options/train/distill_coarse_cpu.yml"), "teacher": "broken"},
    {"name": "no such net", "train": str(REPO / "options/train/photos.yml"), "set": {"network.type": "NoSuchNet"}},
    {"name": "NLM", "classical": "nlm"},
    {"name": "missing weights", "checkpoint": "no/such/file.pth", "note": "not trained on this data"},
]


def test_benchmark_trains_scores_reports_and_keeps_finished_work(tmp_path, monkeypatch):
    monkeypatch.setenv("AMCFD_CPU_BF16", "1")                          # the bf16 row runs bf16 on any CPU
    script = load_script("benchmark")
    config = write_config(tmp_path, METHODS)
    assert script.main(["-opt", str(config), "--quiet"]) == 0          # failures reported, not fatal
    report = json.loads((tmp_path / "work" / "tiny.json").read_text())
    rows = report["rows"]
    assert list(rows) == ["noisy input", "B", "B-E", "student", "student bf16", "broken", "after broken",
                          "no such net", "NLM", "missing weights"]
    for label in ("B", "B-E", "student", "student bf16", "NLM"):
        r = rows[label]
        assert "failed" not in r and r["n"] == 2 and set(r["per_image"]) == {"img0", "img1"}
        assert np.isfinite(r["psnr"]) and 0 < r["ssim_y"] <= 1 and r["ms_per_image"] > 0
    assert rows["B"]["params"] == rows["B-E"]["params"] > 0
    assert 0 < abs(rows["student bf16"]["psnr"] - rows["student"]["psnr"]) < 0.5       # a row's test options
    assert rows["B-E"]["gflops"] > rows["B"]["gflops"] > 0              # R3: more forwards
    assert "pd_train" in rows["broken"]["failed"] and "needs broken" in rows["after broken"]["failed"]
    assert "NoSuchNet" in rows["no such net"]["failed"]                 # not even plannable: that row only
    assert "no/such/file.pth" in rows["missing weights"]["failed"]
    assert report["stages"]["AMSNet"]["steps"] == 3
    text = (tmp_path / "work" / "tiny.md").read_text()
    assert "| B-E |" in text and "failed:" in text and "SSIM (Y)" in text and "| img1 |" in text
    png = cv2.imread(str(tmp_path / "work" / "tiny.png"))
    assert png is not None and png.shape[0] > 300 and (png < 250).any()

    # a rerun keeps the stages and rows; a forced stage is retrained, and the stage that uses it too
    experiments = tmp_path / "work" / "tiny" / "experiments"

    def final(stage: str) -> Path:
        (folder,) = [p for p in experiments.glob(f"{stage}-*") if p.is_dir()]     # one folder per stage
        return next((folder / "models").glob("iter_*.pth"))

    stamps = {p: p.stat().st_mtime_ns for p in experiments.rglob("*.pth")}
    assert script.main(["-opt", str(config), "--quiet"]) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    student_ckpt = final("student")
    assert script.main(["-opt", str(config), "--quiet", "--force", "AMSNet"]) == 0
    assert final("student").stat().st_mtime_ns != stamps[student_ckpt]
    # a training image with other contents under the same name: the stage is trained again in a new folder, and
    # the folder of the old images is removed
    teacher_ckpt = final("AMSNet")
    image = tmp_path / "pairs" / "noisy" / "img0.png"
    cv2.imwrite(str(image), np.ascontiguousarray(cv2.imread(str(image))[::-1]))
    assert script.main(["-opt", str(config), "--quiet"]) == 0
    assert final("AMSNet") != teacher_ckpt and not teacher_ckpt.exists()


def test_a_stage_whose_loss_rose_is_reported_with_the_trainers_warning(tmp_path, monkeypatch):
    import amcfd.engine.trainer as trainer_module

    class Rises(trainer_module.LossRiseWatch):              # the trainer's watch, made to fire at its first window
        def __init__(self):
            super().__init__(min_steps=1)

        def update(self, iteration, mean):
            self.message = self.message or f"the training loss has risen (iteration {iteration})"
            return self.message

    monkeypatch.setattr(trainer_module, "LossRiseWatch", Rises)
    config = write_config(tmp_path, [{"name": "AMSNet", "train": str(REPO / "options/train/photos.yml"),
                                      "set": {"method.pd_train": 2, "method.recharge": False}}])
    assert load_script("benchmark").main(["-opt", str(config), "--quiet"]) == 0
    report = json.loads((tmp_path / "work" / "tiny.json").read_text())
    assert report["stages"]["AMSNet"]["warning"] == "the training loss has risen (iteration 3)"
    assert "AMSNet 3 steps" in (text := (tmp_path / "work" / "tiny.md").read_text())
    assert "(warning: the training loss has risen (iteration 3))" in text
    assert "(auto: method.pd_test = 1 (from 2 training images" in text      # what 'auto' chose, and from what


def test_config_errors_name_the_option(tmp_path):
    good = write_config(tmp_path, METHODS[:1])
    with pytest.raises(ConfigError, match="methods\\[1\\].teacher"):
        load_benchmark(good, ["methods=[{name: a, classical: nlm}, {name: b, train: x.yml, teacher: zzz}]"])
    with pytest.raises(ConfigError, match="exactly one of"):
        load_benchmark(good, ["methods=[{name: a, classical: nlm, train: x.yml}]"])
    with pytest.raises(ConfigError, match="'nope' is not one of"):
        load_benchmark(good, ["methods=[{name: a, classical: nope}]"])
    with pytest.raises(ConfigError, match="data.root"):
        load_benchmark(good, ["data.root=/no/such/folder"])
    with pytest.raises(ConfigError, match="unknown keys"):
        load_benchmark(good, ["budgt={}"])
    with pytest.raises(ConfigError, match="methods\\[0\\].rows' \\(a\\) must map each row's label"):
        load_benchmark(good, ["methods=[{name: a, classical: nlm, rows: {one, two: {}}}]"])   # a comma in a label
    with pytest.raises(ConfigError, match="option 'data' must be"):
        load_benchmark(good, ["data=cc15"])
    assert load_script("benchmark").main(["-opt", str(tmp_path / "none.yml")]) == 2


def test_pareto_front_and_classical_filters():
    points = [(10, 30.0), (5, 29.0), (20, 29.5), (100, 31.0), (5, 28.0)]
    assert pareto_front(points) == [1, 0, 3]                              # (20, 29.5) and (5, 28) dominated
    clean = torch.full((1, 3, 40, 40), 0.5)
    noisy = (clean + 0.05 * torch.randn(1, 3, 40, 40, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    out = nlm(noisy)
    assert out.shape == noisy.shape and (out - clean).abs().mean() < (noisy - clean).abs().mean() / 2


def test_markdown_marks_failures_and_front():
    per = {"a": {"psnr": 30.0}}
    rows = {"noisy input": {"n": 1, "psnr": 28.0, "per_image": per, "kind": "reference"},
            "fast": {"psnr": 30.0, "ms_per_image": 1.0, "per_image": per, "kind": "trained"},
            "slow": {"psnr": 29.0, "ms_per_image": 9.0, "per_image": per, "kind": "trained"},
            "bad": {"failed": "RuntimeError: boom"}}
    text = markdown({"metrics": ["psnr"]}, rows)
    assert "| fast | 30.00 | +2.00 | 0 | 1 |" in text and "| yes |" in text
    assert "| slow | 29.00 | +1.00 | 0 | 9 |" in text and "failed: RuntimeError: boom" in text
    rows["slow"]["per_image"] = {"a": {"psnr": 29.6}}                      # 0.4 dB below its noisy input
    rows["noisy input"]["per_image"] = {"a": {"psnr": 30.0}}
    assert "| slow | 29.00 | +1.00 | 1 | 9 |" in markdown({"metrics": ["psnr"]}, rows)


def test_classical_and_imported_rows_from_code(tmp_path):
    """An imported checkpoint (e.g. a released student) is a row marked with its note; no training."""
    from amcfd.archs import build_arch

    network = {"type": "DnCNN", "preset": "small"}
    released = tmp_path / "released.pth"
    torch.save({"network": build_arch(network).state_dict(), "opt": {"network": network}}, released)
    cfg = load_benchmark(write_config(tmp_path, [
        {"name": "bilateral", "classical": "bilateral",
         "rows": {"bilateral": {}, "BF 5/20/2": {"diameter": 5, "sigma_color": 20, "sigma_space": 2}}},
        {"name": "released", "checkpoint": str(released), "rows": {"released student": {"type": "SinglePass"}},
         "note": "not trained on this data"}]))
    rows = Benchmark(cfg, progress=False).run()
    assert list(rows) == ["noisy input", "bilateral", "BF 5/20/2", "released student"]
    assert rows["bilateral"]["kind"] == "classical" and rows["released student"]["kind"] == "imported"
    assert rows["BF 5/20/2"]["filter"] == {"diameter": 5, "sigma_color": 20, "sigma_space": 2}
    assert rows["bilateral"]["psnr"] != rows["BF 5/20/2"]["psnr"] and "| BF 5/20/2 |" in markdown(cfg, rows)
    assert rows["released student"]["note"] == "not trained on this data" and rows["released student"]["params"] > 0
    assert not (tmp_path / "work" / "tiny" / "experiments").exists()


def test_only_keeps_the_named_entries_and_what_they_need(tmp_path):
    good = write_config(tmp_path, METHODS)
    cfg = load_benchmark(good, only=["student", "NLM"])
    assert [e["name"] for e in cfg["methods"]] == ["AMSNet", "student", "NLM"]
    with pytest.raises(ConfigError, match="--only: no entry named 'nope'"):
        load_benchmark(good, only=["nope"])


def test_optional_entries_run_only_when_named(tmp_path):
    longer = {"name": "longer", "train": METHODS[0]["train"], "set": {"train.max_minutes": 3}, "optional": True,
              "rows": {"longer": {}}}
    config = write_config(tmp_path, [*METHODS, longer])
    assert "longer" not in [e["name"] for e in load_benchmark(config)["methods"]]
    assert [e["name"] for e in load_benchmark(config, only=["longer"])["methods"]] == ["longer"]
    with pytest.raises(ConfigError, match="option 'longer_of' of 'longer': no entry named 'nope'"):
        load_benchmark(write_config(tmp_path / "other", [*METHODS, {**longer, "longer_of": "nope"}]))


def test_synthetic_data_is_the_demos_training_images_and_held_out_pairs(tmp_path):
    cfg = load_benchmark(write_config(tmp_path, METHODS[:1]), ["data=synthetic"])
    train, evaluation = dataset_entries(cfg)
    assert train["type"] == evaluation["type"] == "SyntheticCameraNoise" and evaluation["with_clean"]
    assert evaluation["images"] == ["coffee", "chelsea"] and "coffee" not in train["images"]


def test_bilateral_rows_with_fixed_settings_are_opencvs_filter():
    """A grid row (fixed sigma_color) is cv2.bilateralFilter on the 8-bit image: DistillCoarse's BF(I_N)."""
    from amcfd.ops.bilateral import bilateral_filter

    u8 = np.random.default_rng(3).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    x = torch.from_numpy(u8).permute(2, 0, 1).float()[None] / 255
    out = bilateral(x, diameter=7, sigma_color=30, sigma_space=3)
    expected = cv2.bilateralFilter(u8, 7, 30.0, 3)
    np.testing.assert_array_equal(np.round(out[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8), expected)
    assert (bilateral_filter(x, 7, 30, 3) * 255 - out * 255).abs().max() <= 1


def test_cost_counts_parameters_and_flops():
    from amcfd.analysis.cost import gflops, network_cost, parameter_count

    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    assert parameter_count(conv) == 8 * 3 * 9 + 8
    assert gflops(conv, torch.rand(1, 3, 16, 16)) == pytest.approx(2 * 8 * 3 * 9 * 16 * 16 / 1e9)
    threads = torch.get_num_threads()
    cost = network_cost({"type": "DnCNN", "preset": "small"}, size=32)
    assert torch.get_num_threads() == threads and cost["params"] > 0 and cost["gmacs"] == cost["gflops"] / 2 > 0


def test_rows_timed_on_a_busy_machine_say_so():
    from amcfd.analysis.report import busy_note

    assert busy_note({"a": {"load": 1.5}, "b": {}}, cores=2) == ""
    assert "load average up to 3.2 on 2 cores" in busy_note({"a": {"load": 3.2}, "b": {"load": 0.5}}, cores=2)


def test_rows_far_below_their_input_are_listed_with_their_teacher_and_longer_runs():
    from amcfd.analysis.report import below_input_notes

    def row(psnr, entry, **info):
        return {"psnr": psnr, "kind": "trained", "entry": entry, "method": {}, "per_image": {}, **info}

    rows = {"noisy input": {"psnr": 30.0, "per_image": {}}, "good": row(31.0, "good"), "bsn": row(25.0, "bsn"),
            "bsn (longer)": row(27.5, "bsn 2x", longer_of="bsn"), "student": row(25.2, "student", teacher="bsn"),
            "failed one": {"failed": "boom", "entry": "x"}}
    notes = below_input_notes(rows, {"bsn": {"steps": 100}, "bsn 2x": {"steps": 300}, "student": {"steps": 50}})
    assert notes.splitlines()[2:] == [
        "- bsn: -5.00 dB after 100 steps; the longer run bsn (longer), 300 steps: -2.50 dB (climbs, +2.50).",
        "- student: -4.80 dB after 50 steps; distilled from bsn (-5.00 dB)."]
    assert below_input_notes({"noisy input": rows["noisy input"], "good": rows["good"]}, {}) == ""
