"""Released trained weights by name: the registry (``registry.yml``), the download cache, the checksum check and
the import into our checkpoint format.

A registered name works wherever a checkpoint path does (``path.pretrain_network``, ``method.teacher.checkpoint``,
``amcfd-denoise --pretrained``, a benchmark's ``checkpoint:``): ``resolve_checkpoint`` turns it into the path
of the converted file, fetching it once. The file that repository ``owner/repo`` holds at ``path`` is read from
``https://github.com/owner/repo/raw/<commit>/<path>``, or from ``$AMCFD_WEIGHTS_MIRROR/owner/repo/path`` (a
folder or a URL) when that is set. It is checked against the registered size and sha256 (a mismatch deletes the
download), imported with the registered importer and input range (``amcfd.hub.importers``), and kept as
``<cache>/weights/<name>-<sha256[:12]>.pth``; the cache is ``$AMCFD_CACHE``, else ``$XDG_CACHE_HOME/amcfd``,
else ``~/.cache/amcfd``. Later runs read the converted file and need no network.
"""
from __future__ import annotations

import errno
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path

import yaml

from amcfd.provenance import file_sha256
from amcfd.registry import ConfigError

REGISTRY = Path(__file__).with_name("registry.yml")
SOURCE_URL = "https://github.com/{source}/raw/{commit}/{path}"
TIMEOUT_S = 30
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)     # writing the cache failed, not the download


@dataclass(frozen=True)
class Release:
    """One released checkpoint of ``registry.yml``."""
    name: str
    source: str
    commit: str
    path: str
    sha256: str
    size: int
    importer: str
    input_range: int
    model: str
    licence: str
    reported: str

    @property
    def url(self) -> str:
        """Where the file is read from: the mirror when $AMCFD_WEIGHTS_MIRROR is set, else its repository."""
        mirror = os.environ.get("AMCFD_WEIGHTS_MIRROR")
        if mirror:
            return f"{mirror.rstrip('/')}/{self.source}/{self.path}"
        return SOURCE_URL.format(source=self.source, commit=self.commit, path=self.path)

    @property
    def cached(self) -> Path:
        """The converted checkpoint in the cache (present or not)."""
        return cache_dir() / "weights" / f"{self.name}-{self.sha256[:12]}.pth"


def load_registry(path: Path) -> dict[str, Release]:
    """The releases of a registry file, checked: every field present, a known importer and input range."""
    from amcfd.hub.importers import INPUT_RANGES

    entries = yaml.safe_load(Path(path).read_text()) or {}
    names = [f.name for f in fields(Release) if f.name != "name"]
    out = {}
    for name, entry in entries.items():
        missing = [k for k in names if k not in (entry or {})]
        if missing or set(entry) - set(names):
            raise ConfigError(f"{path}: release '{name}' needs exactly the keys {', '.join(names)}")
        if entry["input_range"] not in INPUT_RANGES.get(entry["importer"], ()):
            raise ConfigError(f"{path}: release '{name}': importer {entry['importer']!r} with input range "
                              f"{entry['input_range']!r} is not a known layout")
        out[name] = Release(name=name, **entry)
    return out


@lru_cache(maxsize=1)
def releases() -> dict[str, Release]:
    """The packaged registry, by name."""
    return load_registry(REGISTRY)


def cache_dir() -> Path:
    if os.environ.get("AMCFD_CACHE"):
        return Path(os.environ["AMCFD_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "amcfd"


def release(name: str) -> Release:
    known = releases()
    if name not in known:
        raise ConfigError(f"unknown released weights {name!r}; known: {', '.join(known)} (amcfd-weights list)")
    return known[name]


def is_release_name(value) -> bool:
    """A registered name that is not also an existing path (a path always wins)."""
    return isinstance(value, str) and value in releases() and not Path(value).exists()


def _download(rel: Release, dst: Path) -> None:
    """Copy the release's file (mirror folder or URL) to ``dst``; a failure is one line naming the URL and the
    command that imports a file downloaded by hand."""
    url = rel.url
    try:
        if "://" in url:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(dst, "wb") as f:
                shutil.copyfileobj(response, f, 1 << 20)
        else:
            shutil.copyfile(url, dst)
    except (OSError, urllib.error.URLError, ValueError) as exc:
        dst.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:      # ours, not the source's: say so
            raise OSError(exc.errno, f"cannot write the weights {rel.name!r} to {dst.parent} ({exc.strerror}); "
                                     "free space there or set AMCFD_CACHE to another folder") from None
        reason = exc if isinstance(exc, urllib.error.HTTPError) else (
            getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc)
        raise ConfigError(f"cannot download the weights {rel.name!r} from {url} ({reason}); download that "
                          f"file by hand and run: amcfd-weights add {rel.name} FILE") from None


def _check(rel: Release, path: Path, where: str) -> None:
    size = path.stat().st_size
    digest = file_sha256(path) if size == rel.size else None
    if digest != rel.sha256:
        got = f"size {size}" if digest is None else f"sha256 {digest[:16]}..."
        raise ConfigError(f"weights {rel.name!r}: {where} does not match the registry ({got}, expected size "
                          f"{rel.size}, sha256 {rel.sha256[:16]}...)")


def _import(rel: Release, raw: Path) -> Path:
    from amcfd.hub.importers import import_checkpoint

    import_checkpoint(raw, rel.cached, kind=rel.importer, input_range=rel.input_range)
    return rel.cached


def fetch(name: str) -> Path:
    """The converted checkpoint of release ``name``: from the cache, else downloaded, checked and imported."""
    rel = release(name)
    if rel.cached.is_file():
        return rel.cached
    rel.cached.parent.mkdir(parents=True, exist_ok=True)
    raw = rel.cached.with_name(f".{rel.name}.download{os.getpid()}")
    try:
        _download(rel, raw)
        try:
            _check(rel, raw, f"the file read from {rel.url}")
        except ConfigError as exc:
            raise ConfigError(f"{exc}; the download was deleted") from None
        return _import(rel, raw)
    finally:
        raw.unlink(missing_ok=True)


def add(name: str, file: str | Path) -> Path:
    """Check a file downloaded by hand against release ``name`` and import it into the cache (the file is
    left as it is, whether it matches or not)."""
    rel, file = release(name), Path(file)
    if not file.is_file():
        raise ConfigError(f"file does not exist: {file}")
    _check(rel, file, str(file))
    rel.cached.parent.mkdir(parents=True, exist_ok=True)
    return _import(rel, file)


def resolve_checkpoint(value):
    """``value`` unchanged, unless it is a registered name that is not a path: then the converted file's path."""
    return str(fetch(value)) if is_release_name(value) else value
