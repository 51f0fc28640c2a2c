"""A pipeline of training stages: each with its options, identity, reuse, budget share and run.

``amcfd-denoise`` (its stages: amcfd/stages.py) and the benchmark presets (analysis/benchmark.py, e.g. the
distillation chain of options/bench/distill.yml) declare their stages and run them here, with ``train.py``'s
trainer.

- A ``Stage`` is a complete option dict of ``train.py`` without its folder and the checkpoints it starts from:
  those are linked by the other stage's name (``starts_from``: ``path.pretrain_network``; ``teacher``:
  ``method.teacher.checkpoint``), each that stage's final checkpoint.
- Its folder, ``<work>/<name>-<identity>``, is named after what its result depends on (``engine/runs.py``): the
  training images, its options with every default filled in, the versions, and the stages it links to with the
  budget they trained for. Its own budget (``train.max_minutes``, or ``share`` of the pipeline's) is not part
  of it:
- a finished stage is reused when it trained for at least the budget asked now; asked for more, it is extended:
  it goes on from its final checkpoint until the new budget is spent (the time spent before counts; with
  ``fill_budget`` the learning-rate schedule is fitted to the new end, so it rises and decays once more). An
  interrupted stage resumes from its last checkpoint within what is left of its budget (even after kill -9).
  Any other change trains anew in a folder of its own, with one line saying what differed; the folders of a
  stage's earlier identities are ``superseded``.
"""
from __future__ import annotations

import copy
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from amcfd.engine.runs import (
    RECORD,
    identity_options,
    latest_other_record,
    read_record,
    stage_folder,
    stage_record,
    what_differs,
    write_record,
)

log = logging.getLogger("amcfd")
UNLIMITED = float("inf")      # a stage without train.max_minutes


@dataclass
class Stage:
    """One training run of a pipeline. ``options``: train.py's options (``name`` and folders are set here);
    ``starts_from`` / ``teacher``: the names of earlier stages whose final checkpoints it starts from or distils;
    ``share``: its share of the pipeline's budget (``train.max_minutes``; None: the options' own); ``finish``:
    last changes to the runnable options once the linked checkpoints exist (they may read them)."""
    name: str
    options: dict
    starts_from: str | None = None
    teacher: str | None = None
    share: float | None = None
    finish: Callable[[dict], None] | None = None

    def links(self) -> dict:
        return {key: name for key, name in (("starts_from", self.starts_from), ("teacher", self.teacher)) if name}


@dataclass
class Planned:
    """A stage with its identity ``record``, ``folder``, the ``budget`` (minutes) asked now, its final checkpoint
    if it finished (``done``) and the budget that run trained for (``trained``)."""
    stage: Stage
    options: dict
    record: dict
    folder: Path
    budget: float
    done: Path | None = None
    trained: float = 0.0
    ran: dict = field(default_factory=dict)      # after run_stage: trainer, minutes (None when reused)

    @property
    def action(self) -> str:
        """reuse | extend (finished, for less than the budget now) | resume (interrupted) | train."""
        if self.done is not None:
            return "reuse" if self.trained >= self.budget else "extend"
        return "resume" if (self.folder / "models").is_dir() else "train"

    @property
    def trained_for(self) -> float:
        """The budget its final checkpoint will have trained for once this run is over."""
        return self.trained if self.action == "reuse" else self.budget


def budget_of(options: dict) -> float:
    minutes = options.get("train", {}).get("max_minutes") or 0
    return float(minutes) if minutes > 0 else UNLIMITED


