"""QuantumPipeline: a workflow that produces and promotes versions of one model, started by triggers."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, model_validator

from controller.api.cel import rule, rules
from controller.api.common import BackendRef, Cron, DnsLabel, Duration, SpecModel, check_repo_path
from controller.api.meta import Condition, ObjectMeta
from controller.api.quantummodel import Metric


def _check_glob(value: str) -> str:
    check_repo_path(value.replace("**", "x").replace("*", "x").replace("?", "x"))
    return value


class GitChange(SpecModel):
    paths: list[Annotated[str, Field(min_length=1, max_length=1024)]] = Field(min_length=1)

    @model_validator(mode="after")
    def _paths_inside_repo(self) -> GitChange:
        for path in self.paths:
            _check_glob(path)
        return self


class Drift(SpecModel):
    metric: Metric = Metric.ACCURACY
    threshold: float = Field(gt=0.0, le=1.0)
    every: Duration = "24h"
    backend: BackendRef | None = None


class Trigger(SpecModel):
    """Exactly one of gitChange, schedule or drift."""

    model_config = rules(
        rule(
            "[has(self.gitChange), has(self.schedule), has(self.drift)].filter(x, x).size() == 1",
            "a trigger has exactly one of gitChange, schedule, drift",
        ),
    )

    git_change: GitChange | None = None
    schedule: Cron | None = None
    drift: Drift | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Trigger:
        set_ = [n for n in ("gitChange", "schedule", "drift") if getattr(self, _snake(n)) is not None]
        if len(set_) != 1:
            raise ValueError(f"a trigger has exactly one of gitChange, schedule, drift (found {set_ or 'none'})")
        return self


MATRIX_KEY_PATTERN = r"^[a-z][A-Za-z0-9]*(\.[a-z][A-Za-z0-9]*)+$"
MatrixValue = str | int | float | bool
MatrixKey = Annotated[str, Field(pattern=MATRIX_KEY_PATTERN)]
DEFAULT_MAX_COMBINATIONS = 64
MAX_COMBINATIONS_CEILING = 1024  # the largest maxCombinations a spec may ask for
MATRIX_PRODUCT_CEILING = 65_536  # the largest product a matrix may span before its exclusions are applied


class TrainStep(SpecModel):
    """Train the model once per cell: the cartesian product of ``matrix`` (spec path -> values), less
    the ``exclude`` entries (a cell is removed when it has every value an entry names), plus the
    ``include`` entries (each a cell of its own, when not already there). Without a matrix: one cell,
    the model's spec as committed."""

    matrix: dict[MatrixKey, Annotated[list[MatrixValue], Field(max_length=64)]] | None = Field(
        default=None, max_length=16
    )
    include: list[dict[MatrixKey, MatrixValue]] = Field(default_factory=list, max_length=64)
    exclude: list[dict[MatrixKey, MatrixValue]] = Field(default_factory=list, max_length=64)
    max_combinations: int = Field(default=DEFAULT_MAX_COMBINATIONS, ge=1, le=MAX_COMBINATIONS_CEILING)
    parallelism: int = Field(default=1, ge=1, le=64)

    @model_validator(mode="after")
    def _matrix_keys_are_spec_paths(self) -> TrainStep:
        from controller.api.paths import check_matrix

        if self.matrix:
            check_matrix(self.matrix)
        for what, entries in (("include", self.include), ("exclude", self.exclude)):
            for i, entry in enumerate(entries):
                if not entry:
                    raise ValueError(f"{what}[{i}]: names no spec path")
                check_matrix({key: [value] for key, value in entry.items()}, prefix=f"{what}[{i}]")
        product = 1
        for values in (self.matrix or {}).values():
            product *= len(values)
        if product > MATRIX_PRODUCT_CEILING:
            raise ValueError(
                f"matrix: its product has {product} combinations, more than the {MATRIX_PRODUCT_CEILING} "
                "any matrix may span before exclusions: split the sweep"
            )
        count = len(self.cells())
        if count > self.max_combinations:
            raise ValueError(
                f"matrix: {count} combinations exceed maxCombinations {self.max_combinations}: "
                "narrow the matrix, exclude cells, or raise maxCombinations"
            )
        return self

    def cells(self) -> list[dict[str, MatrixValue]]:
        """The cells to train, in a stable order: the product in the matrix's key order, then the
        includes. Each cell maps spec paths to values (an empty cell: the spec as committed)."""
        keys = list(self.matrix or {})
        combos: list[dict[str, MatrixValue]] = [{}]
        for key in keys:
            combos = [{**combo, key: value} for combo in combos for value in (self.matrix or {})[key]]
        kept = [c for c in combos if not any(_matches(c, entry) for entry in self.exclude)]
        for entry in self.include:
            if not any(_same_cell(entry, c) for c in kept):
                kept.append(dict(entry))
        return kept


