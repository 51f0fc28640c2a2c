"""What the measuring scripts write into the repository's documents: sections of ``docs/results.md`` (the README
holds no measured numbers).

    update_section("Speed: teacher vs student", table_markdown, "python scripts/bench_speed.py ...")

replaces the section ``## Speed: teacher vs student`` (everything up to the next ``## `` heading) or
appends it. Every section starts with one provenance line: the command, the git commit (with
"uncommitted changes" when the work tree differs from it) and the machine (CPU model, cores and
threads, torch version and threads, GPU if any).
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from amcfd.provenance import git_commit

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DOC = "docs/results.md"
_DOC_TITLE = "# Results\n\nMeasured numbers, one section per command; each section names the command that wrote it.\n"


def cpu_description() -> str:
    """'<model>, <physical cores> cores / <logical> threads' from /proc/cpuinfo, else platform."""
    model, cores = None, set()
    try:
        physical = None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name" and model is None:
                model = value
            elif key == "physical id":
                physical = value
            elif key == "core id":
                cores.add((physical, value))
    except OSError:
        pass
    model = model or platform.processor() or platform.machine() or "unknown CPU"
    threads = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else threads
    text = f"{model}, {len(cores) or '?'} cores / {threads} threads"
    return text + (f" ({usable} usable)" if usable != threads else "")


def machine_description() -> str:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{cpu_description()}; torch {torch.__version__} ({torch.get_num_threads()} threads); {gpu}"


def provenance_line(command: str, repo: Path = REPO) -> str:
    return f"Command: `{command}` | commit {git_commit(repo)} | machine: {machine_description()}"


def _is_heading(line: str) -> bool:
    return line.startswith("## ")


def command_line(script: str | Path, argv=None) -> str:
    """How a script was run, for the provenance line: ``python scripts/NAME.py ARGS``, quoted for a shell."""
    import shlex
    import sys

    return shlex.join(["python", f"scripts/{Path(script).name}", *(sys.argv[1:] if argv is None else argv)])


def update_section(title: str, body: str, command: str, path: str | Path = DEFAULT_DOC,
                   repo: Path = REPO) -> Path:
    """Replace the section ``## title`` of ``path`` (relative paths: from the repository root) with the
    provenance line and ``body``, or append it; creates the file when missing. Returns the path.
    Headings inside fenced code blocks (```) are not section boundaries."""
    path = Path(path)
    if not path.is_absolute():
        path = repo / path
    section = [f"## {title}", "", provenance_line(command, repo), "", *body.strip("\n").splitlines(), ""]
    lines = path.read_text().splitlines() if path.exists() else _DOC_TITLE.splitlines()

    start = end = None
    fenced = False
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced or not _is_heading(line):
            continue
        if start is None and line.rstrip() == f"## {title}":
            start = i
        elif start is not None:
            end = i
            break
    if start is None:
        while lines and not lines[-1].strip():
            lines.pop()
        lines += [""] + section
    else:
        lines[start:len(lines) if end is None else end] = section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(group_sections(lines)).rstrip("\n") + "\n")
    return path


# the order of the document
SECTION_KINDS = ("Benchmark", "Noise level", "Speed", "Parity", "Memory", "Training step profile")


def _sections(lines: list[str]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """(the lines before the first section, [(title, the section's lines)]); fenced '## ' lines are no heading."""
    head, sections, fenced = [], [], False
    for line in lines:
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if not fenced and _is_heading(line):
            sections.append((line[3:].strip(), [line]))
        elif sections:
            sections[-1][1].append(line)
        else:
            head.append(line)
    return head, sections


def group_sections(lines: list[str]) -> list[str]:
    """The document with its sections grouped: benchmarks (by preset: the name without its set), then noise
    levels, speed and profiles (``SECTION_KINDS``), then any other; in the order they first appear otherwise."""
    head, sections = _sections(lines)

    def group(title: str) -> tuple[int, str]:
        kind, _, name = title.partition(": ")
        rank = SECTION_KINDS.index(kind) if kind in SECTION_KINDS else len(SECTION_KINDS)
        preset = ("real" if name.endswith("_cpu") else name.rsplit("_", 1)[0]) if kind == "Benchmark" else ""
        return rank, preset

    first: dict[tuple, int] = {}
    for i, (title, _) in enumerate(sections):
        first.setdefault(group(title), i)
    order = sorted(range(len(sections)), key=lambda i: (group(sections[i][0])[0], first[group(sections[i][0])], i))
    out = list(head)
    for i in order:
        body = list(sections[i][1])
        while body and not body[-1].strip():
            body.pop()
        out += body + [""]
    return out


def benchmark_section(name: str, header: str, table: str, plot: Path, command: str, path: str | Path = DEFAULT_DOC,
                      repo: Path = REPO) -> Path:
    """The section ``## Benchmark: name`` of a benchmark run (``report.write_reports``: its header without the
    provenance line, the plot, copied to docs/images/benchmark_<name>.png, and the tables)."""
    import shutil

    figure = repo / "docs" / "images" / f"benchmark_{name}.png"
    summary = header.split("\n", 2)[-1].strip()            # without the provenance line
    body = f"{summary}\n\n![PSNR against ms per image](images/{figure.name})\n\n{table}"
    written = update_section(f"Benchmark: {name}", body, command, path, repo)
    figure.parent.mkdir(parents=True, exist_ok=True)     # after the section: its provenance sees the tree as is
    shutil.copyfile(plot, figure)
    return written
