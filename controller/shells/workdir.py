"""The work folders the shells keep clones in (the operator's, ``qmlops serve``'s): in the user's own
cache folder, private to the user (mode 0700, owned by this user), one per repository and branch."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def repository_key(repo: str, branch: str | None) -> str:
    return hashlib.sha256(f"{repo}\n{branch or ''}".encode()).hexdigest()[:16]


def default_workdir(component: str = "operator") -> Path:
    """The operator's (or ``qmlops serve``'s) work folder when none is given: the user's own cache folder
    (``$XDG_CACHE_HOME/qmlops/operator``, else ``~/.cache/qmlops/operator``), never a folder shared
    by every user of the machine; ``<tmp>/qmlops-<uid>`` when there is no home."""
    cache = os.environ.get("XDG_CACHE_HOME")
    if cache and Path(cache).is_absolute():
        return Path(cache) / "qmlops" / component
    try:
        home: Path | None = Path.home()
    except (RuntimeError, KeyError):  # no HOME and no passwd entry
        home = None
    if home is not None and home.is_dir() and os.access(home, os.W_OK):
        return home / ".cache" / "qmlops" / component
    fallback = Path(tempfile.gettempdir()) / f"qmlops-{os.getuid()}"
    return fallback if component == "operator" else fallback / component


class WorkdirError(Exception):
    """The work folder cannot be used; the message names it."""


def private_folder(path: Path) -> Path:
    """``path`` made (with its parents) and kept to its owner: mode 0700, owned by this user.
    A folder someone else owns is refused, not used: their clones could push anywhere."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.lstat()
    except OSError as err:
        raise WorkdirError(f"work folder {path}: {err.strerror or err}") from None
    if path.is_symlink() or not path.is_dir():
        raise WorkdirError(f"work folder {path}: not a folder")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise WorkdirError(f"work folder {path} belongs to another user (uid {info.st_uid}): give --workdir")
    if info.st_mode & 0o077:
        path.chmod(0o700)
    return path
