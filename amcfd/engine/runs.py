"""Reusable runs: what a training stage is (its identity) and one command at a time in a work folder.

A stage's identity is the digest of everything its result depends on: the training images (relative path,
size and content hash of each file), the stage's options with every default filled in (logging, validation
cadence, folders and the time budget left out: a pipeline extends a finished stage to a larger budget), the
package and checkpoint format versions, and the stages it starts from (their identities and budgets). A stage
folder is named after its identity, so the same work is found again and any difference trains anew in a folder of
its own (``what_differs`` says why, in one line). engine/pipeline.py runs stages by their identity.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

from amcfd.provenance import digest, file_sha256
from amcfd.registry import ConfigError

RECORD = "stage.json"


def files_digest(files: list[Path], root: Path) -> dict[str, list]:
    """{relative path: [size, sha256]} of ``files`` (below ``root``, a folder or one of the files)."""
    base = root if root.is_dir() else root.parent
    return {str(p.relative_to(base).as_posix()): [p.stat().st_size, file_sha256(p)] for p in files}


IDENTITY_IGNORES = ("name", "device", "logger", "val", "path")   # options that cannot change a stage's result
BUDGET_KEY = ("train", "max_minutes")      # the time budget: not the identity (engine/pipeline.py extends)


def identity_options(options: dict, constants: dict | None = None) -> dict:
    """The options a stage's result depends on: every default filled in (``options.resolved_options``), the
    sections that cannot change it left out (``IDENTITY_IGNORES``: logging, validation cadence, names, device, folders)
    and the time budget (``BUDGET_KEY``), any module ``constants`` the stage is run with, and the package and
    checkpoint format versions."""
    from amcfd import __version__
    from amcfd.engine.checkpoint import FORMAT
    from amcfd.options import resolved_options

    resolved = {k: v for k, v in resolved_options(options).items() if k not in IDENTITY_IGNORES}
    resolved[BUDGET_KEY[0]] = {k: v for k, v in resolved.get(BUDGET_KEY[0], {}).items() if k != BUDGET_KEY[1]}
    return {**resolved, "constants": dict(constants or {}), "version": {"amcfd": __version__, "format": FORMAT}}


def stage_record(stage: str, images: dict, options: dict, links: dict | None) -> dict:
    """What a stage depends on, with its identity (the digest of the rest); ``options``: ``identity_options``;
    ``links``: what the stages it starts from are (engine/pipeline.py)."""
    record = {"stage": stage, "images": images, "options": options, "from": links}
    return {**record, "identity": digest(record)}


def stage_folder(work: Path, record: dict) -> Path:
    return work / f"{record['stage']}-{record['identity'][:10]}"


def write_record(folder: Path, record: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RECORD).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


def read_record(folder: Path) -> dict | None:
    """A stage folder's record, or None when it has none or it cannot be read."""
    try:
        return json.loads((Path(folder) / RECORD).read_text())
    except (OSError, ValueError):
        return None


def _flatten(d, prefix: str = "") -> dict:
    if not isinstance(d, dict):
        return {prefix[:-1]: d}
    out = {}
    for key, value in d.items():
        out.update(_flatten(value, f"{prefix}{key}."))
    return out


def what_differs(old: dict, new: dict, shown: int = 3) -> str:
    """One phrase naming how two stage records differ: images, options (the first few keys), the stage before."""
    parts = []
    a, b = old.get("images", {}), new.get("images", {})
    changed = sum(1 for k in a.keys() & b.keys() if a[k] != b[k])
    added, removed = len(b.keys() - a.keys()), len(a.keys() - b.keys())
    if changed or added or removed:
        counts = [f"{n} {what}" for n, what in ((changed, "changed"), (added, "added"), (removed, "removed")) if n]
        parts.append("images: " + ", ".join(counts))
    fa, fb = _flatten(old.get("options", {})), _flatten(new.get("options", {}))
    keys = sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))
    if keys:
        listed = "; ".join(f"{k} {fa.get(k, '(unset)')!r} -> {fb.get(k, '(unset)')!r}" for k in keys[:shown])
        parts.append(f"options: {listed}" + (f" and {len(keys) - shown} more" if len(keys) > shown else ""))
    if old.get("from") != new.get("from") and not parts:
        parts.append("the stage it starts from differs")
    return "; ".join(parts) or "nothing recorded differs"


def latest_other_record(work: Path, record: dict) -> tuple[Path, dict] | None:
    """The most recently written record of the same stage under ``work`` with another identity."""
    found = []
    for path in work.glob(f"*/{RECORD}"):
        other = read_record(path.parent)
        if other and other.get("stage") == record["stage"] and other.get("identity") != record["identity"]:
            found.append((path.stat().st_mtime, path.parent, other))
    return max(found, key=lambda f: f[0])[1:] if found else None


class WorkLock:
    """An exclusive lock on a work folder (``fcntl.flock`` on ``.lock``): the kernel drops it when the process
    ends, so a crashed run never leaves it stuck. A second holder is refused with a one-line ConfigError. A run
    that fails before it wrote anything there leaves no folder behind (the folders the lock created are removed
    when they hold nothing but the lock)."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / ".lock"
        self._fd: int | None = None
        self._created: Path | None = None           # the topmost folder the lock created

    def __enter__(self) -> WorkLock:
        try:
            import fcntl
        except ImportError:                       # pragma: no cover - not POSIX: no locking
            return self
        missing = [p for p in (self.path.parent, *self.path.parent.parents) if not p.exists()]
        self._created = missing[-1] if missing else None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):   # e.g. ENOLCK on NFS
                os.close(fd)
                raise ConfigError(f"cannot lock the work folder {self.path.parent} ({exc.strerror}): choose a "
                                  "--work folder on a local file system") from None
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(f"another run (pid {holder}) is using the work folder {self.path.parent}: wait for "
                              "it to finish, or give another --work") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)                    # closing releases the lock
            self._fd = None
            top = self._created
            if exc[0] is not None and top is not None and \
                    [p for p in top.rglob("*") if not p.is_dir()] == [self.path]:     # nothing but the lock
                shutil.rmtree(top, ignore_errors=True)
