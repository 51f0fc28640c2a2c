"""scripts/bench_speed.py in-process with tiny settings, and amcfd.analysis.results_doc.update_section."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import load_script

from amcfd.analysis.results_doc import command_line, update_section

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def test_bench_speed_smoke(tmp_path):
    bench = load_script("bench_speed")
    docs = tmp_path / "results.md"
    threads = torch.get_num_threads()
    try:  # one thread: on a busy shared CPU, 2 spin-waiting OpenMP threads measured 100x slower
        rc = bench.main(["--pairs", "cpu", "--sizes", "64", "--reps", "1", "--skip-photo", "--devices", "cpu",
                         "--threads", "1", "--out", str(tmp_path), "--write-docs", "--docs-path", str(docs)])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    report = json.loads((tmp_path / "speed.json").read_text())
    rows = report["rows"]
    assert report["complete"] and [r["variant"] for r in rows] == ["B", "B-E", "P-E"]
    for r in rows:
        assert r["device"] == "cpu" and r["pair"] == "cpu" and r["size"] == "64x64" and r["reps"] == 1
        assert r["teacher_ms"] > 0 and r["student_ms"] > 0 and r["ratio"] > 0 and r["paired_ratio"] > 0
    table = (tmp_path / "speed.md").read_text()
    assert "| device | pair | size | teacher variant |" in table and "| cpu | cpu | 64x64 | B-E |" in table
    assert f"## {bench.DOC_TITLE}" in docs.read_text()


def test_update_section_appends_replaces_and_keeps_other_sections(tmp_path):
    doc = tmp_path / "docs" / "results.md"
    update_section("Speed", "old table", "python a.py", doc)                      # creates the file
    update_section("Quality", "psnr table\n\n```\n## not a heading\n```", "python b.py", doc)  # appends
    text = doc.read_text()
    assert text.startswith("# Results") and text.index("## Speed") < text.index("## Quality")
    update_section("Speed", "new table", "python a.py --fast", doc)               # replaces in place
    update_section("Quality", "psnr table 2", "python b.py", doc)                 # fenced '##' not a boundary
    text = doc.read_text()
    assert "old table" not in text and "new table" in text and text.count("## Speed") == 1
    assert "psnr table 2" in text and "not a heading" not in text and text.count("## Quality") == 1
    assert text.index("## Speed") < text.index("## Quality")
    lines = text.splitlines()
    header = lines[lines.index("## Speed") + 2]
    assert header.startswith("Command: `python a.py --fast` | commit ") and "| machine: " in header
    assert "torch " in header


def test_bench_speed_tiled_photo_path(tmp_path, monkeypatch):
    bench = load_script("bench_speed")
    monkeypatch.setattr(bench, "PHOTO", (80, 112))  # a tiny "photo": 2 x 2 tiles of 64 with overlap 16
    threads = torch.get_num_threads()
    try:
        bench.main(["--pairs", "cpu", "--sizes", "32", "--reps", "1", "--reps-slow", "1", "--skip-pe",
                    "--tile", "64", "--tile-overlap", "16", "--devices", "cpu", "--threads", "1",
                    "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    rows = json.loads((tmp_path / "speed.json").read_text())["rows"]
    assert [(r["size"], r["variant"]) for r in rows] == [("32x32", "B"), ("32x32", "B-E"), ("112x80 tiled 64", "B-E")]
    assert all(r["teacher_ms"] > 0 and r["student_ms"] > 0 and r["reps"] == 1 for r in rows)


def test_provenance_command_is_quoted_for_a_shell():
    command = command_line("/x/scripts/benchmark.py", ["--only", "AT-BSN(D)", "--force", "noisy input"])
    assert command == "python scripts/benchmark.py --only 'AT-BSN(D)' --force 'noisy input'"


def test_bench_speed_times_the_teachers_batching_schedules(tmp_path):
    """--schedules: the engine's batched pipeline against one forward per branch and R3 copy (looped) and the
    other schedules, each a row timed against the student."""
    bench = load_script("bench_speed")
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--pairs", "cpu", "--sizes", "32", "--reps", "1", "--skip-photo", "--skip-pe",
                           "--devices", "cpu", "--threads", "1", "--schedules", *bench.SCHEDULES,
                           "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    rows = json.loads((tmp_path / "speed.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["B", "B-E", "B one-worker", "B-E one-worker", "B one-forward",
                                            "B-E one-forward", "B looped", "B-E looped"]
    assert all(r["teacher_ms"] > 0 and r["ratio"] > 0 for r in rows)


def test_sections_are_grouped_by_kind_and_benchmarks_by_preset(tmp_path):
    doc = tmp_path / "results.md"
    for title in ("Benchmark: distill_cc15", "Speed: student", "Benchmark: classical_cc15", "Noise level: cc15",
                  "Benchmark: distill_polyu30", "Training step profile: demo.yml", "Benchmark: cc15_cpu",
                  "Benchmark: classical_sidd1", "Benchmark: polyu30_cpu"):
        update_section(title, f"table of {title}", "python x.py", doc)
    titles = [line[3:] for line in doc.read_text().splitlines() if line.startswith("## ")]
    assert titles == ["Benchmark: distill_cc15", "Benchmark: distill_polyu30", "Benchmark: classical_cc15",
                      "Benchmark: classical_sidd1", "Benchmark: cc15_cpu", "Benchmark: polyu30_cpu",
                      "Noise level: cc15", "Speed: student", "Training step profile: demo.yml"]
    assert "table of Benchmark: classical_sidd1" in doc.read_text()


def test_the_results_index_lists_every_section_and_no_other():
    """docs/results.md: its index table names each section once, and every name in it is a section."""
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "results.md").read_text()
    sections = re.findall(r"^## (.+)$", text, re.M)
    head = text[: text.index("\n## ")]
    listed = re.findall(r"^\| ([^|]+?) \| `", head, re.M)
    assert sorted(listed) == sorted(sections) and len(set(listed)) == len(listed)


def test_provenance_counts_code_changes_but_not_the_results_the_scripts_write(tmp_path):
    import subprocess

    from amcfd.provenance import git_commit

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "results.md").write_text("a\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    clean = git_commit(tmp_path)
    (tmp_path / "docs" / "results.md").write_text("b\n")
    (tmp_path / "docs" / "plot.png").write_bytes(b"png")
    assert git_commit(tmp_path) == clean and "uncommitted" not in clean
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == f"{clean} + uncommitted changes"
