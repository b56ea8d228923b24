"""QuantumModel: a model's identity, how it is trained, how its versions are promoted, and its rules.

Field names and shapes follow DESIGN.md. Checks that need only one object live here (schema and
cross-field rules); rules that depend on governance policy live in ``controller.engine.governance``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, WithJsonSchema, field_validator, model_validator

from controller.api.cel import rule, rules
from controller.api.common import (
    BackendGlob,
    BackendRef,
    Cron,
    Days,
    DnsLabel,
    Duration,
    Email,
    SpecModel,
    check_repo_path,
    days,
    duration_seconds,
)
from controller.api.meta import Condition, ObjectMeta
from controller.api.packs import PackName
from controller.api.qasm import MAX_QASM_BYTES

DEFAULT_TRAINING_TIMEOUT = "6h"
MIN_TRAINING_TIMEOUT_SECONDS = 1.0
MAX_TRAINING_TIMEOUT_SECONDS = 7 * 24 * 3600.0  # 168h

BUILTIN_DATASETS = ("iris", "wine", "breast_cancer", "moons", "circles", "ad_hoc")
DATASET_SOURCE_PATTERN = r"^(builtin:(iris|wine|breast_cancer|moons|circles|ad_hoc)|file:[^\\]+\.csv)$"


def _check_dataset_source(value: str) -> str:
    kind, sep, rest = value.partition(":")
    if not sep or kind not in ("builtin", "file"):
        raise ValueError(f"{value!r} is not a dataset source: use builtin:<name> or file:<path/in/repo.csv>")
    if kind == "builtin":
        if rest not in BUILTIN_DATASETS:
            raise ValueError(f"unknown builtin dataset {rest!r}: choose one of {', '.join(BUILTIN_DATASETS)}")
        return value
    path = check_repo_path(rest)
    if not path.lower().endswith(".csv"):
        raise ValueError(f"{rest!r} is not a CSV file: file datasets end in .csv")
    return f"file:{path}"


DatasetSource = Annotated[
    str,
    AfterValidator(_check_dataset_source),
    WithJsonSchema({"type": "string", "pattern": DATASET_SOURCE_PATTERN}),
]


class Task(StrEnum):
    CLASSIFICATION = "classification"


class ReduceMethod(StrEnum):
    PCA = "pca"


class Reduce(SpecModel):
    """How to bring the features down to the qubit count."""

    method: ReduceMethod = ReduceMethod.PCA
    components: int = Field(ge=1, le=156)


class Dataset(SpecModel):
    model_config = rules(
        rule("self.source.startsWith('builtin:') || has(self.target)", "a file dataset needs target", ".target"),
    )

    source: DatasetSource
    target: str | None = Field(default=None, min_length=1, max_length=253)
    features: list[Annotated[str, Field(min_length=1, max_length=253)]] | None = Field(default=None, min_length=1)
    classes: list[int | str] | None = Field(default=None, min_length=2)
    test_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    seed: int = Field(default=42, ge=0, le=2**32 - 1)
    reduce: Reduce | None = None

    @model_validator(mode="after")
    def _file_needs_target(self) -> Dataset:
        if self.source.startswith("file:") and not self.target:
            raise ValueError("target: a file dataset names its label column in target")
        for name, items in (("features", self.features), ("classes", self.classes)):
            if items and len({str(i) for i in items}) != len(items):
                raise ValueError(f"{name}: duplicate entries")
        return self


class FeatureMapKind(StrEnum):
    ZZ = "ZZFeatureMap"
    Z = "ZFeatureMap"
    PAULI = "PauliFeatureMap"


class Entanglement(StrEnum):
    FULL = "full"
    LINEAR = "linear"
    REVERSE_LINEAR = "reverse_linear"
    CIRCULAR = "circular"
    PAIRWISE = "pairwise"
    SCA = "sca"


PAULI_WORD = r"^[XYZ]{1,3}$"


class FeatureMap(SpecModel):
    kind: FeatureMapKind = FeatureMapKind.ZZ
    reps: int = Field(default=1, ge=1, le=10)
    entanglement: Entanglement = Entanglement.LINEAR
    paulis: list[Annotated[str, Field(pattern=PAULI_WORD)]] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _paulis_only_for_pauli_map(self) -> FeatureMap:
        if self.paulis and self.kind is not FeatureMapKind.PAULI:
            raise ValueError("paulis: only a PauliFeatureMap takes paulis")
        return self


class AnsatzKind(StrEnum):
    REAL_AMPLITUDES = "RealAmplitudes"
    EFFICIENT_SU2 = "EfficientSU2"
    QASM = "QASM"


class Ansatz(SpecModel):
    model_config = rules(
        rule("self.kind != 'QASM' || has(self.qasm)", "a QASM ansatz needs qasm", ".qasm"),
        rule("self.kind == 'QASM' || !has(self.qasm)", "qasm is only for kind QASM", ".qasm"),
    )

    kind: AnsatzKind = AnsatzKind.REAL_AMPLITUDES
    reps: int = Field(default=2, ge=1, le=20)
    entanglement: Entanglement = Entanglement.LINEAR
    qasm: str | None = Field(default=None, min_length=1, max_length=MAX_QASM_BYTES)

    @model_validator(mode="after")
    def _qasm_matches_kind(self) -> Ansatz:
        if self.kind is AnsatzKind.QASM and not self.qasm:
            raise ValueError("qasm: an ansatz of kind QASM carries its OpenQASM 3 program in qasm")
        if self.kind is not AnsatzKind.QASM and self.qasm:
            raise ValueError("qasm: only an ansatz of kind QASM takes qasm")
        return self


OBSERVABLE_PATTERN = r"^(parity|[IXYZ]+)$"


class Circuit(SpecModel):
    model_config = rules(
        rule(
            "self.observable == 'parity' || size(self.observable) == self.qubits",
            "a Pauli observable has one letter per qubit",
            ".observable",
        ),
    )

    qubits: int = Field(ge=1, le=156)
    feature_map: FeatureMap = Field(default_factory=FeatureMap)
    ansatz: Ansatz = Field(default_factory=Ansatz)
    observable: str = Field(default="parity", pattern=OBSERVABLE_PATTERN)

    @model_validator(mode="after")
    def _observable_fits(self) -> Circuit:
        if self.observable != "parity" and len(self.observable) != self.qubits:
            raise ValueError(
                f"observable: {self.observable!r} has {len(self.observable)} letters for {self.qubits} qubits"
            )
        if self.ansatz.qasm:
            from controller.api.qasm import check_ansatz_qasm

            check_ansatz_qasm(self.ansatz.qasm, self.qubits)
        return self


class ExecutionMode(StrEnum):
    SESSION = "session"
    BATCH = "batch"
    JOB = "job"


class OptimizerKind(StrEnum):
    COBYLA = "COBYLA"
    SPSA = "SPSA"
    NELDER_MEAD = "NelderMead"
    L_BFGS_B = "L_BFGS_B"
    ADAM = "Adam"


GRADIENT_OPTIMIZERS = (OptimizerKind.L_BFGS_B, OptimizerKind.ADAM)


class Optimizer(SpecModel):
    kind: OptimizerKind = OptimizerKind.COBYLA
    max_iterations: int = Field(default=100, ge=1, le=100_000)
    learning_rate: float | None = Field(default=None, gt=0.0, le=10.0)
    tolerance: float | None = Field(default=None, gt=0.0, lt=1.0)


QUANTITY_PATTERN = r"^[0-9]{1,9}(\.[0-9]{1,6})?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$"
Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN, max_length=20)]


class TolerationOperator(StrEnum):
    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(SpecModel):
    key: str | None = Field(default=None, max_length=253)
    operator: TolerationOperator = TolerationOperator.EQUAL
    value: str | None = Field(default=None, max_length=63)
    effect: TaintEffect | None = None
    toleration_seconds: int | None = Field(default=None, ge=0, le=86_400 * 7)


class TrainingResources(SpecModel):
    """Where and with what a training runs when the operator runs it as a Kubernetes Job: the pod's
    CPU and memory (requested; memory also its limit), an optional node selector and tolerations (e.g.
    for GPU nodes running Aer's GPU simulator). The in-process executor ignores them."""

    cpu: Quantity | None = None
    memory: Quantity | None = None
    node_selector: dict[str, Annotated[str, Field(max_length=63)]] | None = Field(default=None, max_length=16)
    tolerations: list[Toleration] | None = Field(default=None, max_length=16)


class Training(SpecModel):
    model_config = rules(
        rule(
            "!self.backend.startsWith('ibm:') || has(self.credentialsSecret)",
            "an ibm: backend needs credentialsSecret",
            ".credentialsSecret",
        ),
    )

    backend: BackendRef = "local:aer"
    execution_mode: ExecutionMode = ExecutionMode.SESSION
    shots: int = Field(default=1024, ge=1, le=10_000_000)
    optimizer: Optimizer = Field(default_factory=Optimizer)
    seed: int = Field(default=7, ge=0, le=2**32 - 1)
    credentials_secret: DnsLabel | None = None
    schedule: Cron | None = None
    # Wall-clock time a training may run, summed over its resumes; then it stops (TrainingTimedOut).
    timeout: Duration = DEFAULT_TRAINING_TIMEOUT
    resources: TrainingResources | None = None

    @model_validator(mode="after")
    def _ibm_needs_credentials(self) -> Training:
        if self.backend.startswith("ibm:") and not self.credentials_secret:
            raise ValueError("credentialsSecret: an ibm: backend reads its token from a Secret named here")
        return self

    @model_validator(mode="after")
    def _timeout_bounded(self) -> Training:
        seconds = duration_seconds(self.timeout)
        if not MIN_TRAINING_TIMEOUT_SECONDS <= seconds <= MAX_TRAINING_TIMEOUT_SECONDS:
            raise ValueError(
                f"timeout: {self.timeout} is not between {MIN_TRAINING_TIMEOUT_SECONDS:g}s and "
                f"{MAX_TRAINING_TIMEOUT_SECONDS / 3600:g}h (7 days)"
            )
        return self


class Metric(StrEnum):
    ACCURACY = "accuracy"
    PRECISION = "precision"
    RECALL = "recall"
    F1 = "f1"
    LOSS = "loss"


class Gate(SpecModel):
    model_config = rules(
        rule("has(self.min) || has(self.max)", "a gate needs min or max"),
        rule("!has(self.min) || !has(self.max) || self.min <= self.max", "min must not exceed max", ".min"),
    )

    metric: Metric
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounded(self) -> Gate:
        if self.min is None and self.max is None:
            raise ValueError("a gate needs min or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min: {self.min} exceeds max {self.max}")
        return self


class PromotionPolicy(StrEnum):
    AUTO = "auto"
    MANUAL = "manual"


class Promotion(SpecModel):
    policy: PromotionPolicy = PromotionPolicy.AUTO
    gates: list[Gate] = Field(default_factory=list, max_length=32)
    beat_champion_by: float | None = Field(default=None, ge=0.0, le=1.0)
    required_approvals: int = Field(default=0, ge=0, le=32)
    pin: int | None = Field(default=None, ge=1)


class Enforcement(StrEnum):
    ENFORCE = "enforce"
    AUDIT = "audit"


class DataClassification(StrEnum):
    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"
    RESTRICTED = "restricted"


# A compliance regime is a pack: its name is a file in controller/packs (see controller.api.packs).
Compliance = PackName


class LawfulBasis(StrEnum):
    """Why the personal data may be processed (GDPR Art. 6(1))."""

    CONSENT = "consent"
    CONTRACT = "contract"
    LEGAL_OBLIGATION = "legal-obligation"
    VITAL_INTERESTS = "vital-interests"
    PUBLIC_TASK = "public-task"
    LEGITIMATE_INTERESTS = "legitimate-interests"


DEFAULT_BUDGET_WINDOW = "30d"


class Retention(SpecModel):
    max_versions: int = Field(ge=1, le=10_000)


class Governance(SpecModel):
    enforcement: Enforcement = Enforcement.ENFORCE
    data_classification: DataClassification = DataClassification.INTERNAL
    allowed_backends: list[BackendGlob] | None = Field(default=None, min_length=1)
    max_shots: int | None = Field(default=None, ge=1)
    qpu_budget_seconds: float | None = Field(default=None, ge=0)
    qpu_budget_window: Days | None = None  # the rolling window qpuBudgetSeconds counts over (default 30d)
    approvers: list[Email] = Field(default_factory=list, max_length=64)
    require_model_card: bool = False
    require_signed_approvals: bool = False
    # an approval by whoever authored the spec change that trained the version does not count
    separation_of_duties: bool = False
    compliance: list[Compliance] = Field(default_factory=list, max_length=16)
    retention: Retention | None = None
    lawful_basis: LawfulBasis | None = None  # with modelCard.intendedUse: the purpose and why it is lawful

    @property
    def budget_window(self) -> str:
        """The window ``qpuBudgetSeconds`` counts over, as written (``30d`` unless the spec says)."""
        return self.qpu_budget_window or DEFAULT_BUDGET_WINDOW

    @property
    def budget_window_days(self) -> int:
        return days(self.budget_window)

    @property
    def budget_window_text(self) -> str:
        """``30 days``, ``1 day``: the window as the budget's messages say it."""
        n = self.budget_window_days
        return f"{n} day{'s' if n != 1 else ''}"


class ModelCard(SpecModel):
    intended_use: str | None = Field(default=None, max_length=8192)
    limitations: str | None = Field(default=None, max_length=8192)
    ethical_considerations: str | None = Field(default=None, max_length=8192)
    training_data: str | None = Field(default=None, max_length=8192)
    caveats: str | None = Field(default=None, max_length=8192)


MIN_MONITORING_SECONDS = 60


class CalibrationCheck(SpecModel):
    """The champion's ESP on its own layout under today's calibration against its ESP at training."""

    max_esp_drop: float = Field(default=0.10, gt=0.0, le=1.0)  # relative drop


class ReplayCheck(SpecModel):
    """The champion re-scored on its test split under today's noise against the same replay under the
    calibration it was trained on."""

    max_accuracy_drop: float = Field(default=0.05, gt=0.0, le=1.0)  # absolute drop


class DataCheck(SpecModel):
    """file: datasets: each feature of the current data against the training data's summary (KS test)."""

    p_value: float = Field(default=0.01, gt=0.0, lt=1.0)
    min_effect: float = Field(default=0.1, gt=0.0, le=1.0)  # the KS statistic below which nothing moved


MAX_LIVE_WINDOW = 100_000


class LiveCheck(SpecModel):
    """Served models: the champion's live accuracy (its labelled feedback, read from the server that
    serves it) against its registered test accuracy, over the latest ``window`` labelled rows of the
    champion, once at least ``minSamples`` of them are labelled."""

    model_config = rules(
        rule(
            "!has(self.minSamples) || !has(self.window) || self.minSamples <= self.window",
            "monitoring.live.minSamples must not exceed its window",
            ".minSamples",
        ),
    )

    max_accuracy_drop: float = Field(default=0.05, gt=0.0, le=1.0)  # absolute drop
    min_samples: int = Field(default=100, ge=1, le=MAX_LIVE_WINDOW)
    window: int = Field(default=1000, ge=1, le=MAX_LIVE_WINDOW)

    @model_validator(mode="after")
    def _samples_within_window(self) -> LiveCheck:
        if self.min_samples > self.window:
            raise ValueError(f"minSamples {self.min_samples} exceeds the window of {self.window} rows")
        return self


class DriftAction(StrEnum):
    RETRAIN = "retrain"
    BLOCK_PROMOTION = "blockPromotion"
    ALERT = "alert"


class Monitoring(SpecModel):
    """How the champion is watched on drifting hardware and data (see docs/monitoring.md)."""

    model_config = rules(
        rule("duration(self.every) >= duration('60s')", "monitoring.every must be at least 1m", ".every"),
        rule(
            "!has(self.onDrift) || self.onDrift.all(a, self.onDrift.exists_one(b, b == a))",
            "monitoring.onDrift lists an action twice",
            ".onDrift",
        ),
    )

    every: Duration = "6h"
    calibration: CalibrationCheck | None = None
    replay: ReplayCheck | None = None
    data: DataCheck | None = None
    live: LiveCheck | None = None
    on_drift: list[DriftAction] = Field(default_factory=list, max_length=3)

    @field_validator("every")
    @classmethod
    def _at_least_a_minute(cls, every: str) -> str:
        if duration_seconds(every) < MIN_MONITORING_SECONDS:
            raise ValueError(f"{every!r} is under one minute: checks run at most once a minute")
        return every

    @field_validator("on_drift")
    @classmethod
    def _each_once(cls, actions: list[DriftAction]) -> list[DriftAction]:
        if len(set(actions)) != len(actions):
            raise ValueError("an action is listed twice")
        return actions

    @property
    def seconds(self) -> float:
        return duration_seconds(self.every)


# Kubernetes quantities as people write them for containers: cpu "500m" or "2", memory "512Mi" or "1G".
CPU_PATTERN = r"^([0-9]{1,6}m|[0-9]{1,4}(\.[0-9]{1,3})?)$"
MEMORY_PATTERN = r"^[0-9]{1,12}(Ki|Mi|Gi|Ti|k|M|G|T)?$"


class ResourceAmounts(SpecModel):
    cpu: str | None = Field(default=None, pattern=CPU_PATTERN)
    memory: str | None = Field(default=None, pattern=MEMORY_PATTERN)


class ServingResources(SpecModel):
    requests: ResourceAmounts | None = None
    limits: ResourceAmounts | None = None


class Serving(SpecModel):
    """The champion served in the cluster: the operator owns a Deployment and a Service running
    ``qmlops serve`` for this model (see docs/serving.md)."""

    replicas: int = Field(default=1, ge=0, le=64)
    resources: ServingResources | None = None


# Governance rules are refused at admission only under `enforcement: enforce`; under `audit` they are
# reported (qmlops validate, status.policy) but the object is admitted, as the validator does.
AUDIT_ONLY = "(has(self.governance) && has(self.governance.enforcement) && self.governance.enforcement == 'audit') "


class QuantumModelSpec(SpecModel):
    model_config = rules(
        rule(
            "!has(self.dataset.features) || has(self.dataset.reduce) || size(self.dataset.features) <= self.circuit.qubits",
            "more features than qubits: set dataset.reduce or list fewer features",
            ".dataset.features",
        ),
        rule(
            "!has(self.dataset.reduce) || self.dataset.reduce.components <= self.circuit.qubits",
            "dataset.reduce.components exceeds circuit.qubits",
            ".dataset.reduce.components",
        ),
        rule(
            "!has(self.promotion) || !has(self.promotion.requiredApprovals) || self.promotion.requiredApprovals == 0 "
            "|| (has(self.governance) && has(self.governance.approvers) "
            "&& self.promotion.requiredApprovals <= size(self.governance.approvers))",
            "promotion.requiredApprovals exceeds the approvers listed in governance.approvers",
            ".promotion.requiredApprovals",
        ),
        rule(
            AUDIT_ONLY + "|| !has(self.governance) || !has(self.governance.maxShots) || !has(self.training) "
            "|| !has(self.training.shots) || self.training.shots <= self.governance.maxShots",
            "training.shots exceeds governance.maxShots",
            ".training.shots",
        ),
        rule(
            AUDIT_ONLY + "|| !has(self.governance) || !has(self.governance.requireModelCard) "
            "|| !self.governance.requireModelCard "
            "|| (has(self.modelCard) && has(self.modelCard.intendedUse) && has(self.modelCard.limitations))",
            "governance.requireModelCard: modelCard needs intendedUse and limitations",
            ".modelCard",
        ),
    )

    owner: Email
    description: str | None = Field(default=None, max_length=4096)
    task: Task = Task.CLASSIFICATION
    dataset: Dataset
    circuit: Circuit
    training: Training = Field(default_factory=Training)
    promotion: Promotion = Field(default_factory=Promotion)
    governance: Governance = Field(default_factory=Governance)
    model_card: ModelCard | None = None
    monitoring: Monitoring | None = None
    serving: Serving | None = None
    suspend: bool = False

    @model_validator(mode="after")
    def _fits_together(self) -> QuantumModelSpec:
        problems = [p for p in _cross_field_problems(self) if p]
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _cross_field_problems(spec: QuantumModelSpec) -> list[str]:
    """Rules that relate fields of different sections. Each message starts with the field it blames."""
    ds, qubits = spec.dataset, spec.circuit.qubits
    out: list[str] = []
    if ds.features and not ds.reduce and len(ds.features) > qubits:
        out.append(
            f"dataset.features: {len(ds.features)} features do not fit {qubits} qubits; "
            "set dataset.reduce or list fewer features"
        )
    if ds.reduce and ds.reduce.components > qubits:
        out.append(f"dataset.reduce.components: {ds.reduce.components} exceeds circuit.qubits ({qubits})")
    approvers = set(spec.governance.approvers)
    if spec.promotion.required_approvals > len(approvers):
        out.append(
            f"promotion.requiredApprovals: {spec.promotion.required_approvals} approvals required but "
            f"governance.approvers lists {len(approvers)}"
        )
    if len(approvers) != len(spec.governance.approvers):
        out.append("governance.approvers: duplicate approver")
    return out


def dataset_feature_count(spec: QuantumModelSpec) -> int | None:
    """How many features reach the circuit, when the spec alone says so."""
    if spec.dataset.reduce:
        return spec.dataset.reduce.components
    return len(spec.dataset.features) if spec.dataset.features else None


# --- status ----------------------------------------------------------------------------------------


class Phase(StrEnum):
    PENDING = "Pending"
    BLOCKED = "Blocked"
    TRAINING = "Training"
    EVALUATING = "Evaluating"
    READY = "Ready"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


REVISION_PATTERN = r"^[A-Za-z0-9._/-]+@sha1:[0-9a-f]{40}$"


class SourceRef(SpecModel):
    """Where the spec came from: the Git revision it was read at, as ``main@sha1:<sha>``."""

    repository: str | None = None
    revision: str | None = Field(default=None, pattern=REVISION_PATTERN)
    path: str | None = None
    author: str | None = None


class TrainingStatus(SpecModel):
    run: str | None = None
    iteration: int | None = Field(default=None, ge=0)
    max_iterations: int | None = Field(default=None, ge=0)
    loss: float | None = None
    backend: str | None = None
    session_id: str | None = None
    started: str | None = None
    job: str | None = Field(default=None, max_length=63)  # the Kubernetes Job running it (the jobs executor)


class VersionRef(SpecModel):
    version: int = Field(ge=1)
    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    metrics: dict[str, float] = Field(default_factory=dict)
    commit: str | None = None
    backend: str | None = None


class Usage(SpecModel):
    """What the model's ledger recorded as spent in the budget's window (``window``, e.g. ``30d``)."""

    qpu_seconds: float = Field(default=0.0, ge=0)
    primitive_jobs: int = Field(default=0, ge=0)
    shots: int = Field(default=0, ge=0)
    window: Days | None = None


class RuleOutcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    ERROR = "error"  # the check could not be made (an unreadable registry)
    SKIP = "skip"


class PolicyResult(SpecModel):
    rule: str
    result: RuleOutcome
    field: str | None = None
    message: str = ""


class PolicySummary(SpecModel):
    pass_: int = Field(default=0, ge=0, alias="pass")
    fail: int = Field(default=0, ge=0)
    warn: int = Field(default=0, ge=0)
    error: int = Field(default=0, ge=0)
    skip: int = Field(default=0, ge=0)


class PolicyFloor(SpecModel):
    """A governance value a QuantumPolicy set or tightened: the field as the spec writes it, the
    effective value (as text), and the policy (``QuantumPolicy/<name>``)."""

    field: str
    value: str
    source: str


class PackReportSummary(SpecModel):
    """The compliance packs' report in short (the whole report: ``registry/<ns>/<model>/policy.json``):
    the packs checked, the counts of results and the rules that fail (``<pack>/<rule>``)."""

    packs: list[str] = Field(default_factory=list, max_length=64)
    summary: PolicySummary = Field(default_factory=PolicySummary)
    failing: list[str] = Field(default_factory=list, max_length=256)


class PolicyReport(SpecModel):
    results: list[PolicyResult] = Field(default_factory=list)
    summary: PolicySummary = Field(default_factory=PolicySummary)
    floors: list[PolicyFloor] = Field(default_factory=list)
    report: PackReportSummary | None = None


class MonitoringStatus(SpecModel):
    """The champion's last monitoring check (see spec.monitoring)."""

    last_check: str | None = None
    version: int | None = None
    verdict: str | None = None  # ok, drift, not-run, not-applicable
    esp: float | None = None  # the champion's ESP on its layout under today's calibration
    esp_at_training: float | None = None
    replay_accuracy: float | None = None  # its accuracy replayed under today's noise
    live_accuracy: float | None = None  # its accuracy on the labelled feedback of its server
    live_samples: int | None = None  # the labelled rows that figure is over
    champion_accuracy: float | None = None  # its test accuracy as registered
    drifted: list[str] = Field(default_factory=list)  # the checks that drifted


class QuantumModelStatus(SpecModel):
    observed_generation: int | None = Field(default=None, ge=0)
    phase: Phase | None = None
    message: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    source: SourceRef | None = None
    training: TrainingStatus | None = None
    latest_version: VersionRef | None = None
    champion: VersionRef | None = None
    usage: Usage | None = None
    policy: PolicyReport | None = None
    monitoring: MonitoringStatus | None = None
    last_handled_reconcile_at: str | None = None


class QuantumModel(SpecModel):
    api_version: Literal["qmlops.io/v1alpha1"] = "qmlops.io/v1alpha1"
    kind: Literal["QuantumModel"] = "QuantumModel"
    metadata: ObjectMeta
    spec: QuantumModelSpec
    status: QuantumModelStatus | None = None
