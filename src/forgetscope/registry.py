"""One registry type for everything chosen by name: strategies, predictors, executors.

An entry is either the object itself or a lazy ``"package.module:attribute"`` string, so an optional
backend (Ray) costs nothing until it is asked for, and a broken import fails loudly with its own error
instead of reading as "unknown name". Unknown names get a "did you mean …?" hint.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from forgetscope.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind (``kind`` is used in error messages)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T | str] = {}
        self._extras: dict[str, str] = {}  # name -> pip extra that provides it, for a helpful error

    def register(self, name: str, entry: T | str | None = None, *, extra: str | None = None) -> Any:
        """Register ``entry`` under ``name``; without ``entry``, return a class/function decorator."""
        if entry is None:
            def deco(obj: T) -> T:
                self.register(name, obj, extra=extra)
                return obj
            return deco
        self._entries[name] = entry
        if extra:
            self._extras[name] = extra
        return entry

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def unknown(self, name: Any) -> ConfigError:
        """The error for a name that is not registered, with the closest registered names."""
        close = difflib.get_close_matches(str(name), self.names(), n=2)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        return ConfigError(f"unknown {self.kind} {name!r}; choose from {', '.join(self.names())}{hint}")

    def get(self, name: str) -> T:
        """The registered object; a lazy entry is imported now (an ImportError is reported, not hidden)."""
        if not isinstance(name, str) or name not in self._entries:
            raise self.unknown(name)
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            try:
                obj = getattr(importlib.import_module(module), attr)
            except ImportError as exc:
                extra = self._extras.get(name)
                hint = f"; install it with: pip install 'forgetscope[{extra}]'" if extra else ""
                raise ConfigError(f"{self.kind} {name!r} cannot be imported ({exc}){hint}") from None
            self._entries[name] = obj
            return obj
        return entry

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the registered factory (class or function) with the given arguments; a keyword it does not
        take is a one-line ConfigError naming it and the ones it takes."""
        factory: Callable[..., Any] = self.get(name)  # type: ignore[assignment]
        unknown, known = _unknown_keywords(factory, kwargs)
        if unknown:
            raise ConfigError(f"{self.kind} {name!r}: unknown option(s) {', '.join(sorted(unknown))}; choose from "
                              f"{', '.join(known) or '(none)'}")
        return factory(*args, **kwargs)


def _unknown_keywords(factory: Callable[..., Any], kwargs: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(keywords ``factory`` does not accept, the ones it does); none unknown when it takes ``**kwargs`` or
    its signature cannot be read."""
    import inspect

    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return [], []
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return [], []
    known = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return [k for k in kwargs if k not in known], known
