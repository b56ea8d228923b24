"""Where the circuits run: one :class:`Target` per training, built from the spec's backend.

* ``local:statevector``: Qiskit's exact StatevectorEstimator (deterministic, no shots);
* ``local:aer``: Aer's EstimatorV2, shot noise at precision 1/sqrt(shots);
* ``fake:<device>`` and ``ibm:<backend>``: qiskit-ibm-runtime's client-side (executor-based)
  Estimator, the primitive 0.51 recommends, in the spec's execution mode (Session, Batch or job).
  A fake backend runs in local testing mode; an ``ibm:`` one through QiskitRuntimeService.

Everything that would reach IBM's network is built by a :class:`RuntimeFactory`; tests install one
that answers with fake backends in local testing mode, so the ``ibm:`` path itself runs offline.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from controller.api import limits
from controller.api.quantummodel import ExecutionMode, QuantumModelSpec
from controller.engine.training import calibration as calibrations
from controller.engine.training import circuits, failures
from controller.engine.training.calibration import Calibration
from controller.engine.training.credentials import Credentials, CredentialsSource, resolve
from controller.engine.training.errors import CircuitError, RuntimeFailure, TrainingError

MAX_TRANSIENT_RETRIES = 5
MAX_SESSION_REOPENS = 3
AER_BASIS = ("cx", "rz", "ry", "rx", "h", "p", "sx", "x")  # a few Aer runs natively; its full Target costs 0.4 s
# The samples of a PUB are separate experiments to Aer; by default it runs them one after the other and
# parallelises inside a statevector only from 14 qubits. Training circuits are small: spread the samples
# over the cores instead (about 1.5x on 2 cores at 8 qubits and 455 samples).
AER_OPTIONS = {"max_parallel_experiments": 0}


@dataclass(frozen=True)
class JobRun:
    """One primitive job: its expectation values and what it cost."""

    evs: np.ndarray
    job_id: str | None
    qpu_seconds: float
    shots: int


# --- the factory of everything that touches IBM ------------------------------------------------------


class RuntimeFactory:
    """Builds Qiskit Runtime objects. The only place that constructs a QiskitRuntimeService, a Session
    or a Batch, which reach the network the moment they are built."""

    def service(self, credentials: Credentials) -> Any:
        from qiskit_ibm_runtime import QiskitRuntimeService

        options: dict[str, Any] = {"channel": credentials.channel, "token": credentials.token}
        if credentials.instance:
            options["instance"] = credentials.instance
        if credentials.url:
            options["url"] = credentials.url
        return QiskitRuntimeService(**options)

    def backend(self, service: Any, name: str, min_qubits: int) -> Any:
        if name == "least-busy":
            return service.least_busy(operational=True, simulator=False, min_num_qubits=min_qubits)
        return service.backend(name)

    def fake_backend(self, device: str) -> Any:
        from qiskit_ibm_runtime import fake_provider

        for attr in (f"Fake{device.capitalize()}V2", f"Fake{device.capitalize()}"):
            cls = getattr(fake_provider, attr, None)
            if cls is not None:
                return cls()
        wanted = device.replace("_", "").lower()
        for attr in dir(fake_provider):
            if attr.lower().removeprefix("fake").removesuffix("v2") == wanted:
                return getattr(fake_provider, attr)()
        raise TrainingError(f"training.backend: qiskit_ibm_runtime.fake_provider has no device {device!r}")

    def session(self, backend: Any, service: Any | None, resume: str | None) -> Any:
        from qiskit_ibm_runtime import Session

        if resume and service is not None:
            with contextlib.suppress(Exception):  # closed or expired: a new session below
                session = Session.from_id(resume, service=service)
                if session.status() not in ("Closed", None):
                    return session
        return Session(backend=backend)

    def close_session(self, service: Any, session_id: str) -> None:
        from qiskit_ibm_runtime import Session

        Session.from_id(session_id, service=service).close()

    def batch(self, backend: Any) -> Any:
        from qiskit_ibm_runtime import Batch

        return Batch(backend=backend)

    def estimator(self, mode: Any) -> Any:
        from qiskit_ibm_runtime.executor_estimator import Estimator

        return Estimator(mode=mode)


_factory: RuntimeFactory = RuntimeFactory()


def runtime_factory() -> RuntimeFactory:
    return _factory


@contextlib.contextmanager
def using_factory(factory: RuntimeFactory) -> Iterator[RuntimeFactory]:
    """Install ``factory`` for every training started meanwhile (tests: local testing mode)."""
    global _factory
    before, _factory = _factory, factory
    try:
        yield factory
    finally:
        _factory = before


# --- targets -------------------------------------------------------------------------------------------


class Target:
    """One backend for one training: transpiles once, runs one PUB per job."""

    ref: str
    device: str
    local: bool = True
    calibration: Calibration | None = None  # the device's calibration it runs under (fake: and ibm:)

    @property
    def session_id(self) -> str | None:
        return None

    def transpile(self, circuit: Any, seed: int) -> Any:
        return circuit

    def executable(self, circuit: Any, features: list[str], seed: int) -> tuple[Any, dict[str, Any]]:
        """The circuit this backend runs, and the feature angles lifted out of it (by name; see
        :func:`circuits.lift_feature_angles`), whose values go into every parameter table."""
        return self.transpile(circuit, seed), {}

    def layout_observables(self, isa: Any, labels: list[str]) -> Any:
        from qiskit.quantum_info import SparsePauliOp

        ops = [SparsePauliOp(label) for label in labels]
        layout = getattr(isa, "layout", None)
        if layout is not None:
            ops = [op.apply_layout(layout) for op in ops]
        return ops

    def run(self, isa: Any, observables: Any, values: np.ndarray, shots: int, seed: int) -> JobRun:
        raise NotImplementedError

    def close(self) -> None:
        """End the work on this backend (closes a Runtime session)."""

    def detach(self) -> None:
        """Leave the session open for the run that resumes this training."""


def _observable_array(observables: Any, values: np.ndarray) -> Any:
    """One observable broadcasts over every binding; several get a leading axis of their own."""
    if len(observables) == 1:
        return observables[0]
    array = np.empty(len(observables), dtype=object)
    for k, op in enumerate(observables):  # np.asarray would expand each SparsePauliOp into its matrix
        array[k] = op
    return array.reshape((len(observables),) + (1,) * (values.ndim - 1))


class StatevectorTarget(Target):
    def __init__(self, ref: str) -> None:
        from qiskit.primitives import StatevectorEstimator

        self.ref, self.device = ref, "statevector"
        self._estimator = StatevectorEstimator()

    def run(self, isa: Any, observables: Any, values: np.ndarray, shots: int, seed: int) -> JobRun:
        job = self._estimator.run([(isa, _observable_array(observables, values), values)])
        return JobRun(np.asarray(job.result()[0].data.evs), None, 0.0, 0)


class AerTarget(Target):
    def __init__(self, ref: str) -> None:
        from qiskit_aer.primitives import EstimatorV2

        self.ref, self.device = ref, "aer_simulator"
        # Aer runs as many samples in parallel as fit max_memory_mb: within the memory limit
        options = {**AER_OPTIONS, "max_memory_mb": limits.memory_limit() // limits.MiB}
        self._estimator = EstimatorV2(options={"backend_options": options})

    def transpile(self, circuit: Any, seed: int) -> Any:
        from qiskit.transpiler import generate_preset_pass_manager

        if set(circuit.count_ops()) <= set(AER_BASIS):
            return circuit  # already Aer's instructions: a pass manager (~1 s to set up once) would change nothing
        return generate_preset_pass_manager(1, basis_gates=list(AER_BASIS), seed_transpiler=seed).run(circuit)

    def executable(self, circuit: Any, features: list[str], seed: int) -> tuple[Any, dict[str, Any]]:
        # Aer evaluates every angle expression in Python, once per sample and job: computed once instead
        return circuits.lift_feature_angles(self.transpile(circuit, seed), features)

    def run(self, isa: Any, observables: Any, values: np.ndarray, shots: int, seed: int) -> JobRun:
        self._estimator.options.run_options["seed_simulator"] = seed
        pub = (isa, _observable_array(observables, values), values)
        job = self._estimator.run([pub], precision=1 / math.sqrt(shots))
        evs = np.asarray(job.result()[0].data.evs)
        return JobRun(evs, None, 0.0, shots * int(evs.size))


class RuntimeTarget(Target):
    """A fake backend in local testing mode, or an IBM backend through QiskitRuntimeService, in the
    spec's execution mode. Runtime errors are retried, reconnected or reported as IBM classifies them."""

    def __init__(
        self,
        spec: QuantumModelSpec,
        factory: RuntimeFactory,
        credentials: CredentialsSource,
        resume_session: str | None,
        sleep: Callable[[float], None] = time.sleep,
        repo_root: Path | None = None,
        calibration: Calibration | None = None,
    ) -> None:
        self.ref = spec.training.backend
        kind, _, name = self.ref.partition(":")
        self.local = kind == "fake"
        self._spec, self._factory, self._credentials_source = spec, factory, credentials
        self._name, self._sleep = name, sleep
        self._credentials: Credentials | None = None
        self._tokens: set[str] = set()  # every token read, old ones included: none may reach an error text
        self._service: Any = None
        self._reloaded = False
        self._mode: Any = None
        self._guarded(self._connect)
        self.device = str(getattr(self._backend, "name", name))
        own = getattr(self._backend, "num_qubits", None)
        if isinstance(own, int) and own < spec.circuit.qubits:  # ibm: devices are known only once connected
            raise CircuitError(
                f"circuit.qubits: {self.ref} ({self.device}) has {own} qubits; circuit.qubits is {spec.circuit.qubits}"
            )
        self.calibration = self._calibrate(repo_root, calibration)
        self._guarded(lambda: self._open(resume_session))

    def _guarded(self, step: Callable[[], None]) -> None:
        """Connecting and opening a session meet the same errors as jobs: transient ones are retried,
        the rest reported by IBM's classification, with every token taken out."""
        for attempt in range(MAX_TRANSIENT_RETRIES + 1):
            try:
                step()
                return
            except TrainingError:
                raise
            except Exception as err:
                verdict = failures.classify(err)
            if verdict.kind != "transient" or attempt == MAX_TRANSIENT_RETRIES:
                raise RuntimeFailure(self._redact(self._blame(verdict.reason)))
            self._sleep(failures.backoff(attempt))

    def _blame(self, reason: str) -> str:
        if self._service is not None and not hasattr(self, "_backend"):
            return f"training.backend: {self.ref} is not available to this instance: {reason}"
        return reason

    def _connect(self, reload: bool = False) -> None:
        if self.local:
            self._backend = self._factory.fake_backend(self._name)
            return
        if self._credentials is None or reload:
            self._credentials = resolve(self._credentials_source)
        if self._credentials is None:
            raise TrainingError(f"training.credentialsSecret: {self.ref} needs IBM Quantum credentials")
        self._tokens.add(self._credentials.token)
        self._service = self._factory.service(self._credentials)
        self._backend = self._factory.backend(self._service, self._name, self._spec.circuit.qubits)

    def _calibrate(self, repo_root: Path | None, given: Calibration | None) -> Calibration | None:
        """A fake backend runs under ``given``, else the repository's calibrations/<device>.json, else
        its packaged snapshot; an IBM backend under the service's current properties (``given`` is
        ignored: the hardware is what it is today). A malformed file is an error, never skipped."""
        if self.local:
            if given is not None:
                calibrations.apply(self._backend, given)
                return given
            return calibrations.for_fake_backend(self._backend, repo_root)
        properties = None
        with contextlib.suppress(Exception):  # a simulator or a backend without properties: none
            properties = self._backend.properties()
        if properties is None:
            return None
        return calibrations.from_properties(properties, self.device, getattr(self._backend, "num_qubits", None))

    def _open(self, resume: str | None) -> None:
        self.close()  # a session replaced (closed, or opened with credentials that were rotated) ends here
        mode = self._spec.training.execution_mode
        if mode is ExecutionMode.SESSION:
            self._mode = self._factory.session(self._backend, self._service, resume)
        elif mode is ExecutionMode.BATCH:
            self._mode = self._factory.batch(self._backend)
        else:
            self._mode = self._backend
        self._estimator = self._factory.estimator(self._mode)
        options = self._estimator.options
        if self.local:
            options.resilience_level = 0  # simulating mitigation locally triples the time and shows no device
            options.twirling.enable_gates = False
            options.twirling.enable_measure = False

    @property
    def session_id(self) -> str | None:
        value = getattr(self._mode, "session_id", None)
        return str(value) if value else None

    def transpile(self, circuit: Any, seed: int) -> Any:
        from qiskit.transpiler import generate_preset_pass_manager

        return generate_preset_pass_manager(1, backend=self._backend, seed_transpiler=seed).run(circuit)

    def run(self, isa: Any, observables: Any, values: np.ndarray, shots: int, seed: int) -> JobRun:
        transient = reopened = 0
        while True:
            try:
                return self._run_once(isa, observables, values, shots, seed)
            except Exception as err:
                verdict = failures.classify(err)
            if verdict.kind == "transient" and transient < MAX_TRANSIENT_RETRIES:
                self._sleep(failures.backoff(transient))
                transient += 1
            elif verdict.kind == "auth" and not self._reloaded and not self.local:
                self._reloaded = True  # the Secret may have been rotated: read it once more
                self._guarded(lambda: self._connect(reload=True))
                self._guarded(lambda: self._open(None))
            elif verdict.kind == "session-closed" and reopened < MAX_SESSION_REOPENS:
                reopened += 1
                self._guarded(lambda: self._open(None))
            else:
                raise RuntimeFailure(self._redact(verdict.reason))

    def _run_once(self, isa: Any, observables: Any, values: np.ndarray, shots: int, seed: int) -> JobRun:
        options = self._estimator.options
        options.default_shots = shots
        if self.local:
            options.simulator.seed_simulator = seed
        job = self._estimator.run([(isa, _observable_array(observables, values), values)])
        evs = np.asarray(job.result()[0].data.evs)
        return JobRun(evs, _job_id(job), 0.0 if self.local else _quantum_seconds(job), shots * int(evs.size))

    def _redact(self, text: str) -> str:
        for token in self._tokens:
            text = text.replace(token, "<hidden>")
        return text

    def close(self) -> None:
        closer = getattr(self._mode, "close", None)
        if callable(closer) and self._mode is not getattr(self, "_backend", None):
            with contextlib.suppress(Exception):
                closer()

    def detach(self) -> None:
        pass  # a session left open times out on IBM's side; the checkpoint keeps its id to reattach


