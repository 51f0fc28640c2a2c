"""amcfd-denoise: photos -> teacher -> coarse -> fine student -> denoised photos; a stage is reused only when it
is the same work; the budget is the budget; faults end in one line and are resumable."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from amcfd.data.imageio import read_image_raw, write_image
from amcfd.denoise import default_work
from amcfd.engine.checkpoint import finished_run, load_checkpoint

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TINY = {"network": {"type": "DnCNN", "in_nc": 3, "out_nc": 3, "nc": 8, "nb": 3},
        "logger": {"print_freq": 10, "save_checkpoint_freq": 10, "progress_bar": False}}
BUDGET = "0.1"       # minutes for all three stages: each trains at least its 20 probe steps (also on a busy machine)
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}     # tiny networks: one thread is fastest, and steady on a busy machine


def tiny_options(folder: Path) -> Path:
    """The packaged stage option files with a tiny network and tiny crops."""
    (folder / "train").mkdir(parents=True)
    for name in ("photos.yml", "distill_coarse_cpu.yml", "distill_fine_cpu.yml"):
        tiny = {"base": str(REPO / "options/train" / name), **TINY,
                "train": {"total_iter": 4, "warmup_iter": 0},
                "datasets": {"train": {"crop_size": 32, "repeat": 2, "batch_size": 2}}}
        if name == "photos.yml":
            tiny["method"] = {"pd_train": 2}           # 'auto' for the rest
        (folder / "train" / name).write_text(yaml.safe_dump(tiny))
    return folder


def write_photos(folder: Path, seed: int, sizes=((48, 56),) * 3) -> None:
    rng = np.random.default_rng(seed)
    for i, (h, w) in enumerate(sizes):
        y, x = np.mgrid[0:h, 0:w] / h
        clean = np.clip(np.stack([0.2 + 0.5 * x, 0.4 + 0.3 * y, 0.3 + 0.1 * i + 0 * x], -1), 0, 1)
        write_image(folder.parent / "clean" / f"p{i}.png", clean)
        write_image(folder / f"p{i}.png", np.clip(clean + 0.05 * rng.standard_normal(clean.shape), 0, 1))


def run(*args: str, cwd: Path, budget: str = BUDGET) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "amcfd.denoise", *args, "--budget-minutes", budget,
                           "--device", "cpu"], capture_output=True, text=True, cwd=cwd, timeout=600, env=ENV)


def tree_digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def stage_folders(work: Path, stage: str) -> list[Path]:
    return sorted(work.glob(f"{stage}-*"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("denoise")
    write_photos(work / "noisy", seed=0)
    (work / "noisy" / "notes.txt").write_text("not a photo")
    write_image(work / "broken.jpg", np.full((40, 40, 3), 0.5))
    data = (work / "broken.jpg").read_bytes()
    (work / "noisy" / "broken.jpg").write_bytes(data[: len(data) // 2])      # a truncated JPEG
    tiny_options(work / "opts")
    return work


@pytest.fixture(scope="module")
def trained(photos) -> tuple[Path, subprocess.CompletedProcess]:
    """One whole run of the command: its work folder and result."""
    result = run("noisy", "--output", "out", "--options", "opts", "--clean", "clean", "--work", "runs", cwd=photos)
    assert result.returncode == 0, result.stderr[-3000:]
    return photos / "runs", result


def test_whole_pipeline(photos, trained):
    work, first = trained
    for stage in ("teacher", "coarse", "fine"):
        (folder,) = stage_folders(work, stage)
        assert (folder / "stage.json").is_file() and list((folder / "models").glob("iter_*.pth"))
        assert f"| {stage} |" in first.stdout
    assert "Against the clean references (3 images)" in first.stdout and "| output |" in first.stdout
    assert "| the classical core (--method classical) |" in first.stdout and "Against the classical core: " in \
        first.stdout and "below its input by more than 0.3 dB: " in first.stdout
    assert "notes.txt" in first.stderr                                      # skipped with a warning
    assert first.stderr.count("broken.jpg") == 1 and "truncated JPEG" in first.stderr    # once, in all stages
    assert not (photos / "out" / "broken.png").exists()
    teacher_opts = yaml.safe_load((stage_folders(work, "teacher")[0] / "options.yml").read_text())
    assert teacher_opts["method"]["pd_test"] in (1, 2)                      # 'auto' resolved from the photos
    final = load_checkpoint(finished_run(stage_folders(work, "teacher")[0]))
    assert final["iteration"] == final["opt"]["train"]["total_iter"] >= 20  # filled to the budget, not 4
    for i in range(3):                                                      # same size, bit depth, upright
        raw, info = read_image_raw(photos / "out" / f"p{i}.png")
        assert raw.shape == (48, 56, 3) and raw.dtype == np.uint8 and info.get("orientation", 1) == 1


def test_rerun_reuses_the_same_work_and_keep_student_then_trains_nothing(photos, trained):
    work, _ = trained
    args = ("noisy", "--output", "out2", "--options", "opts", "--work", "runs")
    again = run(*args, cwd=photos)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("the same work finished before") == 1 and "training for" not in again.stderr   # fine
    own = photos / "runs_student"                        # a copy: the module's shared work folder stays whole
    shutil.copytree(work, own, ignore=shutil.ignore_patterns(".lock"))
    args = ("noisy", "--output", "out2", "--options", "opts", "--work", "runs_student")
    kept = run(*args, "--keep", "student", cwd=photos)
    assert kept.returncode == 0 and kept.stderr.count("finished before") == 1
    assert not stage_folders(own, "teacher") and not stage_folders(own, "coarse") and stage_folders(own, "fine")
    after = run(*args, cwd=photos)                      # the student's folder alone is enough: nothing trains
    assert after.returncode == 0, after.stderr[-3000:]
    assert "training for" not in after.stderr and "| fine |" in after.stdout and "| teacher |" not in after.stdout


def old_record(folder: Path, stage: str, source: Path) -> Path:
    """A finished-looking stage folder of earlier options (another identity) for the photos in ``source``."""
    from amcfd.engine.runs import write_record

    write_record(folder, {"stage": stage, "identity": "0123456789", "source": str(source.resolve())})
    (folder / "models").mkdir()
    (folder / "models" / "iter_00000004.pth").write_bytes(b"old")
    return folder


def test_superseded_stages_are_removed_and_keep_student_keeps_only_the_student(photos, trained):
    work, _ = trained
    own = photos / "runs_superseded"
    shutil.copytree(work, own, ignore=shutil.ignore_patterns(".lock"))
    old = old_record(own / "teacher-0123456789", "teacher", photos / "noisy")       # never to be reused
    other = old_record(own / "teacher-9876543210", "teacher", photos / "elsewhere")  # another folder's photos
    result = run("noisy", "--output", "out_sup", "--options", "opts", "--work", "runs_superseded", cwd=photos)
    assert result.returncode == 0 and "training for" not in result.stderr, result.stderr[-3000:]
    assert not old.exists() and other.exists() and len(stage_folders(own, "coarse")) == 1
    result = run("noisy", "--output", "out_sup", "--options", "opts", "--work", "runs_superseded", "--keep",
                 "student", cwd=photos)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name.split("-")[0] for p in own.iterdir() if p.is_dir()) == ["fine", "teacher"]   # + other's


def test_keep_outputs_writes_every_photo_and_leaves_no_checkpoint(photos):
    """--keep outputs: the student denoises the photos before any stage folder is removed."""
    result = run("noisy", "--output", "out_keep", "--options", "opts", "--work", "runs_keep", "--keep", "outputs",
                 cwd=photos)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (photos / "out_keep").iterdir()) == ["p0.png", "p1.png", "p2.png"]
    assert not list((photos / "runs_keep").rglob("*.pth")) and not (photos / "runs_keep" / "teacher_targets").exists()


def test_a_larger_budget_extends_the_teacher_and_retrains_the_students(photos, trained):
    work, _ = trained
    own = photos / "runs_budget"
    shutil.copytree(work, own, ignore=shutil.ignore_patterns(".lock"))
    (teacher,) = stage_folders(own, "teacher")
    steps = load_checkpoint(finished_run(teacher))["iteration"]
    more = run("noisy", "--output", "out_budget", "--options", "opts", "--work", "runs_budget", cwd=photos,
               budget="0.2")
    assert more.returncode == 0, more.stderr[-3000:]
    assert "[teacher] extending the finished run" in more.stderr and more.stderr.count("training anew") == 2
    assert stage_folders(own, "teacher") == [teacher] and load_checkpoint(finished_run(teacher))["iteration"] > steps
    assert len(stage_folders(own, "coarse")) == len(stage_folders(own, "fine")) == 1     # the old ones removed
    log = (teacher / "train.log").read_text()
    assert "resumed from" in log
    less = run("noisy", "--output", "out_budget2", "--options", "opts", "--work", "runs_budget", cwd=photos)
    assert less.returncode == 0 and "[fine] the same work finished before" in less.stderr, less.stderr[-3000:]
    assert "training" not in less.stderr


def test_changed_option_retrains_in_a_new_folder_and_says_why(photos, trained):
    work, _ = trained
    own = photos / "runs_changed"
    shutil.copytree(work, own, ignore=shutil.ignore_patterns(".lock"))
    shutil.copytree(photos / "opts", photos / "opts_changed")
    teacher_file = photos / "opts_changed" / "train" / "photos.yml"
    teacher_file.write_text(teacher_file.read_text().replace("total_iter: 4", "total_iter: 5"))
    before = set(own.glob("*-*"))
    result = run("noisy", "--output", "out3", "--options", "opts_changed", "--work", "runs_changed", cwd=photos)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stderr.splitlines() if x.startswith("[teacher] not the same work"))
    assert "train.total_iter 4 -> 5" in line and "training anew in" in line
    assert all(len(stage_folders(own, s)) == 1 for s in ("teacher", "coarse", "fine"))
    assert not before & set(own.glob("*-*")) and not (own / "teacher_targets").exists()   # the old ones removed


def test_same_folder_name_different_photos_get_different_models(tmp_path):
    for name, seed in (("set_a", 1), ("set_b", 2)):
        write_photos(tmp_path / name / "noisy", seed=seed)
    tiny_options(tmp_path / "opts")
    a = run("set_a/noisy", "--output", "out_a", "--options", "opts", cwd=tmp_path)
    b = run("set_b/noisy", "--output", "out_b", "--options", "opts", cwd=tmp_path)
    assert a.returncode == 0 and b.returncode == 0, b.stderr[-3000:]
    assert "finished before" not in b.stderr and b.stderr.count("training for") == 3
    works = sorted((tmp_path / "experiments").iterdir())
    assert len(works) == 2 and all(w.name.startswith("denoise_noisy_") for w in works)
    # set_a's work folder given for set_b's photos: a new folder per stage, one line saying what differed
    work_a = tmp_path / default_work(tmp_path / "set_a/noisy")
    c = run("set_b/noisy", "--output", "out_c", "--options", "opts", "--work", str(work_a), cwd=tmp_path)
    assert c.returncode == 0, c.stderr[-3000:]
    assert "images: 3 changed" in c.stderr and "finished before" not in c.stderr
    assert all(len(stage_folders(work_a, s)) == 2 for s in ("teacher", "coarse", "fine"))


def test_small_images_and_sub_folders(tmp_path):
    write_photos(tmp_path / "noisy" / "trip", seed=3, sizes=((48, 56), (20, 26)))   # 20x26 < the 32 px crop
    write_photos(tmp_path / "noisy", seed=4, sizes=((40, 44),))
    tiny_options(tmp_path / "opts")
    result = run("noisy", "--output", "out", "--options", "opts", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert read_image_raw(tmp_path / "out/trip/p1.png")[0].shape == (20, 26, 3)
    assert read_image_raw(tmp_path / "out/p0.png")[0].shape == (40, 44, 3)


def test_kill_then_rerun_resumes_and_finishes(tmp_path):
    write_photos(tmp_path / "noisy", seed=5)
    tiny_options(tmp_path / "opts")
    photos_before = tree_digest(tmp_path / "noisy")
    args = [sys.executable, "-m", "amcfd.denoise", "noisy", "--output", "out", "--options", "opts", "--work", "runs",
            "--budget-minutes", "0.4", "--device", "cpu"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list((tmp_path / "runs").glob("teacher-*/models/iter_*.pth")) and time.time() < deadline:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "out").exists()
    result = run("noisy", "--output", "out", "--options", "opts", "--work", "runs", cwd=tmp_path, budget="0.4")
    assert result.returncode == 0, result.stderr[-3000:]
    (teacher,) = stage_folders(tmp_path / "runs", "teacher")
    assert "resumed from" in (teacher / "train.log").read_text()
    assert len(list((tmp_path / "out").glob("*.png"))) == 3
    assert tree_digest(tmp_path / "noisy") == photos_before


def test_second_run_on_the_same_work_folder_is_refused(photos, trained):
    from amcfd.engine.runs import WorkLock

    work, _ = trained
    with WorkLock(work):
        result = run("noisy", "--output", "out4", "--options", "opts", "--work", "runs", "--budget-minutes", "0.07",
                     cwd=photos)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and "another run" in last and "--work" in last
    assert not (photos / "out4").exists()


@pytest.mark.parametrize("args, message", [
    (("noisy", "--output", "noisy/out"), "never overwritten"),
    (("missing", "--output", "o"), "not found: missing"),
    (("noisy/p0.png", "--output", "o"), "training needs a folder"),
    (("noisy", "--output", "o", "--budget-minutes", "0"), "--budget-minutes must be > 0"),
    (("noisy", "--output", "o", "--pretrained", "nope.pth"), "--pretrained: no such file or released model"),
    (("noisy", "--output", "o", "--pretrained", "nope.pth", "--keep", "student"), "--keep applies only to training"),
    (("noisy", "--output", "o", "--method", "classical", "--budget-minutes", "3", "--options", "opts"),
     "--budget-minutes, --options apply only to training"),
    (("noisy", "--output", "o", "--options", "opts", "--budget-minutes", "0.0001"), "is too small for 4 photo(s)"),
])
def test_bad_input_is_one_line_and_writes_nothing(photos, args, message):
    before = set(photos.iterdir())
    result = subprocess.run([sys.executable, "-m", "amcfd.denoise", *args], capture_output=True, text=True,
                            cwd=photos, timeout=600, env=ENV)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and last.startswith("error: ") and message in last, result.stderr[-2000:]
    assert result.stderr.count("error") == 1 and "Traceback" not in result.stderr
    assert set(photos.iterdir()) == before                  # no work folder, no output


def test_pretrained_model_skips_training(photos, trained):
    _, result = trained
    student = next(line for line in result.stdout.splitlines() if line.startswith("model: "))[len("model: "):]
    result = subprocess.run([sys.executable, "-m", "amcfd.denoise", "noisy/p0.png", "--output", "out_pre",
                             "--pretrained", str(student)], capture_output=True, text=True, cwd=photos, timeout=600,
                            env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (photos / "out_pre/p0.png").is_file() and "| teacher |" not in result.stdout


def test_the_summary_measures_the_model_against_the_classical_core(photos):
    """With --clean, the classical core's scores on the same photos (computed apart, nothing written beside the
    outputs), the photos below their input, and a plain sentence when the model does not beat the core."""
    from amcfd.denoise import classical_scores, format_summary, scores

    source, clean = photos / "noisy", photos / "clean"
    files = sorted(source.glob("p*.png"))
    core = classical_scores(files, source, clean, "cpu")
    assert core["images"] == 3 and core["output PSNR"] > core["input PSNR"] + 1
    identity = scores(source, files, source, clean)                       # a "model" that returns its input
    assert all(i == o for i, o in identity["per_image"].values())
    text = format_summary({"denoise": {"images": 3, "minutes": 0.1}, "scores": identity, "classical": core},
                          Path("m.pth"), Path("out"))
    assert f"| the classical core (--method classical) | {core['output PSNR']:.2f} |" in text
    assert "by more than 0.3 dB: 0 of 3 photos" in text and "does not beat the classical core" in text
