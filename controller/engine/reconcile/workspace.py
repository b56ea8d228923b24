"""Training workspaces: ``<checkpoint_root>/<namespace>/<name>/<training key>/``, one per training.

A training's checkpoint and, once it finishes, its artifact are kept there (never committed) until its
version is in Git and pushed: a crash after training never trains again. Each training has its own
folder, so several trainings of one model (the model's own, a pipeline's cells) coexist; a training
in progress holds its folder's lock, and nothing sweeps a locked folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from controller.engine.reconcile.state import Due
from controller.engine.registry.yamlio import write_atomic

KEY = re.compile(r"^[0-9a-f]{8,64}$")  # a training key is a digest prefix: a safe folder name
MODEL_OWNER = "model"  # trainings a QuantumModel's own spec made due (a pipeline's cells say "pipeline")
_LEGACY = ("checkpoint", "artifact.json", "training.json")  # the one-folder-per-model layout before keys


class Workspace:
    """``<checkpoint_root>/<namespace>/<name>/<key>/``: one training's checkpoint and artifact."""

    def __init__(self, root: Path, namespace: str, name: str, key: str) -> None:
        if not KEY.fullmatch(key):
            raise ValueError(f"training key {key!r} is not a digest")
        self.key = key
        self.folder = root / namespace / name / key

    @property
    def checkpoint_dir(self) -> Path:
        return self.folder / "checkpoint"

    @property
    def artifact_file(self) -> Path:
        return self.folder / "artifact.json"

    @property
    def about_file(self) -> Path:
        return self.folder / "training.json"

    @property
    def lock_file(self) -> Path:
        return self.folder / ".lock"

    def about(self) -> dict[str, Any]:
        """What ``begin`` wrote: the key, the reason, the digests, the owner; {} when unreadable."""
        try:
            about = json.loads(self.about_file.read_text())
        except (OSError, ValueError):
            return {}
        return about if isinstance(about, dict) and about.get("key") == self.key else {}

    def started(self) -> bool:
        return bool(self.about())

    def begin(self, due: Due, owner: str = MODEL_OWNER) -> None:
        """Start (or resume) the training for ``due``: other trainings' folders are left alone."""
        if due.key != self.key:
            raise ValueError(f"training {due.key} does not belong in workspace {self.key}")
        if not self.started():
            about = {
                "key": due.key,
                "reason": due.reason,
                "specDigest": due.spec_digest,
                "datasetDigest": due.dataset_digest,
                "after": due.after,
                "owner": owner,
            }
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomic(self.about_file, json.dumps(about).encode())
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)

    def due(self) -> Due | None:
        """The training this folder holds, as it was due when it began."""
        about = self.about()
        if not about:
            return None
        after = about.get("after")
        return Due(
            str(about.get("reason", "")),
            self.key,
            str(about.get("specDigest")),
            str(about.get("datasetDigest")),
            after if isinstance(after, int) and not isinstance(after, bool) else 0,
        )

    def finished(self) -> bytes | None:
        if self.started() and self.artifact_file.exists():
            return self.artifact_file.read_bytes()
        return None

    def keep(self, artifact: bytes) -> None:
        write_atomic(self.artifact_file, artifact)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """The training's lock, for as long as it trains (waits for another holder of the same key)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.lock_file.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def busy(self) -> bool:
        """Whether a training holds this folder now (in this process or another). Looking creates
        nothing: a training creates its lock file before it holds it."""
        try:
            handle = self.lock_file.open("rb")
        except OSError:
            return False
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    def clear(self) -> None:
        if self.folder.exists():
            shutil.rmtree(self.folder)


class Workspaces:
    """``<checkpoint_root>/<namespace>/<name>/``: every training workspace of one model."""

    def __init__(self, root: Path, namespace: str, name: str) -> None:
        self.root, self.namespace, self.name = root, namespace, name
        self.folder = root / namespace / name

    def of(self, key: str) -> Workspace:
        self._adopt_legacy()
        return Workspace(self.root, self.namespace, self.name, key)

    def all(self) -> list[Workspace]:
        """The trainings kept here (a folder left in the layout before keys is moved under its key)."""
        self._adopt_legacy()
        if not self.folder.is_dir():
            return []
        return [
            Workspace(self.root, self.namespace, self.name, p.name)
            for p in sorted(self.folder.iterdir())
            if p.is_dir() and KEY.fullmatch(p.name)
        ]

    def waiting(self, spec_digest: str, dataset_digest: str) -> Workspace | None:
        """A finished training of this very spec and data whose artifact is still here (a crash after
        training, or a rebase that dropped its registration): it is registered, or recorded as
        superseded when another controller registered the same training meanwhile."""
        for workspace in self.all():
            due = workspace.due()
            if (
                due is not None
                and (due.spec_digest, due.dataset_digest) == (spec_digest, dataset_digest)
                and workspace.finished() is not None
            ):
                return workspace
        return None

    def drop_if_empty(self) -> None:
        """Remove the model's folder when no training is kept in it (never one that is not empty)."""
        with contextlib.suppress(OSError):
            self.folder.rmdir()

    def _adopt_legacy(self) -> None:
        about_file = self.folder / "training.json"
        try:
            key = str(json.loads(about_file.read_text())["key"])
        except (OSError, ValueError, KeyError, TypeError):
            return
        if not KEY.fullmatch(key):
            return
        target = self.folder / key
        target.mkdir(parents=True, exist_ok=True)
        for name in _LEGACY:
            source = self.folder / name
            if source.exists() and not (target / name).exists():
                os.replace(source, target / name)