class Pipeline:
    """Stages run in order under ``work``. ``images``: the training images' digest (engine/runs.files_digest);
    ``source``: where they are (records of another source are never ``superseded``); ``budget``: the minutes
    that stages with a ``share`` split. ``plan`` holds every stage, planned at construction; with
    ``defer_errors`` a stage that cannot be planned (e.g. an unknown network type) fails when it is run instead
    (``errors``), so the other stages still run."""

    def __init__(self, work: Path, stages: list[Stage], images: dict, budget: float | None = None,
                 source: Path | None = None, say: Callable[[str], None] = log.warning, defer_errors: bool = False):
        self.work, self.budget, self.say = Path(work), budget, say
        self.source = str(Path(source).resolve()) if source else None
        self.checkpoints: dict[str, Path] = {}
        self.plan: dict[str, Planned] = {}
        self.errors: dict[str, Exception] = {}
        self.forced: set[str] = set()
        for stage in stages:
            try:
                self.plan[stage.name] = self._planned(stage, images)
            except Exception as exc:          # noqa: BLE001 - raised again by run_stage
                if not defer_errors:
                    raise
                self.errors[stage.name] = exc

    def _planned(self, stage: Stage, images: dict) -> Planned:
        from amcfd.engine.checkpoint import finished_checkpoint

        options = copy.deepcopy(stage.options)
        if stage.share is not None:
            options.setdefault("train", {})["max_minutes"] = self.budget * stage.share
        links = {key: f"{self.plan[name].record['identity']} trained for {self.plan[name].trained_for:g} min"
                 for key, name in stage.links().items()}
        depends = identity_options(options)
        if images:                        # their digest stands for the files, wherever they are
            depends.get("datasets", {}).get("train", {}).pop("root", None)
        record = stage_record(stage.name, images, depends, links or None)
        record["source"] = self.source
        folder = stage_folder(self.work, record)
        done, ckpt = finished_checkpoint(folder)      # read once: the budget it trained for is in its options
        return Planned(stage, options, record, folder, budget_of(options), done,
                       0.0 if ckpt is None else budget_of(ckpt["opt"]))

    def needed(self) -> list[str]:
        """The stages ``run`` runs: the last one, and the stages that a stage it trains (not reuses) links to."""
        names = list(self.plan)
        wanted = set(names[-1:])
        for name in reversed(names):
            if name in wanted and self.plan[name].action != "reuse":
                wanted.update(self.plan[name].stage.links().values())
        return [n for n in names if n in wanted]

    def to_train(self) -> list[Planned]:
        """The stages ``run`` trains anew or resumes (extended ones need no minimum)."""
        return [self.plan[n] for n in self.needed() if self.plan[n].action in ("train", "resume")]

    def runnable(self, planned: Planned) -> dict:
        """The stage's options with its name, folder and linked checkpoints."""
        opt = copy.deepcopy(planned.options)
        opt["name"] = planned.folder.name
        opt.setdefault("path", {})["experiments_root"] = str(self.work)
        if planned.stage.starts_from:
            opt["path"]["pretrain_network"] = str(self.checkpoints[planned.stage.starts_from])
        if planned.stage.teacher:
            opt["method"].setdefault("teacher", {})["checkpoint"] = str(self.checkpoints[planned.stage.teacher])
            opt["method"]["teacher"].setdefault("cache_dir", str(self.work / "teacher_targets"))
        if planned.stage.finish:
            planned.stage.finish(opt)
        return opt

    def run_stage(self, name: str, force: bool = False) -> Path:
        """Reuse, extend, resume or train one stage (every stage it links to must have run); its final checkpoint.
        ``force`` (and a link to a forced stage) trains anew from scratch."""
        from amcfd.engine.checkpoint import finished_run
        from amcfd.engine.trainer import Trainer
        from amcfd.options import validate

        if name in self.errors:
            raise self.errors[name]
        p = self.plan[name]
        if force or self.forced & set(p.stage.links().values()):
            self.forced.add(name)
            shutil.rmtree(p.folder, ignore_errors=True)
            p.done, p.trained = None, 0.0
        action = p.action
        if action == "reuse":
            self.say(f"[{name}] the same work finished before: {p.done}")
            self.checkpoints[name], p.ran = p.done, {"trainer": None, "minutes": None}
            return p.done
        if action == "train" and not p.folder.is_dir():
            other = latest_other_record(self.work, p.record)
            if other is not None:
                self.say(f"[{name}] not the same work as {other[0]} ({what_differs(other[1], p.record)}): training "
                         f"anew in {p.folder}")
        minutes = "" if p.budget == UNLIMITED else f" for {p.budget:.1f} min"
        self.say({"train": f"[{name}] training{minutes} in {p.folder}",
                  "resume": f"[{name}] resuming{minutes} in {p.folder}",
                  "extend": f"[{name}] extending the finished run ({p.trained:.1f} min) to {p.budget:.1f} min in "
                            f"{p.folder}"}[action])
        write_record(p.folder, p.record)
        start = time.perf_counter()
        trainer = Trainer(validate(self.runnable(p), "train"), auto_resume=True)
        trainer.train()
        p.done, p.trained = finished_run(p.folder), p.budget
        p.ran = {"trainer": trainer, "minutes": (time.perf_counter() - start) / 60}
        self.checkpoints[name] = p.done
        return p.done

    def run(self, guard: Callable[[Planned], object] | None = None) -> Path:
        """The ``needed`` stages in order (each inside the context ``guard(planned)`` returns, if given); the last
        one's final checkpoint."""
        import contextlib

        for name in self.needed():
            with guard(self.plan[name]) if guard else contextlib.nullcontext():
                last = self.run_stage(name)
        return last

    def superseded(self, name: str | None = None) -> list[Path]:
        """Folders under ``work`` of this pipeline's stages (or of stage ``name``), from the same source, with
        another identity."""
        current = {p.folder for p in self.plan.values()}
        found = []
        for path in sorted(self.work.glob(f"*/{RECORD}")):
            record = read_record(path.parent)
            if record and record.get("stage") in ({name} if name else self.plan) and path.parent not in current \
                    and record.get("source", self.source) == self.source:
                found.append(path.parent)
        return found