def _job_id(job: Any) -> str | None:
    with contextlib.suppress(Exception):
        return str(job.job_id())
    return None


def _quantum_seconds(job: Any) -> float:
    with contextlib.suppress(Exception):
        return float(job.usage())
    return 0.0


def open_target(
    spec: QuantumModelSpec,
    credentials: CredentialsSource = None,
    resume_session: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
    *,
    repo_root: Path | None = None,
    calibration: Calibration | None = None,
) -> Target:
    """The backend ``spec`` trains on. ``repo_root`` is the spec repository (a fake backend takes its
    ``calibrations/<device>.json`` from there); ``calibration`` runs a fake backend under that snapshot."""
    ref = spec.training.backend
    if ref == "local:statevector":
        return StatevectorTarget(ref)
    if ref == "local:aer":
        return AerTarget(ref)
    return RuntimeTarget(spec, runtime_factory(), credentials, resume_session, sleep, repo_root, calibration)


def release_session(spec: QuantumModelSpec, session_id: str | None, credentials: CredentialsSource = None) -> bool:
    """Close the Runtime session a stopped training left open for its resume (the model was deleted).
    Local backends have none. Best effort: a session IBM already closed is no error."""
    if not session_id or not spec.training.backend.startswith("ibm:"):
        return False
    resolved = resolve(credentials)
    if resolved is None:
        return False
    factory = runtime_factory()
    try:
        factory.close_session(factory.service(resolved), session_id)
    except Exception:
        return False
    return True
