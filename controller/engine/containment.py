"""Paths named by specs and by the registry stay inside the repository's work tree, and out of ``.git``.

A spec names files (``dataset.source: file:<path>``), a repository holds spec files, and the registry
writes under ``registry/<namespace>/<model>/``. Every one of those paths comes from people who commit
to the repository, so each goes through :func:`inside_work_tree` before it is read or written:

- a path that is absolute, or has a component named ``.git`` (in any letter case), is refused;
- a symlink is followed only when its target stays inside the work tree and out of ``.git``
  (``data/leak.csv -> ../.git/config`` is refused, and so is ``data -> /etc``);
- where the controller writes (``symlinks=False``), no component may be a symlink at all: the
  registry is written only into real folders of the repository, checked before anything is written.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

GIT_DIR = ".git"


class OutsideWorkTree(ValueError):
    """A path that leaves the work tree or leads into ``.git``: ``path`` (as named, or the symlink on
    the way) and ``reason``; the message names the path, never a file's content."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path} {reason}")
        self.path = path
        self.reason = reason


def is_git_name(part: str) -> bool:
    """``.git`` in any letter case (case-insensitive file systems open ``.GIT/config`` as ``.git/config``)."""
    return part.casefold() == GIT_DIR


def work_tree_of(path: str | os.PathLike[str]) -> Path | None:
    """The nearest folder at or above ``path`` that holds a ``.git`` entry (the repository's work tree),
    found without following symlinks in ``path``; None when ``path`` is in no repository."""
    here = Path(os.path.abspath(path))
    if not here.is_dir() or here.is_symlink():
        here = here.parent
    for folder in (here, *here.parents):
        if os.path.lexists(folder / GIT_DIR):
            return folder
    return None


def inside_work_tree(root: str | os.PathLike[str], relative: str | os.PathLike[str], *, symlinks: bool = True) -> Path:
    """The real path of ``relative`` under the work tree ``root``, or :class:`OutsideWorkTree`.

    With ``symlinks`` (reading), a symlink on the way is followed when its target is inside ``root``
    and not in ``.git``; without (writing), any existing component that is a symlink is refused. The
    path need not exist: a missing part is where a new file or folder will go.
    """
    base = Path(os.path.realpath(root))
    shown = PurePosixPath(os.fspath(relative)).as_posix()
    named = PurePosixPath(shown)
    if named.is_absolute() or os.path.isabs(os.fspath(relative)):
        raise OutsideWorkTree(shown, "is an absolute path: name a path inside the repository")
    if any(is_git_name(part) for part in named.parts):
        raise OutsideWorkTree(shown, f"is inside {GIT_DIR}: Git's own files are never read or written")
    if not symlinks:
        if ".." in named.parts:
            raise OutsideWorkTree(shown, "climbs out with '..': name a path inside the repository")
        here = base
        for i, part in enumerate(named.parts):
            here = here / part
            if os.path.islink(here):
                link = PurePosixPath(*named.parts[: i + 1]).as_posix()
                raise OutsideWorkTree(link, "is a symlink: the controller writes only into real folders")
        return here
    resolved = Path(os.path.realpath(base / named))
    if not resolved.is_relative_to(base):
        raise OutsideWorkTree(shown, "leads outside the repository")
    if any(is_git_name(part) for part in resolved.relative_to(base).parts):
        raise OutsideWorkTree(shown, f"leads into {GIT_DIR} (through a symlink): Git's own files are never read")
    return resolved


def check_found_file(file: str | os.PathLike[str]) -> Path:
    """A file found on disk (a spec file named or searched for): its real path, when it stays inside
    its repository's work tree (its own folder when it is in no repository) and out of ``.git``."""
    absolute = os.path.abspath(file)
    root = work_tree_of(absolute) or Path(absolute).parent
    return inside_work_tree(root, os.path.relpath(absolute, root))
