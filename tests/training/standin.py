"""The one substitute the training tests use for IBM: a RuntimeFactory whose service is a local
stand-in answering with fake backends, whose sessions and batches are real Session/Batch objects on
those backends in local testing mode, and whose estimator is the real client-side Estimator wrapped to
count calls, inject faults on chosen calls and report the QPU usage IBM would."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from controller.engine.training import Credentials, RuntimeFactory, using_factory

DEVICES = ("FakeLimaV2", "FakeManilaV2")  # 5 qubits: small noise models, quick to simulate
LEAST_BUSY = "fake_lima"


class StandInService:
    """What ``QiskitRuntimeService`` answers, offline: fake backends by name."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials

    def backend(self, name: str) -> Any:
        from qiskit_ibm_runtime import fake_provider

        for attr in DEVICES:
            backend = getattr(fake_provider, attr)()
            if backend.name == name:
                return backend
        from qiskit.providers.exceptions import QiskitBackendNotFoundError

        raise QiskitBackendNotFoundError(f"No backend matches the criteria: {name}")

    def least_busy(self, operational: bool = True, simulator: bool = False, min_num_qubits: int | None = None) -> Any:
        return self.backend(LEAST_BUSY)


class StandInJob:
    """The real local job, reporting the quantum seconds an IBM job would (``job.usage()``)."""

    def __init__(self, job: Any, seconds: float) -> None:
        self._job, self._seconds = job, seconds

    def result(self) -> Any:
        return self._job.result()

    def job_id(self) -> str:
        return str(self._job.job_id())

    def usage(self) -> float:
        return self._seconds


class FaultyEstimator:
    """The real Estimator; call ``n`` (1-based, counted over the whole factory) raises ``faults[n]``."""

    def __init__(self, estimator: Any, mode: Any, factory: StandInFactory) -> None:
        self._estimator, self._mode, self._factory = estimator, mode, factory

    @property
    def options(self) -> Any:
        return self._estimator.options

    def run(self, pubs: Any, **kwargs: Any) -> Any:
        factory = self._factory
        factory.calls += 1
        factory.modes_used.append(self._mode)
        fault = factory.faults.get(factory.calls)
        if fault is not None:
            raise fault
        job = self._estimator.run(pubs, **kwargs)
        return StandInJob(job, factory.seconds_per_job) if factory.seconds_per_job else job


@dataclass
class StandInFactory(RuntimeFactory):
    """Install with ``using_factory(StandInFactory(...))``; every ``ibm:`` training then runs offline."""

    faults: dict[int, BaseException] = field(default_factory=dict)
    seconds_per_job: float = 0.0
    calls: int = 0
    services: list[StandInService] = field(default_factory=list)
    sessions: list[Any] = field(default_factory=list)
    batches: list[Any] = field(default_factory=list)
    resumed: list[str | None] = field(default_factory=list)  # the resume argument of each session()
    modes_used: list[Any] = field(default_factory=list)  # the Session, Batch or backend of each call
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def service(self, credentials: Credentials) -> Any:
        self.services.append(StandInService(credentials))
        return self.services[-1]

    def session(self, backend: Any, service: Any | None, resume: str | None) -> Any:
        from qiskit_ibm_runtime import Session

        self.resumed.append(resume)
        session = Session(backend=backend)  # local testing mode: a real Session on the fake backend
        if service is not None:  # an IBM session has an id; the local one does not, so give it IBM's
            session._session_id = resume or f"standin-session-{next(self._ids)}"
        self.sessions.append(session)
        return session

    def batch(self, backend: Any) -> Any:
        self.batches.append(super().batch(backend))
        return self.batches[-1]

    def estimator(self, mode: Any) -> Any:
        return FaultyEstimator(super().estimator(mode), mode, self)


def credentials_source(token: str = "tok-SECRET-0123456789") -> tuple[Callable[[], Credentials], list[int]]:
    """A lazy credentials lookup (as the operator's Secret reader) and the list counting its calls."""
    calls: list[int] = []

    def read() -> Credentials:
        calls.append(1)
        return Credentials(token=token, instance="crn:standin")

    return read, calls


@contextlib.contextmanager
def installed(factory: StandInFactory | None = None, **settings: Any) -> Iterator[StandInFactory]:
    """``using_factory`` with the stand-in, typed as such: ``with installed(faults={2: err}) as factory``."""
    with using_factory(factory or StandInFactory(**settings)):
        yield factory if factory is not None else _current()


def _current() -> StandInFactory:
    from controller.engine.training.backends import runtime_factory

    current = runtime_factory()
    assert isinstance(current, StandInFactory)
    return current


def no_sleep(seconds: float) -> None:
    raise AssertionError(f"slept {seconds} s: nothing should have been retried")
