"""Backends and execution modes: the local simulators, fake devices in local testing mode in
session, batch and job mode, and ``ibm:`` backends through the factory substitute (credentials read
lazily, the session id recorded and handed back on restart)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controller.engine import training
from controller.engine.training import backends
from controller.engine.training.checkpoint import summary
from tests.training.conftest import Calls
from tests.training.specs import optimizer, spec, tiny
from tests.training.standin import credentials_source, installed

pytestmark = pytest.mark.slow

Spy = Callable[[Any, str], Calls]
TOKEN = "tok-SECRET-0123456789"


@pytest.mark.parametrize(("backend", "device"), [("local:statevector", "statevector"), ("local:aer", "aer_simulator")])
def test_local_backends(backend: str, device: str) -> None:
    read, calls = credentials_source(TOKEN)
    artifact = training.train(spec(training={"backend": backend, **optimizer("COBYLA", 2)}), credentials=read)
    assert artifact.manifest["lineage"]["backend"] == backend
    assert artifact.manifest["lineage"]["device"] == device
    assert artifact.manifest["lineage"]["sessionId"] is None
    assert calls == []  # nothing local reads the credentials


@pytest.mark.parametrize("mode", ["session", "batch", "job"])
def test_fake_device_in_each_execution_mode(mode: str, tiny_repo: Path, spy: Spy) -> None:
    from qiskit_ibm_runtime import Batch, Session
    from qiskit_ibm_runtime.fake_provider import FakeManilaV2

    transpiled = spy(backends.RuntimeTarget, "transpile")
    runs = spy(backends.RuntimeTarget, "run")
    read, calls = credentials_source(TOKEN)
    s = tiny(training={"backend": "fake:manila", "executionMode": mode, **optimizer("COBYLA", 1)})
    with installed() as factory:
        artifact = training.train(s, repo_root=tiny_repo, credentials=read)

    expected = {"session": Session, "batch": Batch, "job": FakeManilaV2}[mode]
    assert factory.modes_used and all(type(m) is expected for m in factory.modes_used)
    assert len(factory.sessions) == (mode == "session") and len(factory.batches) == (mode == "batch")
    for opened in factory.sessions + factory.batches:
        assert not opened._active  # closed when the training is done
    assert factory.services == [] and calls == []  # local testing mode: no service, no credentials

    assert len(transpiled) == 1  # once per training, and every job runs that very ISA circuit
    isa = runs[0][1]
    assert all(call[1] is isa for call in runs) and len(runs) == 2
    device_ops = set(FakeManilaV2().target.operation_names)
    assert set(isa.count_ops()) <= device_ops and isa.num_qubits == 5

    lineage = artifact.manifest["lineage"]
    assert (lineage["backend"], lineage["device"], lineage["executionMode"]) == ("fake:manila", "fake_manila", mode)
    assert artifact.manifest["usage"]["qpuSeconds"] == 0.0  # a simulator costs no QPU time


@pytest.mark.parametrize(
    ("backend", "mode", "device"),
    [("ibm:fake_manila", "session", "fake_manila"), ("ibm:least-busy", "batch", "fake_lima")],
)
def test_ibm_backend_through_the_factory(backend: str, mode: str, device: str, tiny_repo: Path) -> None:
    read, calls = credentials_source(TOKEN)
    s = tiny(training={"backend": backend, "executionMode": mode, "credentialsSecret": "ibm", **optimizer("COBYLA", 1)})
    with installed() as factory:
        artifact = training.train(s, repo_root=tiny_repo, credentials=read)
    assert len(calls) == 1  # read once, when the backend is opened
    assert [service.credentials.token for service in factory.services] == [TOKEN]
    lineage = artifact.manifest["lineage"]
    assert lineage["device"] == device
    assert lineage["sessionId"] == ("standin-session-1" if mode == "session" else None)
    assert TOKEN not in artifact.to_json().decode()


def test_credentials_are_read_lazily_and_required(tiny_repo: Path) -> None:
    calls: list[int] = []
    s = tiny(training={"backend": "ibm:fake_lima", "executionMode": "job", "credentialsSecret": "ibm"})
    with installed(), pytest.raises(training.TrainingError) as raised:
        training.train(s, repo_root=tiny_repo)
    assert str(raised.value) == "training.credentialsSecret: ibm:fake_lima needs IBM Quantum credentials"

    def missing() -> training.Credentials:
        calls.append(1)
        raise training.CredentialsError(
            "credentials demo/ibm: no token (expected key 'token' or 'apiKey'; found instance)"
        )

    with installed(), pytest.raises(training.CredentialsError, match="demo/ibm: no token"):
        training.train(s, repo_root=tiny_repo, credentials=missing)
    assert calls == [1]


def test_unknown_ibm_backend(tiny_repo: Path) -> None:
    read, _ = credentials_source(TOKEN)
    s = tiny(training={"backend": "ibm:ibm_nowhere", "credentialsSecret": "ibm"})
    with (
        installed(),
        pytest.raises(training.RuntimeFailure, match="ibm_nowhere") as raised,
    ):
        training.train(s, repo_root=tiny_repo, credentials=read)
    assert TOKEN not in str(raised.value)


def test_session_id_recorded_and_handed_back_on_restart(tiny_repo: Path, tmp_path: Path) -> None:
    read, calls = credentials_source(TOKEN)
    s = tiny(
        training={
            "backend": "ibm:fake_manila",
            "executionMode": "session",
            "credentialsSecret": "ibm",
            **optimizer("COBYLA", 2),
        }
    )
    seen: list[training.Progress] = []
    folder = tmp_path / "checkpoint"
    with installed() as first, pytest.raises(training.TrainingStopped):
        training.train(
            s,
            repo_root=tiny_repo,
            checkpoint_dir=folder,
            credentials=read,
            on_progress=seen.append,
            should_stop=lambda: bool(seen),
        )
    assert first.resumed == [None]
    assert [p.session_id for p in seen] == ["standin-session-1"]
    journal = summary(folder) or {}
    assert journal["sessionId"] == "standin-session-1" and journal["iteration"] == 1
    assert first.sessions[0]._active  # left open for the run that resumes

    with installed() as second:
        artifact = training.train(s, repo_root=tiny_repo, checkpoint_dir=folder, credentials=read)
    assert second.resumed == ["standin-session-1"]  # the restart asks Runtime for the same session
    assert second.calls == 2  # the second iteration and the test split; the first is replayed
    assert artifact.manifest["lineage"]["sessionId"] == "standin-session-1"
    assert artifact.manifest["usage"]["resumes"] == 1
    assert len(calls) == 2  # once per run
    assert TOKEN not in (folder / "journal.jsonl").read_text()


def test_release_closes_the_session_a_stopped_training_left_open(tiny_repo: Path, tmp_path: Path) -> None:
    """A deleted model's stopped training: its session, kept open for a resume, is closed by id."""
    from tests.training.standin import StandInFactory

    class Closing(StandInFactory):
        def __init__(self) -> None:
            super().__init__()
            self.closed: list[tuple[Any, str]] = []

        def close_session(self, service: Any, session_id: str) -> None:
            self.closed.append((service, session_id))

    read, _ = credentials_source(TOKEN)
    s = tiny(training={"backend": "ibm:fake_manila", "executionMode": "session", "credentialsSecret": "ibm"})
    folder = tmp_path / "checkpoint"
    seen: list[training.Progress] = []
    with installed(Closing()) as factory:
        with pytest.raises(training.TrainingStopped):
            training.train(
                s,
                repo_root=tiny_repo,
                checkpoint_dir=folder,
                credentials=read,
                on_progress=seen.append,
                should_stop=lambda: bool(seen),
            )
        assert training.release(s, folder, read)
    assert [session_id for _, session_id in factory.closed] == ["standin-session-1"]
    assert factory.closed[0][0].credentials.token == TOKEN  # a service built from the Secret's token
    assert not training.release(tiny(), folder, read), "a local backend has no session to close"
    assert not training.release(s, tmp_path / "nothing", read), "no checkpoint, no session"
