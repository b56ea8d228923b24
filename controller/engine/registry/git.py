"""A small typed wrapper over the git command line: the only place that runs git.

The controller commits as its own identity (configurable), adds trailers that name the model, the
version and the decision, and publishes by pushing to the upstream. A rejected push is rebased and
retried; it is never forced. When two controllers decided about the same model at once, their
commits conflict in that model's ledger: the later controller's conflicting commits are dropped
during the rebase and reported, so that it decides again on the history that won.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from controller.engine.errors import RetryableError

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
DEFAULT_IDENTITY_TEXT = "qmlops <qmlops@example.invalid>"
_IDENTITY = re.compile(r"^\s*(?P<name>[^<>]*?)\s*<(?P<email>[^<>\s]+)>\s*$")
# Errors that mean the remote has commits this clone lacks (as opposed to permission or network).
_REJECTED = ("[rejected]", "non-fast-forward", "fetch first", "failed to update ref", "cannot lock ref")


class GitError(RetryableError):
    """A git command failed; the message names the command and git's own explanation."""


@dataclass(frozen=True)
class GitIdentity:
    """Who the controller commits as: ``Name <email>``."""

    name: str
    email: str

    @classmethod
    def parse(cls, text: str) -> GitIdentity:
        match = _IDENTITY.match(text)
        if not match or not match["name"]:
            raise ValueError(f"{text!r} is not a Git identity: write it as 'Name <email>'")
        return cls(match["name"], match["email"])

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"

    def env(self) -> dict[str, str]:
        return {
            "GIT_AUTHOR_NAME": self.name,
            "GIT_AUTHOR_EMAIL": self.email,
            "GIT_COMMITTER_NAME": self.name,
            "GIT_COMMITTER_EMAIL": self.email,
        }


DEFAULT_IDENTITY = GitIdentity.parse(DEFAULT_IDENTITY_TEXT)


@dataclass(frozen=True)
class Commit:
    """One commit as ``git log`` describes it, with its trailers."""

    sha: str
    author_name: str
    author_email: str
    committer_email: str
    date: str
    subject: str
    trailers: tuple[tuple[str, str], ...] = ()

    def trailer(self, key: str) -> list[str]:
        return [v for k, v in self.trailers if k.lower() == key.lower()]

    @property
    def short(self) -> str:
        return self.sha[:12]


@dataclass(frozen=True)
class Change:
    """One path a commit changed: its status (A, M, D, T), and its new mode and blob."""

    status: str
    path: str
    mode: str
    blob: str

    @property
    def symlink(self) -> bool:
        return self.mode == "120000"


@dataclass
class PublishResult:
    """What publishing did: whether it pushed, and the controller commits it had to drop."""

    pushed: bool = False
    dropped: list[Commit] = field(default_factory=list)
    attempts: int = 0


_FIELD, _RECORD, _START = "\x1f", "\x1e", "\x1d"
# signatures are not asked of git log (%G? runs ssh-keygen once per commit): registry/trust.py checks them
_LOG_FORMAT = _FIELD.join(["%H", "%an", "%ae", "%ce", "%aI", "%s", "%(trailers:only,unfold)"]) + _RECORD


