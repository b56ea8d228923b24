"""One pool thread's Git work tree: the engine's Registry, with the reads the operator repeats for every
model made cheap.

When the operator starts it looks at every model at once; a reconcile with nothing to do would cost a
dozen git processes, most of them asking what has not changed since the model before. Only this
thread writes to its work tree, so what it wrote last is known:

- HEAD is read from the ref files, not by a git process, and only again after a git command;
- a fetch made under ``min_sync_interval`` seconds ago, with nothing left to push, is not made again
  (for the first look at a model only, and only to find nothing to train: a reconcile someone asked
  for always fetches, and so does one that would start a training, which is paid for);
- nothing committed since the last push: nothing to publish;
- the work tree checked clean once stays clean until a decision fails half-way;
- which commit recorded each ledger entry is read once per HEAD for every model, not per model;
- git's commit-graph (``Registry.index_history``) is brought up to date at most every
  ``index_interval`` seconds, not after every decision (commits it does not cover yet are read as
  without it: a path-limited log stays correct, and flat in the length of the history).

Safe because the remote is the arbiter: a decision made on a history a second old is pushed like any
other, a push the remote rejects is rebased, and a decision that lost a race is made again on the
history that won (the engine's rules).
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

from controller.engine.registry import Commit, Git, PublishResult, Recorded, Registry
from controller.engine.registry.store import TRAILER_ENTRY, TRAILER_MODEL

_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


class WorkTreeGit(Git):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head: str | None = None

    def run(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self._head = None  # any git command may move HEAD: read it again afterwards
        return super().run(*args, **kwargs)

    def head(self) -> str | None:
        """HEAD as last read, until a git command runs here (only this thread uses this work tree)."""
        if self._head is None:
            self._head = self._read_head()
        return self._head

    def _read_head(self) -> str | None:
        """HEAD from ``.git/HEAD`` and the loose ref it names (git writes both atomically); git itself
        for anything else (packed refs, an unborn branch, a linked work tree)."""
        git_dir = self.root / ".git"
        try:
            text = (git_dir / "HEAD").read_text().strip()
            if text.startswith("ref: "):
                text = (git_dir / text.removeprefix("ref: ")).read_text().strip()
        except OSError:
            return super().head()
        return text if _SHA.fullmatch(text) else super().head()


class WorkTree(Registry):
    min_sync_interval = 1.0  # seconds a fetch is shared with the first look at another model

    def __init__(self, repo_path: Path, *, index_interval: float = 60.0, **kwargs: Any) -> None:
        super().__init__(repo_path, **kwargs)
        self.index_interval = index_interval
        self._indexed_at: float | None = None
        self.git = WorkTreeGit(
            self.repo, identity=self.git.identity, remote=self.git.remote, settings=self.git.settings
        )
        self.coalesce = True  # off for a reconcile someone asked for: it must see the remote as it is now
        self._synced_at: float | None = None
        self._unpublished = True  # a work tree left by an earlier process may hold unpushed commits
        self._clean = False  # ... and half-written files

    def warm(self) -> None:
        """Do now what the first reconcile on this work tree would do before anything else: fetch,
        push what an earlier process left unpushed, check the tree clean, map ledger entries to
        commits (the operator calls this at its start, while kopf lists the models)."""
        self.sync()
        self.publish()
        self.discard_uncommitted("", "")
        self.entry_commits("", "")

    def sync(self) -> list[Commit]:
        now = time.monotonic()
        recent = self._synced_at is not None and now - self._synced_at < self.min_sync_interval
        if self.coalesce and recent and not self._unpublished:
            return []
        dropped = super().sync()
        self._synced_at = now
        return dropped

    def index_history(self) -> None:
        now = time.monotonic()
        if self._indexed_at is not None and now - self._indexed_at < self.index_interval:
            return
        super().index_history()
        self._indexed_at = now

    def publish(self) -> PublishResult:
        if not self._unpublished:
            return PublishResult()
        result = super().publish()
        self._unpublished = False  # not reached when the push failed: the next reconcile tries again
        return result

    def discard_uncommitted(self, namespace: str, name: str) -> list[str]:
        """Half-written files of any model, once: after that only a failed decision leaves some."""
        if self._clean:
            return []
        dirty = self.git.dirty([f"{self.root}/"])
        if dirty:
            self.git.discard([f"{self.root}/"])
        self._clean = True
        return dirty

    def record(self, namespace: str, name: str, **decision: Any) -> Recorded:
        self._clean, self._unpublished = False, True
        recorded = super().record(namespace, name, **decision)
        self._clean = True
        return recorded

    def write_report(self, *args: Any, **kwargs: Any) -> str | None:
        """A report (policy.json) written or removed is a commit to push like a decision's."""
        self._clean = False
        sha = super().write_report(*args, **kwargs)
        self._clean = True
        if sha is not None:
            self._unpublished = True
        return sha

    def entry_commits(self, namespace: str, name: str) -> dict[str, Commit]:
        every: dict[str, dict[str, Commit]] = self._at_head(("entries of every model",), self._every_entry_commit)
        return dict(every.get(f"{namespace}/{name}", {}))

    def _every_entry_commit(self) -> dict[str, dict[str, Commit]]:
        """Model -> ledger entry digest -> the newest commit recording it, from one walk of the history
        (the controller's commits name their model and entry in trailers)."""
        found: dict[str, dict[str, Commit]] = {}
        for commit in self.git.log(paths=[f"{self.root}/"]):
            for model in commit.trailer(TRAILER_MODEL):
                entries = found.setdefault(model, {})
                for digest in commit.trailer(TRAILER_ENTRY):
                    entries.setdefault(digest, commit)
        return found
