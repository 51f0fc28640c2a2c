"""Every benchmark preset (options/bench/*.yml): it loads, each trained stage's options are valid, and --only keeps
an entry with the stages it trains from or distils, on tiny pairs instead of the preset's data."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import load_script
from test_benchmark import make_pairs

from amcfd.analysis.benchmark import load_benchmark, stages
from amcfd.engine.pipeline import Pipeline
from amcfd.options import validate

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "amcfd" / "configs" / "bench").glob("*.yml"))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return make_pairs(tmp_path_factory.mktemp("pairs") / "set")


def load(preset: Path, pairs: Path, only=None) -> dict:
    """The preset on the tiny pairs (data sets replaced; everything else as shipped)."""
    return load_benchmark(preset, ["datasets=null", f"data={{root: {pairs}}}", "work=unused"], only=only)


def needs(entries: list, name: str) -> set:
    """The entry and the earlier ones it trains from or distils, transitively."""
    entry = next(e for e in entries if e["name"] == name)
    return {name}.union(*(needs(entries, entry[k]) for k in ("from", "teacher") if entry.get(k)))


def test_every_preset_is_here():
    assert {p.stem for p in PRESETS} >= {"real", "real_gpu", "released", "distill", "photos", "bilateral"}


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_loads_and_its_stages_are_valid_options(preset, pairs, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = load(preset, pairs)
    assert cfg["name"] and cfg["methods"]
    pipeline = Pipeline(tmp_path, stages(cfg), {})
    for name, planned in pipeline.plan.items():          # each stage linked to its stand-in predecessors
        opt = validate(pipeline.runnable(planned), "train")
        assert opt["train"]["total_iter"] % opt["logger"]["save_checkpoint_freq"] == 0     # the final step is saved
        pipeline.checkpoints[name] = tmp_path / f"{len(pipeline.checkpoints)}.pth"
        pipeline.checkpoints[name].touch()


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_only_keeps_each_entry_and_what_it_needs(preset, pairs, monkeypatch):
    monkeypatch.chdir(REPO)
    entries = load(preset, pairs)["methods"]
    names = [e["name"] for e in entries]
    for name in names:
        kept = [e["name"] for e in load(preset, pairs, only=[name])["methods"]]
        assert kept == [n for n in names if n in needs(entries, name)]


def test_only_with_an_unknown_entry_is_a_one_line_error(pairs, capsys):
    code = load_script("benchmark").main(["-opt", str(REPO / "options/bench/bilateral.yml"), "--set",
                                          f"data.root={pairs}", "--only", "nope"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--only: no entry named 'nope'" in err[0]


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_imported_checkpoints_are_released_names(preset, pairs):
    """A preset's ``checkpoint:`` rows name registered releases (fetched by name), not files of one machine, or
    files under results/ that a command in the preset's header writes (its ``--save`` folder)."""
    from amcfd.hub.weights import releases

    header = preset.read_text()
    for entry in load(preset, pairs)["methods"]:
        ckpt = entry.get("checkpoint")
        if ckpt and ckpt not in releases():
            assert ckpt.startswith("results/") and f"--save {Path(ckpt).parent.parent}/" in header, entry["name"]
