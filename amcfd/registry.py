"""One small registry: option entries ``{type: Name, **kwargs}`` build registered classes.

Registration is explicit: each registry names the modules that fill it. They are imported
lazily, the first time a name is looked up, one by one; a module that fails to import is
recorded and reported in "unknown name" errors, but never breaks ``import amcfd`` or the
other entries of the registry.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any, Callable, Iterable


class ConfigError(ValueError):
    """A bad option: the message is one line naming the key, file or value."""


class InputNotFound(ConfigError, FileNotFoundError):
    """A file or folder the user named does not exist (a user error: one line, exit code 2). A
    FileNotFoundError that is not one of these is an internal error and keeps its traceback."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest of choices, or ''."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def compatible(default: Any, value: Any) -> bool:
    """Is ``value`` of the kind the default suggests? (int for float is fine; None is always fine)."""
    if default is None or value is None or default is inspect.Parameter.empty:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    if isinstance(default, str):
        return isinstance(value, str)
    return True


def check_kwargs(fn: Callable, kwargs: dict, where: str, required: bool = False) -> None:
    """Fail with a one-line ConfigError if kwargs are unknown to fn's signature, or of another
    type than the parameter's default; with ``required``, also if a parameter without a default
    is missing or null."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return
    if required:
        for name, p in params.items():
            if (p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty
                    and kwargs.get(name) is None):
                raise ConfigError(f"option '{where}.{name}' is required")
    accepted = {n: p for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    open_ended = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for key, value in kwargs.items():
        if key not in accepted:
            if open_ended:
                continue
            raise ConfigError(f"unknown option '{where}.{key}'{did_you_mean(key, accepted)}")
        default = accepted[key].default
        if not compatible(default, value):
            raise ConfigError(f"option '{where}.{key}' must be {type_name(default)}, got {type_name(value)} "
                              f"({value!r})")


class Registry:
    """Maps names to classes or functions; ``build(cfg)`` never mutates ``cfg``."""

    def __init__(self, kind: str, modules: Iterable[str] = ()):
        self.kind = kind
        self._modules = list(modules)
        self._entries: dict[str, Callable] = {}
        self._broken: dict[str, str] = {}
        self._imported = False

    def register(self, name: str | None = None) -> Callable:
        """Decorator: ``@ARCHS.register()`` registers under the class name."""

        def deco(obj: Callable) -> Callable:
            key = name or obj.__name__
            if key in self._entries and self._entries[key] is not obj:
                raise KeyError(f"{self.kind} '{key}' is already registered")
            self._entries[key] = obj
            return obj

        return deco

    def _import_modules(self) -> None:
        if self._imported:
            return
        self._imported = True
        for mod in self._modules:
            try:
                importlib.import_module(mod)
            except Exception as exc:  # one broken optional module must not break the rest
                self._broken[mod] = f"{type(exc).__name__}: {exc}"

    def names(self) -> list[str]:
        self._import_modules()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._import_modules()
        return name in self._entries

    def get(self, name: str, where: str = "type") -> Callable:
        self._import_modules()
        if name in self._entries:
            return self._entries[name]
        msg = (f"unknown {self.kind} '{where}: {name}'{did_you_mean(name, self._entries)}; "
               f"known: {', '.join(sorted(self._entries)) or 'none'}")
        if self._broken:
            msg += "; failed to import: " + "; ".join(f"{m} ({e})" for m, e in self._broken.items())
        raise ConfigError(msg)

    def build(self, cfg: dict, *args: Any, where: str | None = None, **extra: Any) -> Any:
        """Build ``cfg['type']`` with the remaining keys (plus ``extra``) as keyword arguments.

        ``where`` is the option path used in error messages, e.g. ``network``.
        """
        where = where or self.kind
        if not isinstance(cfg, dict) or "type" not in cfg:
            raise ConfigError(f"option '{where}' needs a 'type' key naming a registered {self.kind}")
        kwargs = {k: v for k, v in cfg.items() if k != "type"}
        obj = self.get(cfg["type"], where=f"{where}.type")
        check_kwargs(obj, kwargs, where)
        return obj(*args, **kwargs, **extra)


# The registries and the modules that fill them (explicit, imported on first use).
ARCHS = Registry("architecture", modules=[
    "amcfd.archs.restormer", "amcfd.archs.nafnet", "amcfd.archs.dncnn",
    "amcfd.archs.unet", "amcfd.archs.deamnet", "amcfd.archs.dbsn", "amcfd.archs.ambsn",
    "amcfd.archs.atbsn", "amcfd.archs.nbsn", "amcfd.archs.posterior",
])
METHODS = Registry("method", modules=[
    "amcfd.methods.base", "amcfd.methods.amsnet", "amcfd.methods.distill_coarse", "amcfd.methods.distill_fine",
    "amcfd.methods.apbsn", "amcfd.methods.atbsn", "amcfd.methods.aprrd", "amcfd.methods.classical",
])
LOSSES = Registry("loss", modules=["amcfd.losses.basic"])
DATASETS = Registry("dataset", modules=[
    "amcfd.data.synthetic", "amcfd.data.folders", "amcfd.data.sidd", "amcfd.data.dnd",
])
METRICS = Registry("metric", modules=["amcfd.metrics"])
