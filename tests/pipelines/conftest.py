"""Pipeline runs use the registry tests' real repositories (a bare remote and clones) and their
isolated Git configuration."""

from tests.registry.conftest import isolated_git, repos

__all__ = ["isolated_git", "repos"]
