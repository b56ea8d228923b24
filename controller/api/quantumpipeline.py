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


class TrainStep(SpecModel):
    matrix: dict[Annotated[str, Field(pattern=MATRIX_KEY_PATTERN)], list[MatrixValue]] | None = None
    parallelism: int = Field(default=1, ge=1, le=64)

    @model_validator(mode="after")
    def _matrix_keys_are_spec_paths(self) -> TrainStep:
        from controller.api.paths import check_matrix

        if self.matrix:
            check_matrix(self.matrix)
        return self


class EvaluateStep(SpecModel):
    backends: list[BackendRef] = Field(min_length=1)


class SelectMode(StrEnum):
    MAX = "max"
    MIN = "min"


class SelectStep(SpecModel):
    metric: Metric = Metric.ACCURACY
    mode: SelectMode = SelectMode.MAX


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
    suspend: bool = False

    @model_validator(mode="after")
    def _steps_form_a_dag(self) -> QuantumPipelineSpec:
        from controller.api.paths import check_step_graph

        check_step_graph([(s.name, list(s.depends_on)) for s in self.steps])
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
