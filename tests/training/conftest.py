"""Fixtures of the training tests: pass-through spies on the engine's own classes, a tiny CSV repo."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.training.specs import write_iris_csv


class Calls(list[tuple[Any, ...]]):
    """The arguments of every call a spy saw (``self`` first for methods)."""


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any, str], Calls]:
    """``spy(Class, "method")``: record each call, then call the real method."""

    def install(owner: Any, name: str) -> Calls:
        calls = Calls()
        real = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls.append(args)
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)
        return calls

    return install


@pytest.fixture
def tiny_repo(tmp_path: Path) -> Path:
    """A repository folder with ``data/iris01.csv``: 8 rows of each of two iris species (quick on fake backends)."""
    repo = tmp_path / "repo"
    write_iris_csv(repo / "data" / "iris01.csv", per_class=8)
    return repo
