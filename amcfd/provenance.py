"""Where a result comes from: the git commit of the code that produced it, and the digests that identify files
and settings (one helper for each, used by the stage identities, the teacher cache, the benchmark and the hub)."""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


GENERATED = "docs"     # what the measuring scripts write (results.md, its plots): not the code that measured


def git_commit(repo: Path = PACKAGE) -> str:
    """``abc1234``, ``abc1234 + uncommitted changes``, or ``unknown`` (no git, or not a repository: an
    installed package). Changes under ``GENERATED`` (the results the scripts write) do not count."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()
    try:
        commit = git("rev-parse", "--short", "HEAD")
        top = Path(git("rev-parse", "--show-toplevel"))
        dirty = bool(git("status", "--porcelain", "--", str(top), f":(exclude){top / GENERATED}"))  # untracked count
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit} + uncommitted changes" if dirty else commit


def file_sha256(path: str | Path, block: int = 1 << 22) -> str:
    """sha256 of a file's bytes, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def digest(obj) -> str:
    """sha256 of a JSON-able object (keys sorted, anything else as text), hex."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
