"""Where a result comes from: the git commit of the code that produced it."""
from __future__ import annotations

import subprocess
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def git_commit(repo: Path = PACKAGE) -> str:
    """``abc1234``, ``abc1234 + uncommitted changes``, or ``unknown`` (no git, or not a repository: an
    installed package)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()
    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = bool(git("status", "--porcelain"))  # untracked files count: results may come from them
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit} + uncommitted changes" if dirty else commit
