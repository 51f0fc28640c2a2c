"""Every script of scripts/: a distinct job, --help works, and bad command-line input is one error line (argparse's
usage may come before it) with exit code 2, before any work starts."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import load_script

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
MISSING = "/no/such/path"

# script: argument lists that must each end in one error line and exit code 2
BAD_INPUT = {
    "benchmark": [[], ["-opt", MISSING], ["-opt", "options/bench/bilateral.yml", "--set", "name"]],
    "bench_speed": [["--pairs", "nope"], ["--reps", "0"], ["--sizes", "64", "0"], ["--tile-overlap", "-1"]],
    "bench_authors_speed": [[], ["--authors-code", MISSING], ["--authors-code", str(REPO), "--size", "x"]],
    "bench_tiled_memory": [["--photo", "4000by3000"], ["--photo", "0x3000"], ["--tile", "0"],
                           ["--tile", "64", "--overlap", "64"]],
    "profile_step": [[], ["-opt", "options/train/demo.yml", "--steps", "0"], ["-opt", MISSING]],
    "import_checkpoint": [["--from", "nope", "a.pth", "b.pth"], ["--from", "nbsn", "a.pth"],
                          ["--from", "nbsn", MISSING, "out.pth"]],
    "prep_sidd": [["--input", MISSING], ["--input", MISSING, "--output", MISSING, "--size", "0"],
                  ["--input", MISSING, "--output", MISSING]],
    "submission": [["-opt", MISSING], ["--format", "nope"], ["--format", "sidd"], ["--format", "dnd", "-opt", MISSING],
                   ["--format", "sidd", "--root", MISSING]],
    "noise_report": [[], [MISSING], [str(REPO / "docs"), "--max-images", "0"],
                     [str(REPO / "docs"), "--write-docs", "x"]],
    "make_readme_figure": [["--image", "nope"], ["--crop", "0", "0", "0"], ["--checkpoint", MISSING]],
    "bench_denoise_memory": [[], [MISSING], ["--make", MISSING, "--size", "4000by3000"], ["--make", MISSING,
                                                                                        "--count", "0"]],
    "train_parity": [[], ["--authors-code", MISSING, "--method", "amsnet"], ["--method", "nope"],
                     ["--authors-code", str(REPO), "--method", "apbsn", "--steps", "0"]],
    "bench_denoise_quality": [[], [MISSING], [str(REPO), "--budget-minutes", "x"]],
}


def run(name: str, argv: list, capsys) -> tuple[int, str, str]:
    try:
        code = load_script(name).main(argv)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_scripts_are_few_and_each_has_its_argument_tests():
    names = sorted(p.stem for p in SCRIPTS.glob("*.py"))
    assert len(names) <= 13 and names == sorted(BAD_INPUT)


@pytest.mark.parametrize("name", sorted(BAD_INPUT))
def test_help(name, capsys):
    code, out, _ = run(name, ["--help"], capsys)
    assert code == 0 and "usage:" in out


@pytest.mark.parametrize("name, argv", [(n, a) for n, cases in BAD_INPUT.items() for a in cases],
                         ids=lambda v: v if isinstance(v, str) else " ".join(v) or "no arguments")
def test_bad_input_is_one_error_line_and_exit_code_2(name, argv, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    code, _, err = run(name, argv, capsys)
    errors = [line for line in err.splitlines() if "error" in line]
    assert code == 2 and len(errors) == 1 and err.rstrip().endswith(errors[0]) and "Traceback" not in err, err


def test_gpu_checks_exits_2_without_cuda_and_1_when_a_check_fails(tmp_path):
    import os
    import subprocess

    script = str(SCRIPTS / "gpu_checks.sh")
    no_cuda = subprocess.run(["bash", script, str(tmp_path), str(tmp_path / "logs")], capture_output=True,
                             text=True, cwd=REPO, timeout=120, env={**os.environ, "PYTHON": "false"})
    assert no_cuda.returncode == 2
    fake = tmp_path / "python"                      # "CUDA is there", then every check fails
    fake.write_text('#!/bin/bash\ncase "$*" in *cuda.is_available*) exit 0;; *) exit 3;; esac\n')
    fake.chmod(0o755)
    failing = subprocess.run(["bash", script, str(tmp_path), str(tmp_path / "logs")], capture_output=True,
                             text=True, cwd=REPO, timeout=120, env={**os.environ, "PYTHON": str(fake)})
    assert failing.returncode == 1 and failing.stdout.count("FAILED") == 7, failing.stdout + failing.stderr
    assert "=== " in failing.stdout and "done" in failing.stdout              # every check ran
