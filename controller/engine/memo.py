"""A bounded memo for the engine's pure functions of immutable input (a file's content, a spec)."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class Memo(Generic[T]):
    """Values computed once per key. Full at ``limit`` keys, it starts over rather than grow: the keys
    of a long-running operator are its models' files and specs, which change. A computation that
    raises stores nothing (it is made, and fails, again). Values are shared: callers never change them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._values: dict[Hashable, T] = {}

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        if key in self._values:
            return self._values[key]
        if len(self._values) >= self.limit:
            self._values.clear()
        value = self._values[key] = compute()
        return value
