"""The models a server answers for, following their champions through Git.

:meth:`Catalog.refresh` brings the repository up to date (a URL is cloned once into the user's cache
folder and fetched on every refresh; a local folder is read as it is, kept current by whoever owns it),
reads each model's ledger, and loads a new champion (digests checked) *before* it replaces the one
being served: the swap is one assignment, and a request that started on the old champion finishes on
it. A champion that cannot be loaded leaves the one being served in place and is reported.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from controller.engine import prediction
from controller.engine.prediction import LoadedModel, ModelUnavailable, NoChampion
from controller.engine.registry import GitError, Registry, RegistryError
from controller.engine.training.artifact import AER_FROM_ROWS

if TYPE_CHECKING:
    from controller.shells.gitsource import GitCredentials

log = logging.getLogger(__name__)

VERSIONS_KEPT = 8  # versions other than the champions asked for by number, kept loaded


class CatalogError(Exception):
    """The repository cannot be used at all; the message names it (no credentials)."""


@dataclass(frozen=True)
class Swap:
    """A champion that changed: ``before`` None on first load."""

    model: str
    before: int | None
    after: int


@dataclass
class Entry:
    champion: LoadedModel | None = None
    versions: list[int] = field(default_factory=list)
    problem: str | None = None


def is_url(repo: str) -> bool:
    """A remote to clone (``scheme://...`` or ``user@host:path``), not a local work tree."""
    return "://" in repo or bool(re.match(r"^[^/]+:", repo))


class Catalog:
    def __init__(
        self,
        repo: str,
        models: list[tuple[str, str]] | None = None,
        *,
        workdir: Path | None = None,
        branch: str | None = None,
        credentials: GitCredentials | None = None,
    ) -> None:
        self.repo = repo
        self.credentials = credentials
        self.wanted = models
        self.branch = branch
        self._workdir = workdir
        self._entries: dict[str, Entry] = {}
        self._others: OrderedDict[tuple[str, int], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()  # one refresh at a time (the poll and SIGHUP may meet)
        self._registry: Registry | None = None
        self.refreshed = False

    # --- what requests read (no lock: each reads one reference) -----------------------------------

    def served(self) -> list[str]:
        return sorted(self._entries)

    def entry(self, key: str) -> Entry | None:
        return self._entries.get(key)

    def champion(self, key: str) -> LoadedModel | None:
        entry = self._entries.get(key)
        return entry.champion if entry else None

    def ready(self) -> bool:
        """Every model served has a champion loaded (and there is at least one model)."""
        entries = dict(self._entries)
        return self.refreshed and bool(entries) and all(e.champion is not None for e in entries.values())

    def version(self, key: str, number: int) -> LoadedModel:
        """Version ``number`` of a served model: the champion, or loaded (checked) and kept for later."""
        entry = self._entries.get(key)
        if entry is None:
            raise ModelUnavailable(f"{key} is not served here")
        if entry.champion is not None and entry.champion.version == number:
            return entry.champion
        if number not in entry.versions:
            raise ModelUnavailable(f"{key} has no version {number}")
        namespace, name = key.split("/", 1)
        with self._lock:  # off the event loop: it may wait for a refresh
            cached = self._others.get((key, number))
            if cached is not None:
                return cached
            loaded = prediction.load(self._open(), namespace, name, number)
            self._others[(key, number)] = loaded
            while len(self._others) > VERSIONS_KEPT:
                self._others.popitem(last=False)
            return loaded

    # --- following Git ----------------------------------------------------------------------------

    def refresh(self) -> list[Swap]:
        """Sync the repository and swap in every champion that changed; blocking (run it off the loop)."""
        with self._lock:
            registry = self._open()
            self._sync(registry)
            swaps: list[Swap] = []
            keys = self.wanted if self.wanted is not None else registry.models()
            entries = dict(self._entries)
            for namespace, name in keys:
                key = f"{namespace}/{name}"
                entry = entries.get(key) or Entry()
                swap = self._refresh_one(registry, namespace, name, entry)
                entries[key] = entry
                if swap:
                    swaps.append(swap)
            self._entries = entries
            self.refreshed = True
            return swaps

    def _refresh_one(self, registry: Registry, namespace: str, name: str, entry: Entry) -> Swap | None:
        key = f"{namespace}/{name}"
        try:
            entry.versions = [v.number for v in registry.versions(namespace, name)]
            number = registry.ledger(namespace, name).champion()
            current = entry.champion
            if number is None:
                if (namespace, name) not in registry.models():
                    raise ModelUnavailable(f"{key} is not in the registry")
                raise NoChampion(f"{key} has no champion: no version has been promoted")
            if current is not None and current.version == number:
                entry.problem = None
                return None
            loaded = prediction.load(registry, namespace, name, number)
            for rows in (1, AER_FROM_ROWS):  # the circuit decoded and both exact paths ready before serving
                prediction.predict(loaded, np.zeros((rows, len(loaded.features))))
        except Exception as err:  # one model's trouble leaves the others served
            known = isinstance(err, ModelUnavailable | RegistryError)
            entry.problem = str(err) if known else f"{key}: cannot load its champion: {type(err).__name__}"
            if entry.champion is not None:
                log.warning("%s: keeps serving version %s: %s", key, entry.champion.version, entry.problem)
            return None
        entry.problem = None
        entry.champion = loaded  # the swap: requests that hold the old champion finish on it
        before = current.version if current else None
        log.info("%s: serving version %s (was %s)", key, number, before)
        return Swap(key, before, number)

    def _open(self) -> Registry:
        if self._registry is None:
            path = self._checkout() if is_url(self.repo) else Path(self.repo)
            try:
                self._registry = Registry(path, remote=None)
            except RegistryError as err:
                raise CatalogError(str(err)) from None
        return self._registry

    def _checkout(self) -> Path:
        from controller.shells.gitsource import GitSource, GitSourceError
        from controller.shells.workdir import WorkdirError, default_workdir, private_folder, repository_key

        base = self._workdir or default_workdir("serve")
        try:
            folder = private_folder(base / "clones" / repository_key(self.repo, self.branch))
            source = GitSource(self.repo, folder / "checkout", branch=self.branch, credentials=self.credentials)
            return source.prepare()
        except (GitSourceError, WorkdirError) as err:
            raise CatalogError(str(err)) from None

    def _sync(self, registry: Registry) -> None:
        if not is_url(self.repo):
            return
        try:
            registry.git.run("fetch", "--quiet", "--prune", "origin")
            registry.git.run("reset", "--quiet", "--hard", "@{upstream}")
        except GitError as err:
            from controller.shells.gitsource import redact

            text = redact(str(err), self.credentials)
            log.warning("fetching the repository failed; serving what was fetched before: %s", text)
