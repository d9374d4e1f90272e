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

    def register(self, name: str, target: str) -> None:
        if name in self._targets:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._targets[name] = target

    def names(self) -> list[str]:
        return sorted(self._targets)

    def __contains__(self, name: str) -> bool:
        return name in self._targets

    def get(self, name: str) -> T:
        if name not in self._targets:
            raise did_you_mean(name, self._targets, self.what)
        if name not in self._loaded:
            module_name, _, attr = self._targets[name].partition(":")
            self._loaded[name] = getattr(importlib.import_module(module_name), attr)
        return self._loaded[name]