def _same_value(a: MatrixValue, b: MatrixValue) -> bool:
    return type(a) is type(b) and a == b


def _matches(cell: dict[str, MatrixValue], entry: dict[str, MatrixValue]) -> bool:
    return all(key in cell and _same_value(cell[key], value) for key, value in entry.items())


def _same_cell(a: dict[str, MatrixValue], b: dict[str, MatrixValue]) -> bool:
    return a.keys() == b.keys() and _matches(a, b)


class EvaluateStep(SpecModel):
    """Score every candidate of the train step before it on the test split, on each backend (a fake
    device's noise, Aer, the exact statevector, or IBM hardware through the training's factory)."""

    backends: list[BackendRef] = Field(min_length=1, max_length=16)
    shots: int | None = Field(default=None, ge=1, le=10_000_000)  # default: the model's training.shots


class SelectMode(StrEnum):
    MAX = "max"
    MIN = "min"


class Aggregate(StrEnum):
    """How one candidate's figures over several backends become one: ``min`` picks the candidate that
    is best on its worst backend (with mode max; its best on the worst with mode min)."""

    MIN = "min"
    MEAN = "mean"


class SelectStep(SpecModel):
    metric: Metric = Metric.ACCURACY
    mode: SelectMode = SelectMode.MAX
    aggregate: Aggregate = Aggregate.MIN


class PromoteStep(SpecModel):
    """Promote the selected version through the model's gates and approvals; takes no settings."""


STEP_ACTIONS = ("train", "evaluate", "select", "promote")


class Step(SpecModel):
    model_config = rules(
        rule(
            "[has(self.train), has(self.evaluate), has(self.select), has(self.promote)].filter(x, x).size() == 1",
            "a step has exactly one of train, evaluate, select, promote",
        ),
    )

    name: DnsLabel
    # Bounded so that the apiserver's cost estimate of the dependsOn CEL rule stays within its budget.
    depends_on: list[DnsLabel] = Field(default_factory=list, max_length=64)
    retries: int = Field(default=0, ge=0, le=10)  # extra attempts of a cell or step after a transient failure
    retry_backoff: Duration = "30s"  # doubled after each attempt
    train: TrainStep | None = None
    evaluate: EvaluateStep | None = None
    select: SelectStep | None = None
    promote: PromoteStep | None = None

    @model_validator(mode="after")
    def _exactly_one_action(self) -> Step:
        actions = [a for a in STEP_ACTIONS if getattr(self, a) is not None]
        if len(actions) != 1:
            raise ValueError(
                f"step {self.name!r} has exactly one of train, evaluate, select, promote (found {actions or 'none'})"
            )
        return self

    @property
    def action(self) -> str:
        return next(a for a in STEP_ACTIONS if getattr(self, a) is not None)


class QuantumPipelineSpec(SpecModel):
    model_config = rules(
        rule(
            "self.steps.all(s, self.steps.exists_one(t, t.name == s.name))",
            "step names are unique",
            ".steps",
        ),
        rule(
            "self.steps.all(s, !has(s.dependsOn) || s.dependsOn.all(d, self.steps.exists(t, t.name == d)))",
            "dependsOn names a step that does not exist",
            ".steps",
        ),
    )

    model: DnsLabel
    triggers: list[Trigger] = Field(default_factory=list, max_length=32)
    steps: list[Step] = Field(min_length=1, max_length=64)
    fail_fast: bool = True  # a failed cell fails its step at once (false: the other cells still run)
    suspend: bool = False

    @model_validator(mode="after")
    def _steps_form_a_dag(self) -> QuantumPipelineSpec:
        from controller.api.paths import check_step_graph, check_step_inputs

        check_step_graph([(s.name, list(s.depends_on)) for s in self.steps])
        check_step_inputs([(s.name, s.action, list(s.depends_on)) for s in self.steps])
        return self


class RunPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"


class StepStatus(SpecModel):
    name: str
    phase: RunPhase
    message: str | None = None
    outputs: dict[str, str] = Field(default_factory=dict)


class PipelineRun(SpecModel):
    id: str
    trigger: str
    revision: str | None = None
    phase: RunPhase
    started: str | None = None
    finished: str | None = None
    steps: list[StepStatus] = Field(default_factory=list)


class QuantumPipelineStatus(SpecModel):
    observed_generation: int | None = Field(default=None, ge=0)
    phase: str | None = None
    message: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    runs: list[PipelineRun] = Field(default_factory=list)
    last_handled_reconcile_at: str | None = None


class QuantumPipeline(SpecModel):
    api_version: Literal["qmlops.io/v1alpha1"] = "qmlops.io/v1alpha1"
    kind: Literal["QuantumPipeline"] = "QuantumPipeline"
    metadata: ObjectMeta
    spec: QuantumPipelineSpec
    status: QuantumPipelineStatus | None = None


def _snake(camel: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in camel)
