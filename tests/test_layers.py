"""The layers: the core (engine, options, data, methods, noise) never imports the reporting package."""
from __future__ import annotations

import subprocess
import sys


def test_the_core_does_not_import_the_reporting_package():
    code = ("import sys, amcfd.engine.trainer, amcfd.engine.inference, amcfd.engine.teacher, amcfd.options, "
            "amcfd.data, amcfd.methods, amcfd.noise.auto, amcfd.denoise, amcfd.cli; "
            "print(sorted(m for m in sys.modules if m.startswith('amcfd.analysis')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_no_core_module_names_the_reporting_package():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "amcfd"
    core = [p for d in ("engine", "data", "methods", "noise") for p in (root / d).rglob("*.py")] + [root / "options.py"]
    offenders = [str(p.relative_to(root)) for p in core if "amcfd.analysis" in p.read_text()]
    assert offenders == []


def test_the_engine_never_names_the_hub():
    """Released models' names are resolved into local files at the boundary (options, command lines, benchmark
    rows): the engine reads local files only, and the hub (which imports the engine) stays above it."""
    from pathlib import Path

    engine = Path(__file__).resolve().parents[1] / "amcfd" / "engine"
    offenders = [p.name for p in engine.rglob("*.py") if "amcfd.hub" in p.read_text()]
    assert offenders == []


def test_the_engine_never_names_the_commands_above_it():
    """The pipeline of stages is in the engine; the stages it runs are declared above it (amcfd/stages.py for
    amcfd-denoise, the benchmark's presets), never the other way round."""
    from pathlib import Path

    engine = Path(__file__).resolve().parents[1] / "amcfd" / "engine"
    above = ("amcfd.stages", "amcfd.denoise", "amcfd.cli", "amcfd.analysis")
    offenders = [p.name for p in engine.rglob("*.py") if any(name in p.read_text() for name in above)]
    assert offenders == []
