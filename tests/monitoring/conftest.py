"""The monitoring tests run in real Git repositories (the registry tests' fixtures)."""

from tests.registry.conftest import isolated_git, repos

__all__ = ["isolated_git", "repos"]