class Git:
    """git, run in one work tree. Every call is a subprocess with a fixed environment."""

    def __init__(
        self,
        root: Path,
        *,
        identity: GitIdentity = DEFAULT_IDENTITY,
        remote: str | None = "origin",
        settings: dict[str, str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.identity = identity
        self.remote = remote  # None: never fetch or push
        # `git -c key=value` for every command (e.g. the SSH key every commit is signed with)
        self.settings = dict(settings or {})
        # (remote, branch) once looked up: read on every publish, changed only by _track
        self._upstream: tuple[tuple[str, str] | None] | None = None
        self._tracked = False  # the branch's upstream is configured (checked after the first push)

    # --- running --------------------------------------------------------------------------------

    def run(
        self,
        *args: str,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        full = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_EDITOR": "true"}
        full.update(env or {})
        overrides = [part for key, value in self.settings.items() for part in ("-c", f"{key}={value}")]
        try:
            done = subprocess.run(
                ["git", *overrides, *args],
                cwd=self.root,
                env=full,
                input=input,
                capture_output=True,
                text=True,
                encoding="utf-8",
                errors="replace",
                check=False,
            )
        except FileNotFoundError:
            if not self.root.is_dir():  # subprocess says the same when the cwd is missing
                raise GitError(f"{self.root} is not a folder") from None
            raise GitError("git is not installed (the registry needs the git command)") from None
        except NotADirectoryError:
            raise GitError(f"{self.root} is not a directory") from None
        if check and done.returncode != 0:
            raise GitError(f"git {' '.join(args[:3])} in {self.root}: {_explain(done)}")
        return done

    def out(self, *args: str) -> str:
        return self.run(*args).stdout.strip()

    # --- reading --------------------------------------------------------------------------------

    def is_repository(self) -> bool:
        done = self.run("rev-parse", "--is-inside-work-tree", check=False)
        return done.returncode == 0 and done.stdout.strip() == "true"

    def toplevel(self) -> Path:
        return Path(self.out("rev-parse", "--show-toplevel"))

    def common_dir(self) -> Path:
        """The .git folder shared by every work tree: where the controller keeps what is never committed."""
        return (self.root / self.out("rev-parse", "--git-common-dir")).resolve()

    def head(self) -> str | None:
        done = self.run("rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False)
        return done.stdout.strip() or None

    def branch(self) -> str | None:
        done = self.run("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
        return done.stdout.strip() or None

    def upstream(self) -> tuple[str, str] | None:
        if self._upstream is None:
            self._upstream = (self._find_upstream(),)
        return self._upstream[0]

    def _find_upstream(self) -> tuple[str, str] | None:
        """(remote, branch) that the current branch pushes to: its configured upstream on ``self.remote``,
        else the branch of the same name there; None without that remote (or with ``remote=None``)."""
        branch = self.branch()
        if branch is None or self.remote is None:
            return None
        if self.remote not in self.out("remote").split():
            return None
        configured = self.run("config", f"branch.{branch}.remote", check=False).stdout.strip()
        merge = self.run("config", f"branch.{branch}.merge", check=False).stdout.strip()
        if configured == self.remote and merge:
            return self.remote, merge.removeprefix("refs/heads/")
        return self.remote, branch

    def revision(self, ref: str = "HEAD") -> str:
        """``main@sha1:<sha>`` as status.source.revision writes it."""
        sha = self.out("rev-parse", "--verify", f"{ref}^{{commit}}")
        name = self.branch() if ref == "HEAD" else None
        return f"{name or 'HEAD'}@sha1:{sha}"

    def resolve(self, ref: str) -> str:
        done = self.run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
        if done.returncode != 0:
            raise GitError(f"{ref!r} is not a commit in {self.root}")
        return done.stdout.strip()

    def show(self, rev: str, path: str) -> bytes | None:
        """The bytes of ``path`` at ``rev``; None when it is not there."""
        done = subprocess.run(
            ["git", "cat-file", "blob", f"{rev}:{path}"],
            cwd=self.root,
            capture_output=True,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
        return done.stdout if done.returncode == 0 else None

    def commit_objects(self, shas: list[str]) -> dict[str, bytes]:
        """The raw objects of these commits (signature headers included), read in one ``cat-file``."""
        if not shas:
            return {}
        done = subprocess.run(
            ["git", "cat-file", "--batch"],
            cwd=self.root,
            input="".join(f"{sha}\n" for sha in shas).encode(),
            capture_output=True,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
        if done.returncode != 0:
            raise GitError(f"git cat-file --batch in {self.root}: {done.stderr.decode(errors='replace').strip()}")
        out: dict[str, bytes] = {}
        data, at = done.stdout, 0
        for sha in shas:
            end = data.index(b"\n", at)
            header = data[at:end].split()
            at = end + 1
            if len(header) != 3 or header[1] != b"commit":
                continue  # missing, or not a commit
            size = int(header[2])
            out[sha] = data[at : at + size]
            at += size + 1
        return out

    def exists(self, rev: str, path: str) -> bool:
        return self.run("cat-file", "-e", f"{rev}:{path}", check=False).returncode == 0

    def log(
        self,
        *revs: str,
        paths: Sequence[str] = (),
        follow: bool = False,
        reverse: bool = False,
        extra: Sequence[str] = (),
    ) -> list[Commit]:
        if self.head() is None:
            return []
        args = ["log", f"--format={_LOG_FORMAT}", *extra]
        if follow:
            args.append("--follow")
        if reverse:
            args.append("--reverse")
        args.extend(revs or ["HEAD"])
        args.append("--")
        args.extend(paths)
        return [_parse_commit(record) for record in self.out(*args).split(_RECORD) if record.strip()]

    def log_changes(self, *, paths: Sequence[str], first_parent: bool = True) -> list[tuple[Commit, list[Change]]]:
        """Every commit that touched ``paths`` (oldest first) with what it changed there, in one pass."""
        if self.head() is None:
            return []
        args = ["log", f"--format={_START}{_LOG_FORMAT}", "--raw", "--no-renames", "--no-abbrev", "--reverse"]
        if first_parent:
            args.append("--first-parent")
        args += ["HEAD", "--", *paths]
        out: list[tuple[Commit, list[Change]]] = []
        for chunk in self.out(*args).split(_START):
            if not chunk.strip():
                continue
            record, _, raw = chunk.partition(_RECORD)
            changes = []
            for line in raw.splitlines():
                if not line.startswith(":"):
                    continue
                meta, _, path = line.partition("\t")
                _old_mode, new_mode, _old, new_blob, status = meta[1:].split()[:5]
                changes.append(Change(status[:1], path, new_mode, new_blob))
            out.append((_parse_commit(record), changes))
        return out

    def changed_paths(self, sha: str) -> list[str]:
        """Paths a commit changed relative to its first parent (everything, for a root commit)."""
        parent = self.run("rev-parse", "--verify", "--quiet", f"{sha}^", check=False).stdout.strip() or EMPTY_TREE
        text = self.out("diff", "--name-only", "--no-renames", parent, sha)
        return [line for line in text.splitlines() if line]

    def dirty(self, paths: Sequence[str]) -> list[str]:
        """Paths under ``paths`` with uncommitted changes, untracked files included."""
        text = self.run("status", "--porcelain", "--untracked-files=all", "--", *paths).stdout
        return [line[3:] for line in text.splitlines() if line.strip()]

    def unpushed(self) -> list[Commit]:
        target = self.upstream()
        head = self.head()
        if target is None or head is None:
            return []
        remote_ref = f"refs/remotes/{target[0]}/{target[1]}"
        fetched = self._fetched(remote_ref)
        if fetched is None:
            return self.log("HEAD")
        if fetched == head:  # in step with the remote: nothing to list
            return []
        return self.log(f"{remote_ref}..HEAD")

    def _fetched(self, remote_ref: str) -> str | None:
        """The commit ``remote_ref`` (the upstream as last fetched or pushed) names; None without it."""
        done = self.run("rev-parse", "--verify", "--quiet", f"{remote_ref}^{{commit}}", check=False)
        return (done.stdout.strip() or None) if done.returncode == 0 else None

    # --- writing --------------------------------------------------------------------------------

    def commit(self, paths: Sequence[str], message: str, trailers: Iterable[tuple[str, str]]) -> str:
        """Commit exactly ``paths`` (added, changed or removed) as the controller, with trailers.

        Hooks are skipped: the commit holds only files the controller wrote. Returns the new sha.
        """
        self.run("add", "--all", "--", *paths)
        args = ["commit", "--no-verify", "--quiet", "--cleanup=verbatim", "-F", "-"]
        for key, value in trailers:
            args.append(f"--trailer={key}: {value}")
        args += ["--only", "--", *paths]
        self.run(*args, env=self.identity.env(), input=message.rstrip("\n") + "\n")
        head = self.head()
        assert head is not None
        return head

    def discard(self, paths: Sequence[str]) -> None:
        """Throw away uncommitted changes under ``paths`` (the controller's own files after a crash)."""
        tracked = [p for p in paths if self.run("ls-files", "--error-unmatch", "--", p, check=False).returncode == 0]
        if tracked and self.head() is not None:
            self.run("checkout", "HEAD", "--", *tracked)
        self.run("clean", "-fdq", "--", *paths)

    def fetch(self) -> bool:
        """Fetch the upstream branch; False when there is no upstream."""
        target = self.upstream()
        if target is None:
            return False
        remote, branch = target
        done = self.run("fetch", "--quiet", remote, f"+refs/heads/{branch}:refs/remotes/{remote}/{branch}", check=False)
        if done.returncode != 0:
            if "couldn't find remote ref" in done.stderr:
                return True  # an empty remote: the first push creates the branch
            raise GitError(f"git fetch {remote}: {_explain(done)}")
        return True

    def integrate(self, droppable: str) -> list[Commit]:
        """Rebase local commits onto the fetched upstream.

        A local commit that conflicts is dropped when it is the controller's and touches only paths
        under ``droppable``; any other conflict aborts the rebase with a clear error. Returns the
        dropped commits.
        """
        target = self.upstream()
        if target is None:
            return []
        remote_ref = f"refs/remotes/{target[0]}/{target[1]}"
        fetched = self._fetched(remote_ref)
        if fetched is None:
            return []
        head = self.head()
        if head is None:  # a clone of an empty remote: its first commits arrive
            self.run("merge", "--ff-only", "--quiet", remote_ref, env=self.identity.env())
            return []
        if fetched == head:  # nothing new on either side (the usual case): no ancestry to ask about
            return []
        # behind (fast-forwarded) or ahead (already up to date): one process, no ancestry asked first
        merged = self.run("merge", "--ff-only", "--quiet", remote_ref, check=False, env=self.identity.env())
        if merged.returncode == 0:
            return []
        if self.run("merge-base", "--is-ancestor", "HEAD", remote_ref, check=False).returncode == 0:
            raise GitError(f"git merge --ff-only {remote_ref} in {self.root}: {_explain(merged)}")
        return self._rebase(remote_ref, droppable)

    def _rebase(self, onto: str, droppable: str) -> list[Commit]:
        dropped: list[Commit] = []
        env = self.identity.env()
        done = self.run("-c", "rebase.autoStash=true", "rebase", "--quiet", onto, check=False, env=env)
        while done.returncode != 0:
            stopped = self._rebase_head()
            if stopped is None:
                self.run("rebase", "--abort", check=False)
                raise GitError(f"git rebase onto {onto}: {_explain(done)}")
            commit = self.log(stopped, extra=["-1"])[0]
            if not self._droppable(commit, droppable):
                self.run("rebase", "--abort", check=False)
                raise GitError(
                    f"rebasing onto {onto} conflicts on commit {commit.short} ({commit.subject!r}, "
                    f"{commit.author_email}), which is not the controller's: resolve it by hand"
                )
            dropped.append(commit)
            done = self.run("rebase", "--skip", check=False, env=env)
        return dropped

    def _rebase_head(self) -> str | None:
        done = self.run("rev-parse", "--verify", "--quiet", "REBASE_HEAD", check=False)
        return done.stdout.strip() or None

    def _droppable(self, commit: Commit, prefix: str) -> bool:
        if commit.author_email != self.identity.email:
            return False
        return all(p.startswith(prefix) for p in self.changed_paths(commit.sha))

    def publish(self, droppable: str, *, attempts: int = 5) -> PublishResult:
        """Push HEAD to the upstream branch; on rejection fetch, rebase and retry. Never forces."""
        result = PublishResult()
        target = self.upstream()
        if target is None or self.head() is None:
            return result
        remote, branch = target
        for attempt in range(1, attempts + 1):
            result.attempts = attempt
            if not self.unpushed():
                return result
            done = self.run("push", "--quiet", "--porcelain", remote, f"HEAD:refs/heads/{branch}", check=False)
            if done.returncode == 0:
                self.run("update-ref", f"refs/remotes/{remote}/{branch}", "HEAD")
                self._track(remote, branch)
                result.pushed = True
                return result
            if not any(marker in done.stdout + done.stderr for marker in _REJECTED):
                raise GitError(f"git push {remote} {branch}: {_explain(done)}")
            time.sleep(0.05 * attempt)
            self.fetch()
            result.dropped.extend(self.integrate(droppable))
        raise GitError(
            f"git push {remote} {branch}: still rejected after {attempts} attempts (the remote keeps moving)"
        )

    def _track(self, remote: str, branch: str) -> None:
        """The branch's upstream configured after its first push (checked once per Git object)."""
        if self._tracked:
            return
        local = self.branch()
        if local and not self.run("config", f"branch.{local}.remote", check=False).stdout.strip():
            self.run("config", f"branch.{local}.remote", remote)
            self.run("config", f"branch.{local}.merge", f"refs/heads/{branch}")
            self._upstream = None
        self._tracked = True


def _parse_commit(record: str) -> Commit:
    parts = record.strip("\n").split(_FIELD)
    parts += [""] * (7 - len(parts))
    sha, an, ae, ce, date, subject, trailers = parts[:7]
    pairs: list[tuple[str, str]] = []
    for line in trailers.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            pairs.append((key.strip(), value.strip()))
    return Commit(sha.strip(), an, ae, ce, date, subject, tuple(pairs))


def _explain(done: subprocess.CompletedProcess[str]) -> str:
    text = (done.stderr or done.stdout or "").strip()
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("hint:")]
    return "; ".join(lines[-3:]) or f"exit code {done.returncode}"
