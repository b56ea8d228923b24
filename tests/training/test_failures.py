"""Runtime failures: transient errors retried with backoff, a 401 answered by reading the
credentials once more, a closed session replaced, user errors and 1305 reported with their reason;
the token in none of it. Faults are raised by a wrapper around the real Estimator on chosen calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from qiskit_ibm_runtime.api.exceptions import RequestsApiError
from qiskit_ibm_runtime.exceptions import IBMInputValueError, IBMRuntimeError, RuntimeJobFailureError

from controller.api.quantummodel import QuantumModelSpec
from controller.engine import training
from controller.engine.training import failures
from tests.training.specs import optimizer, tiny
from tests.training.standin import StandInFactory, credentials_source, installed, no_sleep

TOKEN = "tok-SECRET-0123456789"


# --- classify ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [1006, 1008, 1010, 1011, 1202])
def test_transient_codes(code: int) -> None:
    for err in (
        RuntimeJobFailureError(f"Unable to retrieve job result. Error code {code}; the backend is busy."),
        IBMRuntimeError(f"code: {code}"),
    ):
        verdict = failures.classify(err)
        assert (verdict.kind, verdict.code) == ("transient", code), err
        assert verdict.reason.startswith("Qiskit Runtime is temporarily unavailable: ")


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_transient(status: int) -> None:
    assert failures.classify(RequestsApiError("'Service Unavailable'", status_code=status)).kind == "transient"
    assert failures.classify(IBMRuntimeError(f"HTTP {status}: upstream")).kind == "transient"
    assert failures.classify(ConnectionError("connection reset by peer")).kind == "transient"
    assert failures.classify(TimeoutError()).kind == "transient"


def test_auth_session_and_fatal_verdicts() -> None:
    assert failures.classify(RequestsApiError("'Unauthorized'", status_code=401)).kind == "auth"
    assert failures.classify(IBMRuntimeError("401 Client Error: Unauthorized for url")).kind == "auth"
    assert (
        failures.classify(RuntimeJobFailureError("Error code 1217; Session has been closed.")).kind == "session-closed"
    )
    assert failures.classify(IBMRuntimeError("The session 8x2k is closed")).kind == "session-closed"
    fatal = failures.classify(RuntimeJobFailureError("Error code 1305; Job exceeded the instance's usage limit."))
    assert (fatal.kind, fatal.code) == ("fatal", 1305)
    assert (
        fatal.reason.startswith("Qiskit Runtime error 1305: ")
        and "Job exceeded the instance's usage limit." in fatal.reason
    )
    user = failures.classify(IBMInputValueError("The circuit is not ISA: gate h is not supported"))
    assert user.kind == "fatal" and "gate h is not supported" in user.reason
    assert failures.classify(RequestsApiError("'Bad Request'", status_code=400)).kind == "fatal"
    assert failures.classify(ValueError()).reason == "Qiskit Runtime failed the job: ValueError"


def test_backoff_doubles_up_to_a_cap() -> None:
    assert [failures.backoff(n) for n in range(8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]


# --- in a training ------------------------------------------------------------------------------------


def ibm(mode: str = "job", iterations: int = 1) -> QuantumModelSpec:
    return tiny(
        training={
            "backend": "ibm:fake_lima",
            "executionMode": mode,
            "credentialsSecret": "ibm",
            **optimizer("COBYLA", iterations),
        }
    )


def transient(code: int) -> BaseException:
    return RuntimeJobFailureError(f"Unable to retrieve job result. Error code {code}; token {TOKEN} busy")


@pytest.mark.slow
def test_transient_failures_are_retried_with_backoff(tiny_repo: Path) -> None:
    faults: dict[int, BaseException] = {
        1: transient(1006),
        2: transient(1008),
        3: RequestsApiError("'Service Unavailable'", status_code=503),  # first job on call 4
        5: transient(1010),
        6: transient(1011),  # second job on call 7
        8: transient(1202),  # the test split on call 9
    }
    slept: list[float] = []
    read, calls = credentials_source(TOKEN)
    with installed(faults=faults) as factory:
        artifact = training.train(ibm(iterations=2), repo_root=tiny_repo, credentials=read, sleep=slept.append)
    assert slept == [1.0, 2.0, 4.0, 1.0, 2.0, 1.0]  # backoff restarts for each job
    assert factory.calls == 9
    assert artifact.manifest["usage"]["primitiveJobs"] == 3  # retries are not jobs that ran
    assert len(calls) == 1


@pytest.mark.slow
def test_transient_failures_give_up_after_five_retries(tiny_repo: Path) -> None:
    faults = {n: transient(1011) for n in range(1, 10)}
    slept: list[float] = []
    read, _ = credentials_source(TOKEN)
    with (
        installed(faults=faults) as factory,
        pytest.raises(training.RuntimeFailure) as raised,
    ):
        training.train(ibm(), repo_root=tiny_repo, credentials=read, sleep=slept.append)
    assert slept == [1.0, 2.0, 4.0, 8.0, 16.0] and factory.calls == 6
    message = str(raised.value)
    assert message.startswith("Qiskit Runtime is temporarily unavailable: ") and "1011" in message
    assert TOKEN not in message and "<hidden>" in message


@pytest.mark.slow
def test_401_reads_the_credentials_once_more(tiny_repo: Path) -> None:
    read, calls = credentials_source(TOKEN)
    unauthorized = RequestsApiError(f"'Unauthorized: token {TOKEN} expired'", status_code=401)
    with installed(faults={2: unauthorized}) as factory:
        artifact = training.train(ibm(iterations=1), repo_root=tiny_repo, credentials=read, sleep=no_sleep)
    assert len(calls) == 2  # the Secret may have been rotated: read again, once
    assert len(factory.services) == 2  # and a new service built from it
    assert factory.calls == 3 and artifact.manifest["usage"]["primitiveJobs"] == 2

    read, calls = credentials_source(TOKEN)
    faults = {2: unauthorized, 3: unauthorized}
    with installed(faults=faults), pytest.raises(training.RuntimeFailure) as raised:
        training.train(ibm(iterations=1), repo_root=tiny_repo, credentials=read, sleep=no_sleep)
    assert len(calls) == 2  # not a third time
    assert str(raised.value) == "Qiskit Runtime refused the credentials (HTTP 401)"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (
            RuntimeJobFailureError(f"Error code 1305; Job cancelled: instance limit (token={TOKEN})"),
            ("Qiskit Runtime error 1305: ", "Job cancelled: instance limit (token=<hidden>)"),
        ),
        (
            IBMInputValueError(f"The number of shots exceeds the maximum for {TOKEN}"),
            ("Qiskit Runtime failed the job: ", "The number of shots exceeds the maximum for <hidden>"),
        ),
    ],
    ids=["1305", "user-error"],
)
def test_user_errors_fail_with_their_reason(
    fault: BaseException, reason: tuple[str, str], tiny_repo: Path, tmp_path: Path
) -> None:
    read, _ = credentials_source(TOKEN)
    folder = tmp_path / "checkpoint"
    with (
        installed(faults={2: fault}) as factory,
        pytest.raises(training.RuntimeFailure) as raised,
    ):
        training.train(ibm(iterations=1), repo_root=tiny_repo, checkpoint_dir=folder, credentials=read, sleep=no_sleep)
    message = str(raised.value)
    assert message.startswith(reason[0]) and reason[1] in message
    assert TOKEN not in message
    assert factory.calls == 2  # not retried: the calls stop at the fault
    assert raised.value.__cause__ is None and raised.value.__context__ is None  # no traceback quoting the token
    assert TOKEN not in (folder / "journal.jsonl").read_text()


@pytest.mark.slow
def test_a_closed_session_is_replaced_and_training_goes_on(tiny_repo: Path) -> None:
    from qiskit_ibm_runtime import Session

    closed = RuntimeJobFailureError("Error code 1217; Session has been closed.")
    read, calls = credentials_source(TOKEN)
    with installed(faults={2: closed}) as factory:
        artifact = training.train(ibm("session", iterations=2), repo_root=tiny_repo, credentials=read, sleep=no_sleep)
    assert len(factory.sessions) == 2 and factory.resumed == [None, None]
    assert [type(m) for m in factory.modes_used] == [Session] * 4
    first, second = factory.sessions
    assert factory.modes_used[0] is first and factory.modes_used[1] is first  # the second call fails
    assert factory.modes_used[2] is second and factory.modes_used[3] is second  # its retry and the rest
    assert artifact.manifest["usage"]["primitiveJobs"] == 3
    assert artifact.manifest["lineage"]["sessionId"] == "standin-session-2"
    assert len(calls) == 1


# --- connecting and opening meet the same rules ------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
def test_rate_limits_and_http_errors_on_their_response_are_transient(status: int) -> None:
    import requests

    response = requests.Response()
    response.status_code = status
    assert failures.classify(requests.HTTPError("slow down", response=response)).kind == "transient"
    assert failures.classify(RequestsApiError("'Too many requests'", status_code=status)).kind == "transient"


class OpeningFails(StandInFactory):
    """The stand-in whose ``session()`` raises ``faults`` in turn before it builds a real session."""

    def __init__(self, *faults: BaseException) -> None:
        super().__init__()
        self.opening = list(faults)
        self.closed: list[Any] = []

    def session(self, backend: Any, service: Any | None, resume: str | None) -> Any:
        if self.opening:
            raise self.opening.pop(0)
        session = super().session(backend, service, resume)
        real_close = session.close

        def close() -> None:
            self.closed.append(session)
            real_close()

        session.close = close
        return session


@pytest.mark.slow
def test_opening_a_session_is_retried_and_its_errors_hide_the_token(tiny_repo: Path) -> None:
    read, _ = credentials_source(TOKEN)
    busy = RequestsApiError(f"'Service Unavailable for {TOKEN}'", status_code=503)
    slept: list[float] = []
    with installed(OpeningFails(busy, busy)) as factory:
        training.train(ibm("session"), repo_root=tiny_repo, credentials=read, sleep=slept.append)
    assert slept == [1.0, 2.0] and len(factory.sessions) == 1

    refused = RequestsApiError(f"'Unauthorized: {TOKEN}'", status_code=401)
    with installed(OpeningFails(refused)), pytest.raises(training.RuntimeFailure) as raised:
        training.train(ibm("session"), repo_root=tiny_repo, credentials=read, sleep=no_sleep)
    assert str(raised.value) == "Qiskit Runtime refused the credentials (HTTP 401)"
    assert raised.value.__context__ is None


@pytest.mark.slow
def test_a_training_that_fails_for_good_closes_its_session(tiny_repo: Path) -> None:
    read, _ = credentials_source(TOKEN)
    fatal = RuntimeJobFailureError("Error code 1305; Job cancelled")
    factory = OpeningFails()
    factory.faults = {2: fatal}
    with installed(factory), pytest.raises(training.RuntimeFailure):
        training.train(ibm("session", iterations=2), repo_root=tiny_repo, credentials=read, sleep=no_sleep)
    assert factory.closed == factory.sessions and len(factory.sessions) == 1


@pytest.mark.slow
def test_a_rotated_token_and_the_old_one_stay_hidden(tiny_repo: Path) -> None:
    tokens = iter([TOKEN, "tok-ROTATED-9876543210"])

    def read() -> training.Credentials:
        return training.Credentials(token=next(tokens), instance="crn:standin")

    unauthorized = RequestsApiError("'Unauthorized'", status_code=401)
    quoting = IBMInputValueError(f"bad request from {TOKEN} and tok-ROTATED-9876543210")
    with installed(faults={2: unauthorized, 3: quoting}), pytest.raises(training.RuntimeFailure) as raised:
        training.train(ibm(iterations=2), repo_root=tiny_repo, credentials=read, sleep=no_sleep)
    assert str(raised.value) == "Qiskit Runtime failed the job: 'bad request from <hidden> and <hidden>'"


def test_an_unknown_ibm_backend_names_the_field(tiny_repo: Path) -> None:
    read, _ = credentials_source(TOKEN)
    s = tiny(training={"backend": "ibm:ibm_nowhere", "credentialsSecret": "ibm"})
    with installed(), pytest.raises(training.RuntimeFailure) as raised:
        training.train(s, repo_root=tiny_repo, credentials=read, sleep=no_sleep)
    assert str(raised.value).startswith("training.backend: ibm:ibm_nowhere is not available to this instance: ")
