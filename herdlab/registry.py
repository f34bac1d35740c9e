"""One registry shape for everything the lab looks up by name: guards, wire faults, and the
engine's actions, conditions, measures, observers and scenario kinds. Each item lives in one file
that registers itself when imported (toxiproxy's `Register("latency", ...)`); a name registered
twice is a programming error and fails loudly; an unknown name fails with the known ones listed.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str) -> None:
        self.what = what
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        if name in self._items:
            raise RuntimeError(f"{self.what} {name!r} registered twice")
        self._items[name] = item
        return item

    def __call__(self, name: str) -> Callable[[T], T]:
        """Decorator form: `@MEASURES("lost")`."""

        def decorate(item: T) -> T:
            return self.register(name, item)

        return decorate

    def get(self, name: str) -> T:
        """The item named `name`; ValueError listing the known names otherwise."""
        try:
            return self._items[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.what} {name!r}; known: {', '.join(sorted(self._items))}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        """The names in the order they were registered."""
        return iter(self._items)

    def names(self) -> list[str]:
        return sorted(self._items)


def load_package(package_name: str) -> None:
    """Imports every module of a package whose modules register themselves, so that adding one
    is adding a file. Modules already imported are not imported again."""
    package = importlib.import_module(package_name)
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package_name}.{info.name}")
