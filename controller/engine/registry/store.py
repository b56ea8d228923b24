"""The registry in a Git work tree: read a model's versions and ledger, record decisions as commits.

Layout, per model, under ``registry/<namespace>/<model>/``:

- ``versions/<N>.json``  immutable version manifests (see :mod:`.versions`)
- ``ledger.jsonl``       the append-only chain of decisions (see :mod:`.ledger`)
- ``model.yaml``         a readable summary, edited round-trip (see :mod:`.index`)

Every decision is one commit by the controller's identity carrying the trailers ``Qmlops-Model``,
``Qmlops-Version``, ``Qmlops-Decision`` and ``Qmlops-Entry`` (the entry's digest, which finds the
commit again after a rebase changed its sha).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

from controller.engine.containment import OutsideWorkTree, inside_work_tree
from controller.engine.decisions import LedgerKind
from controller.engine.errors import StallingError
from controller.engine.memo import Memo
from controller.engine.registry import approvals, index, versions
from controller.engine.registry.canonical import digest_of
from controller.engine.registry.git import DEFAULT_IDENTITY, Commit, Git, GitError, GitIdentity, PublishResult
from controller.engine.registry.ledger import LEDGER_FILE, Entry, Ledger, LedgerError, draft, parse
from controller.engine.registry.trust import Signature, Trust, signing_settings
from controller.engine.registry.versions import Version, VersionError
from controller.engine.registry.yamlio import write_atomic

REGISTRY_DIR = "registry"
TRAILER_MODEL = "Qmlops-Model"
TRAILER_VERSION = "Qmlops-Version"
TRAILER_DECISION = "Qmlops-Decision"
TRAILER_ENTRY = "Qmlops-Entry"
TRAILER_PIPELINE = "Qmlops-Pipeline"  # <namespace>/<name> of the QuantumPipeline whose run decided
TRAILER_RUN = "Qmlops-Run"  # the run's id


T = TypeVar("T")
PARSED_FILES_LIMIT = 20_000
MAX_CALIBRATION_BYTES = 8 * 1024 * 1024
CALIBRATIONS_DIR = "calibrations"  # registry/calibrations/<device>/<digest>.json: shared by every model


class RegistryError(Exception):
    """The registry cannot be read or written; the message names the file or the Git problem."""


class UntrustedHistory(StallingError):
    """A model's registry holds decisions the allowed signers do not vouch for: the reconcile acts on
    none of them until the history is repaired (``qmlops audit --verify`` names every commit)."""


@dataclass(frozen=True)
class Recorded:
    """A decision written to the ledger and committed."""

    entry: Entry
    commit: str


class Registry:
    """Versions and decisions of every model, kept in the Git repository at ``repo_path``."""

    def __init__(
        self,
        repo_path: Path,
        *,
        identity: GitIdentity = DEFAULT_IDENTITY,
        remote: str | None = "origin",
        root: str = REGISTRY_DIR,
        trust: Trust | None = None,
        signing_key: Path | None = None,
    ) -> None:
        """``trust``: the allowed signers the history must verify against (none: signatures are not
        checked); ``signing_key``: the SSH private key every commit the controller makes is signed with
        (checked first with :func:`.trust.check_signing_key`)."""
        self.repo = Path(repo_path).resolve()
        self.identity = identity
        self.root = root.strip("/")
        self.trust = trust or Trust()
        settings = signing_settings(Path(signing_key).resolve()) if signing_key else {}
        self.git = Git(self.repo, identity=identity, remote=remote, settings=settings)
        # files parsed before, by their content: a reconcile reads every file of its model and mostly
        # finds them as they were (their digests were checked when first parsed)
        self._parsed: Memo[Any] = Memo(PARSED_FILES_LIMIT)
        self._cache: dict[tuple[str, ...], object] = {}
        self._cache_head: str | None = None
        self._graph_head: str | None = None
        if not self.git.is_repository():
            raise RegistryError(f"{self.repo} is not a Git work tree: the registry lives in a Git repository")

    # --- paths ----------------------------------------------------------------------------------

    def model_path(self, namespace: str, name: str) -> str:
        return f"{self.root}/{namespace}/{name}"

    def ledger_path(self, namespace: str, name: str) -> str:
        return f"{self.model_path(namespace, name)}/{LEDGER_FILE}"

    def version_path(self, namespace: str, name: str, number: int) -> str:
        return f"{self.model_path(namespace, name)}/{versions.file_name(number)}"

    def real_path(self, relative: str) -> Path:
        """``relative`` (a registry path) in the work tree, refused when any part of it is a symlink or
        named .git: the registry is read and written only in real folders of the repository."""
        try:
            return inside_work_tree(self.repo, relative, symlinks=False)
        except OutsideWorkTree as err:
            raise RegistryError(f"{relative}: {err}") from None

    def calibration_path(self, device: str, digest: str) -> str:
        """Where a device's calibration snapshot is kept, content-addressed (see training/calibration.py)."""
        if not re.fullmatch(r"[a-z0-9_]{1,100}", device) or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise RegistryError(f"calibration {device[:40]!r} {digest[:19]!r}: not a device name and digest")
        return f"{self.root}/{CALIBRATIONS_DIR}/{device}/{digest.removeprefix('sha256:')}.json"

    def calibration(self, device: str, digest: str) -> bytes | None:
        """The snapshot kept under ``digest``, or None; a file whose content does not match its digest
        is an error (an auditor recomputes the ESP from it)."""
        relative = self.calibration_path(device, digest)
        path = self.real_path(relative)
        if not path.is_file():
            return None
        raw = path.read_bytes()
        if len(raw) > MAX_CALIBRATION_BYTES:
            raise RegistryError(f"{relative}: larger than {MAX_CALIBRATION_BYTES} bytes")
        try:
            found = digest_of(json.loads(raw))
        except ValueError:
            raise RegistryError(f"{relative}: not JSON") from None
        if found != digest:
            raise RegistryError(f"{relative}: its content does not match its digest")
        return raw

    def private_dir(self) -> Path:
        """Inside .git: never committed, shared by work trees. Checkpoints and finished artifacts live here."""
        return self.git.common_dir() / "qmlops"

    # --- syncing with the remote ----------------------------------------------------------------

    def sync(self) -> list[Commit]:
        """Bring the work tree up to date with the remote and publish what was left unpushed.

        Returns the controller's commits that had to be dropped because the remote decided about
        the same model in the meantime (their decisions are made again on the new history).
        """
        if not self.git.fetch():
            self.index_history()
            return []
        dropped = self.git.integrate(f"{self.root}/")
        dropped += self.publish().dropped
        self.index_history()
        return dropped

    def index_history(self) -> None:
        """Keep git's commit-graph, with changed-path Bloom filters, up to date (``.git`` only, never
        committed): a path-limited ``git log`` (a spec's last change, a ledger's commits) then skips
        the commits that did not touch the path instead of reading them all, so a reconcile stays flat
        in the length of the history. Written incrementally (``--split``) when HEAD moved."""
        head = self.git.head()
        if head is None or head == self._graph_head:
            return
        self.git.run("commit-graph", "write", "--reachable", "--changed-paths", "--split", check=False)
        self._graph_head = head

    def publish(self) -> PublishResult:
        return self.git.publish(f"{self.root}/")

    def discard_uncommitted(self, namespace: str, name: str) -> list[str]:
        """Undo half-written files of a decision interrupted before its commit (only the controller
        writes under the model's registry folder). Returns the paths that were dirty."""
        path = self.model_path(namespace, name)
        dirty = self.git.dirty([path])
        if dirty:
            self.git.discard([path])
        return dirty

    # --- reading --------------------------------------------------------------------------------

    def models(self) -> list[tuple[str, str]]:
        base = self.repo / self.root
        if not base.is_dir():
            return []
        return sorted(
            (ns.name, model.name)
            for ns in base.iterdir()
            if ns.is_dir() and ns.name != CALIBRATIONS_DIR
            for model in ns.iterdir()
            if model.is_dir()
        )

    def models_in_history(self) -> list[tuple[str, str]]:
        """Every model that ever had a folder in the registry, read from history in one pass (a model
        whose folder was removed is still one to account for)."""
        if self.git.head() is None:
            return []
        text = self.git.out("log", "--format=", "--name-only", "--no-renames", "HEAD", "--", f"{self.root}/")
        found = set()
        for path in text.splitlines():
            parts = path.split("/")
            if len(parts) >= 4 and parts[0] == self.root and parts[1] != CALIBRATIONS_DIR:
                found.add((parts[1], parts[2]))
        return sorted(found)

    def ledger(self, namespace: str, name: str, *, strict: bool = True) -> Ledger:
        """The model's decisions; with ``strict`` a line that is not an entry is an error, otherwise
        it is skipped (the audit shows what it can, and ``--verify`` reports the line)."""
        path = self.real_path(self.ledger_path(namespace, name))
        if not path.exists():
            return Ledger()
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
            return self._parsed.get(("ledger", strict, text), lambda: Ledger(tuple(parse(text, strict=strict))))
        except LedgerError as err:
            raise RegistryError(f"{self.ledger_path(namespace, name)}: {err}") from None

    def versions(self, namespace: str, name: str, *, strict: bool = True) -> list[Version]:
        """The model's versions, oldest first. ``strict``: a file that does not match its digest is an
        error (the engine never builds on a rewritten registry); otherwise it is read as it is. A
        version the ledger retired (``retention.maxVersions``) is not one, even if its file came back."""
        folder = self.real_path(f"{self.model_path(namespace, name)}/{versions.VERSIONS_DIR}")
        if not folder.is_dir():
            return []
        retired = self.ledger(namespace, name, strict=False).retired()
        found: list[Version] = []
        for file in folder.iterdir():
            number = versions.number_of(file.name)
            if number is None or number in retired:
                continue
            where = self.version_path(namespace, name, number)
            if file.is_symlink():
                raise RegistryError(f"{where}: is a symlink: the registry holds only real files")
            try:
                raw = file.read_bytes()
                version = self._parsed.get(
                    ("version", strict, where, raw), partial(versions.decode, raw, where, strict=strict)
                )
            except VersionError as err:
                if not strict:
                    continue
                raise RegistryError(str(err)) from None
            if version.number != number and strict:
                raise RegistryError(f"{where}: holds version {version.number}")
            found.append(version)
        return sorted(found, key=lambda v: v.number)

    def version_numbers(self, namespace: str, name: str) -> list[int]:
        """The numbers of every version file in the folder, registered or not (numbers are never reused)."""
        folder = self.real_path(f"{self.model_path(namespace, name)}/{versions.VERSIONS_DIR}")
        if not folder.is_dir():
            return []
        return sorted(n for n in (versions.number_of(f.name) for f in folder.iterdir()) if n is not None)

    def acted_on(self, namespace: str, name: str) -> tuple[Ledger, list[Version]]:
        """The ledger and the versions a reconcile may act on: with an allowed-signers file, every
        ledger entry must have been recorded by a commit signed by the controller's key, and so must
        the newest commit that touched the model's folder (else :class:`UntrustedHistory`); a version
        counts only when its own ``registered`` entry names its digest (a version file added by
        hand, or rewritten, is never gated, promoted or approved)."""
        ledger = self.ledger(namespace, name)
        if self.trust.checked:
            problem = self._at_head(("untrusted", namespace, name), lambda: self._untrusted(namespace, name, ledger))
            if problem:
                raise UntrustedHistory(f"{namespace}/{name}: {problem}; run qmlops audit --verify")
        registered = {
            e.version: e.data.get("versionDigest") for e in ledger.of_kind(LedgerKind.REGISTERED) if e.version
        }
        found = [v for v in self.versions(namespace, name) if registered.get(v.number) == v.digest]
        return ledger, found

    def _untrusted(self, namespace: str, name: str, ledger: Ledger) -> str | None:
        """Why the model's registry cannot be trusted (None: it can)."""
        who = self.identity.email
        recorded: dict[str, list[Commit]] = {}
        for commit in self.git.log(paths=[self.ledger_path(namespace, name)]):
            for digest in commit.trailer(TRAILER_ENTRY):
                recorded.setdefault(digest, []).append(commit)
        newest = self.git.log(paths=[self.model_path(namespace, name)], extra=["-1"])
        shas = [c.sha for found in recorded.values() for c in found] + [c.sha for c in newest]
        signatures = self.trust.signatures(self.git, shas)
        for entry in ledger.entries:
            commits = recorded.get(entry.digest, [])
            if not any(signatures[c.sha].by(who) for c in commits):
                why = (
                    f"commit {commits[0].short} is {signatures[commits[0].sha].describe(who)}"
                    if commits
                    else ("no commit names it")
                )
                return f"ledger {entry.describe()} was not recorded by a commit the controller signed ({why})"
        for commit in newest:
            signature = signatures[commit.sha]
            if not signature.by(who):
                return (
                    f"commit {commit.short} changed {self.model_path(namespace, name)} and is {signature.describe(who)}"
                )
        return None

    def version(self, namespace: str, name: str, number: int) -> Version | None:
        return next((v for v in self.versions(namespace, name) if v.number == number), None)

    def champion(self, namespace: str, name: str) -> Version | None:
        number = self.ledger(namespace, name).champion()
        return None if number is None else self.version(namespace, name, number)

    def entry_commits(self, namespace: str, name: str) -> dict[str, Commit]:
        """Ledger entry digest -> the commit that recorded it (found by its Qmlops-Entry trailer)."""

        def read() -> dict[str, Commit]:
            out: dict[str, Commit] = {}
            for commit in self.git.log(paths=[self.ledger_path(namespace, name)]):
                for digest in commit.trailer(TRAILER_ENTRY):
                    out.setdefault(digest, commit)
            return out

        return dict(self._at_head(("entries", namespace, name), read))

    def signature(self, commit: Commit) -> Signature | None:
        """What the allowed signers say of ``commit``; None when no allowed-signers file is configured."""
        return self.trust.signature(self.git, commit.sha) if self.trust.checked else None

    def approval_trailers(self) -> list[tuple[Commit, str, str, int]]:
        """Every approval trailer reachable from HEAD (see :mod:`.approvals`), read once per HEAD."""
        return list(self._at_head(("approvals",), lambda: approvals.approval_trailers(self.git)))

    def _at_head(self, key: tuple[str, ...], read: Callable[[], T]) -> T:
        """``read()`` remembered until HEAD moves: history reachable from a commit never changes."""
        head = self.git.head()
        if self._cache_head != head:
            self._cache.clear()
            self._cache_head = head
        if key not in self._cache:
            self._cache[key] = read()
        return cast(T, self._cache[key])

    # --- writing --------------------------------------------------------------------------------

    def record(
        self,
        namespace: str,
        name: str,
        *,
        at: str,
        kind: str,
        version: int | None,
        message: str,
        data: dict[str, Any] | None = None,
        files: dict[str, bytes] | None = None,
        trailers: tuple[tuple[str, str], ...] = (),
        shared: dict[str, bytes] | None = None,
        removes: tuple[str, ...] = (),
    ) -> Recorded:
        """Append one decision to the ledger, write ``files`` (paths relative to the model's folder,
        never overwriting one that exists), refresh model.yaml, and commit it all as one commit.
        ``shared`` are content-addressed files of the whole registry (paths from :meth:`calibration_path`):
        written once, left alone when they exist. ``removes``: files of the model's folder that leave
        HEAD in the same commit (a retired version's; history keeps them)."""
        model = f"{namespace}/{name}"
        base = self.model_path(namespace, name)
        # every path is checked before anything is written: a symlinked registry/<namespace> (or any
        # other part) would otherwise send versions and ledgers outside the repository
        targets = {relative: self.real_path(f"{base}/{relative}") for relative in (files or {})}
        shared_targets = {relative: self.real_path(relative) for relative in (shared or {})}
        removed = [self.real_path(f"{base}/{relative}") for relative in removes]
        ledger_file = self.real_path(f"{base}/{LEDGER_FILE}")
        index_file = self.real_path(f"{base}/{index.INDEX_FILE}")
        ledger = self.ledger(namespace, name)
        entry = draft(ledger.last, at=at, kind=kind, model=model, version=version, message=message, data=data)
        for relative, raw in (files or {}).items():
            target = targets[relative]
            if target.exists():
                raise RegistryError(f"{self.model_path(namespace, name)}/{relative} exists: versions are immutable")
            write_atomic(target, raw)
        for relative, raw in (shared or {}).items():
            if not shared_targets[relative].exists():
                write_atomic(shared_targets[relative], raw)
        for target in removed:
            target.unlink(missing_ok=True)
        before = ledger_file.read_bytes() if ledger_file.exists() else b""
        write_atomic(ledger_file, before + entry.to_line().encode())
        after = Ledger((*ledger.entries, entry))
        index.write(
            index_file,
            namespace,
            name,
            index.summary(namespace, name, after, self.versions(namespace, name)),
        )
        lines = [(TRAILER_MODEL, model)]
        if version is not None:
            lines.append((TRAILER_VERSION, str(version)))
        lines += [(TRAILER_DECISION, kind), *trailers, (TRAILER_ENTRY, entry.digest)]
        subject = f"qmlops: {model}: {entry.message}"  # as scrubbed for the ledger
        try:
            paths = [self.model_path(namespace, name), *sorted(shared or {})]
            sha = self.git.commit(paths, _subject(subject), lines)
        except GitError as err:
            raise RegistryError(f"committing {kind} for {model}: {err}") from None
        return Recorded(entry, sha)

    def has_report(self, namespace: str, name: str, filename: str) -> bool:
        """Whether the model's folder holds ``filename`` (a report the controller wrote)."""
        target = self.real_path(f"{self.model_path(namespace, name)}/{filename}")
        return target.is_file() or target.is_symlink()

    def write_report(self, namespace: str, name: str, filename: str, text: str | None, subject: str) -> str | None:
        """Write ``text`` to ``filename`` in the model's folder and commit it alone (trailer
        ``Qmlops-Model``), only when it differs from what is there; the new commit's sha, or None
        when the file already holds exactly ``text`` (a reconcile with nothing new writes nothing).
        ``text`` None: the file leaves HEAD in a commit of its own (history keeps it), when it is there."""
        model = f"{namespace}/{name}"
        relative = f"{self.model_path(namespace, name)}/{filename}"
        target = self.real_path(relative)
        if text is None:
            if not self.has_report(namespace, name, filename):
                return None
            target.unlink()
        else:
            raw = text.encode()
            if target.is_file() and not target.is_symlink() and target.read_bytes() == raw:
                return None
            write_atomic(target, raw)
        try:
            return self.git.commit([relative], _subject(f"qmlops: {model}: {subject}"), [(TRAILER_MODEL, model)])
        except GitError as err:
            raise RegistryError(f"committing {relative}: {err}") from None


def _subject(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
