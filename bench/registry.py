"""A small lazy registry: names map to ``module:attribute`` strings, imported on first use.

Importing ``bench`` never imports torch models or heavy libraries; a method's module is
loaded only when the method is asked for.
"""

from __future__ import annotations

import importlib
from typing import Generic, TypeVar

from bench.errors import did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str):
        self.what = what
        self._targets: dict[str, str] = {}
        self._loaded: dict[str, T] = {}
        self._aliases: dict[str, str] = {}  # a short name users type -> the registered name

    def register(self, name: str, target: str) -> None:
        if name in self._targets:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._targets[name] = target

    def alias(self, name: str, target_name: str) -> None:
        """``name`` means the registered ``target_name`` (e.g. ``letter`` -> ``letter-tiger``)."""
        if name in self._targets or name in self._aliases:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        if target_name not in self._targets:
            raise ValueError(f"alias {name!r}: no {self.what} {target_name!r} is registered")
        self._aliases[name] = target_name

    def aliases(self) -> dict[str, str]:
        return dict(sorted(self._aliases.items()))

    def canonical(self, name: str) -> str:
        """The registered name behind ``name`` (itself, or what the alias points at)."""
        name = self._aliases.get(name, name)
        if name not in self._targets:
            raise did_you_mean(name, [*self._targets, *self._aliases], self.what)
        return name

    def names(self) -> list[str]:
        return sorted(self._targets)

    def __contains__(self, name: str) -> bool:
        return name in self._targets or name in self._aliases

    def get(self, name: str) -> T:
        name = self.canonical(name)
        if name not in self._loaded:
            module_name, _, attr = self._targets[name].partition(":")
            self._loaded[name] = getattr(importlib.import_module(module_name), attr)
        return self._loaded[name]
