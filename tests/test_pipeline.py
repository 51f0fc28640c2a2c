"""engine/pipeline.py: stages by identity; the budget is not the identity (more extends, less reuses); only the
stages needed run; a forced stage retrains what uses it; superseded folders are those of the same source."""
from __future__ import annotations

from pathlib import Path

from test_engine import tiny_options

from amcfd.engine.checkpoint import load_checkpoint
from amcfd.engine.pipeline import Pipeline, Stage
from amcfd.engine.runs import write_record


def stages(root: Path) -> list[Stage]:
    """A tiny teacher trained for a share of the budget (filled), and a stage that starts from it."""
    teacher = tiny_options(root, total_iter=4, fill_budget=True)
    student = tiny_options(root, total_iter=3)
    for opt in (teacher, student):
        opt["val"]["val_freq"] = 0
        del opt["datasets"]["val"]
    return [Stage("teacher", teacher, share=1.0), Stage("student", student, starts_from="teacher")]


def actions(pipeline: Pipeline) -> dict:
    return {name: p.action for name, p in pipeline.plan.items()}


def test_more_budget_extends_the_stage_and_less_reuses_it(tmp_path):
    first = Pipeline(tmp_path, stages(tmp_path), {}, budget=0.005)
    assert actions(first) == {"teacher": "train", "student": "train"} and first.needed() == ["teacher", "student"]
    first.run()
    teacher = first.plan["teacher"]
    steps = load_checkpoint(teacher.done)["iteration"]
    assert steps >= 20                                              # filled to its budget (the probe at least)

    again = Pipeline(tmp_path, stages(tmp_path), {}, budget=0.005)
    assert actions(again) == {"teacher": "reuse", "student": "reuse"} and again.needed() == ["student"]

    more = Pipeline(tmp_path, stages(tmp_path), {}, budget=0.02)
    assert more.plan["teacher"].folder == teacher.folder                     # the same identity, ...
    assert actions(more) == {"teacher": "extend", "student": "train"}         # ... its student a new one
    assert more.plan["student"].folder != first.plan["student"].folder
    more.run()
    extended = load_checkpoint(more.plan["teacher"].done)
    assert extended["iteration"] > steps and extended["opt"]["train"]["max_minutes"] == 0.02
    assert more.superseded() == [first.plan["student"].folder]

    less = Pipeline(tmp_path, stages(tmp_path), {}, budget=0.005)            # trained for more: kept as it is
    assert actions(less) == {"teacher": "reuse", "student": "reuse"}
    assert less.plan["student"].folder == more.plan["student"].folder


def test_a_finished_last_stage_needs_nothing_before_it_and_a_forced_stage_retrains_its_users(tmp_path):
    import shutil

    first = Pipeline(tmp_path, stages(tmp_path), {}, budget=0.005)
    first.run()
    shutil.rmtree(first.plan["teacher"].folder)                   # e.g. --keep student
    kept = Pipeline(tmp_path, stages(tmp_path), {}, budget=0.005)
    assert kept.needed() == ["student"] and kept.run() == first.plan["student"].done

    forced = Pipeline(tmp_path, stages(tmp_path), {}, budget=0.005)
    student = forced.plan["student"].done.stat().st_mtime_ns
    forced.run_stage("teacher", force=True)
    forced.run_stage("student")                                   # it starts from a forced stage: trained again
    assert forced.plan["student"].ran["trainer"] is not None
    assert forced.plan["student"].done.stat().st_mtime_ns != student


def test_superseded_folders_are_of_the_same_stages_and_source(tmp_path):
    pipeline = Pipeline(tmp_path / "work", stages(tmp_path), {}, budget=0.005, source=tmp_path / "photos")
    source = str((tmp_path / "photos").resolve())
    for name, stage, where in (("teacher-old", "teacher", source), ("teacher-other", "teacher", "/elsewhere"),
                               ("other-old", "other", source)):
        write_record(tmp_path / "work" / name, {"stage": stage, "identity": name, "source": where})
    assert pipeline.superseded() == [tmp_path / "work" / "teacher-old"]


def test_images_stand_for_the_training_root_in_the_identity(tmp_path):
    one, other = stages(tmp_path), stages(tmp_path)
    for stage_list, root in ((one, "/photos/a"), (other, "/moved/a")):
        stage_list[0].options["datasets"]["train"] = {"type": "NoisyFolder", "root": root, "crop_size": 24}
    images = {"x.png": [10, "abc"]}
    a = Pipeline(tmp_path, one, images, budget=1)
    b = Pipeline(tmp_path, other, images, budget=1)
    assert a.plan["teacher"].folder == b.plan["teacher"].folder                 # moved photos: the same work
    c = Pipeline(tmp_path, stages(tmp_path), {"x.png": [10, "abd"]}, budget=1)
    assert c.plan["teacher"].folder != Pipeline(tmp_path, stages(tmp_path), images, budget=1).plan["teacher"].folder
