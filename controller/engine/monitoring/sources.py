"""Where today's calibration of a device comes from, for monitoring.

* ``fake:<device>``: the spec repository's ``calibrations/<device>.json`` when it exists, else the
  snapshot packaged with the fake backend (read again on every check: the file moves with the repo);
* ``ibm:<backend>``: the service's current properties, fetched through the Runtime factory at most
  once per monitoring period per device.

A fetch that fails is a :class:`SourceUnavailable` with the reason (scrubbed): the checks that needed
it are reported as not run, never as "no drift".
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from controller.engine.containment import OutsideWorkTree, inside_work_tree
from controller.engine.memo import Memo
from controller.engine.text import scrub
from controller.engine.training.calibration import (
    Calibration,
    CalibrationError,
    packaged,
    parse,
    repository_file,
)
from controller.engine.training.credentials import CredentialsSource, resolve

MEMO_LIMIT = 256


class SourceUnavailable(Exception):
    """Today's calibration could not be obtained (the service is unreachable, no credentials...)."""


@dataclass
class Fetched:
    at: datetime
    calibration: Calibration


@dataclass
class CalibrationSource:
    """Today's calibration per backend. ``credentials(namespace, secret)`` reads an ibm: model's Secret."""

    repo_root: Path | None
    credentials: Callable[[str, str], Any] | None = None
    _fetched: dict[str, Fetched] = field(default_factory=dict)
    _parsed: Memo[Calibration] = field(default_factory=lambda: Memo(MEMO_LIMIT))
    fetches: int = 0  # how many times the service was asked (tests and the benchmark read it)

    def today(
        self,
        backend: str,
        *,
        now: datetime,
        period: timedelta,
        credentials: CredentialsSource = None,
    ) -> Calibration:
        kind, _, name = backend.partition(":")
        if kind == "fake":
            return self._fake(name)
        if kind == "ibm":
            return self._ibm(name, now, period, credentials)
        raise SourceUnavailable(f"{backend} has no calibration: it is a simulator")

    def fake_backend(self, name: str) -> Any:
        from controller.engine.training.backends import runtime_factory

        return self._parsed.get(("backend", name), lambda: runtime_factory().fake_backend(name))

    def _fake(self, name: str) -> Calibration:
        backend = self.fake_backend(name)
        device, qubits = str(backend.name), int(backend.num_qubits)
        raw = self._repository_bytes(device)
        if raw is None:
            return self._parsed.get(("package", device), lambda: packaged(backend))
        where = repository_file(device)
        key = ("file", device, hashlib.sha256(raw).hexdigest())
        return self._parsed.get(key, lambda: parse(raw, where, device, qubits).with_source(where))

    def _repository_bytes(self, device: str) -> bytes | None:
        if self.repo_root is None:
            return None
        relative = repository_file(device)
        try:
            path = inside_work_tree(self.repo_root, relative)
        except OutsideWorkTree as err:
            raise CalibrationError(f"{relative}: {err.reason}") from None
        return path.read_bytes() if path.is_file() else None

    def _ibm(self, name: str, now: datetime, period: timedelta, credentials: CredentialsSource) -> Calibration:
        fetched = self._fetched.get(name)
        if fetched is not None and now - fetched.at < period:
            return fetched.calibration
        from controller.engine.training.backends import runtime_factory
        from controller.engine.training.calibration import from_properties

        self.fetches += 1
        resolved = None
        try:
            resolved = resolve(credentials)
            if resolved is None:
                raise SourceUnavailable(f"ibm:{name}: no IBM Quantum credentials to read its calibration with")
            factory = runtime_factory()
            backend = factory.backend(factory.service(resolved), name, 1)
            properties = backend.properties(refresh=True)
            if properties is None:
                raise SourceUnavailable(f"ibm:{name}: the service reports no calibration for it")
            calibration = from_properties(properties, str(backend.name), getattr(backend, "num_qubits", None))
        except SourceUnavailable:
            raise
        except CalibrationError:
            raise
        except Exception as err:
            text = str(err) if resolved is None else str(err).replace(resolved.token, "<hidden>")
            raise SourceUnavailable(scrub(f"ibm:{name}: the service did not answer: {text}")) from None
        self._fetched[name] = Fetched(now, calibration)
        return calibration
