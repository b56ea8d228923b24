"""QuantumPolicy: a cluster-scoped floor under the governance of the QuantumModels it matches.

Only cluster admins write it (it is cluster-scoped); a model's spec may tighten each value, never
loosen it (``controller.engine.policy`` computes the effective values and where each came from).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from controller.api.cel import rule, rules
from controller.api.common import BackendGlob, Days, DnsLabel, SpecModel
from controller.api.meta import Condition
from controller.api.packs import PackName
from controller.api.quantummodel import DataClassification, Enforcement, Retention


class PolicyMatch(SpecModel):
    """Which models a policy applies to: all of the given criteria must hold (none given: every model)."""

    namespaces: list[DnsLabel] | None = Field(default=None, min_length=1, max_length=256)
    labels: dict[str, str] | None = Field(default=None, max_length=32)
    data_classification: list[DataClassification] | None = Field(default=None, min_length=1)


class Floor(SpecModel):
    """The least every matched model must declare; unset: no floor for that value."""

    # the apiserver refuses a floor that contradicts itself, as the types do (below)
    model_config = rules(
        rule(
            "!((has(self.requireSignedApprovals) && self.requireSignedApprovals)"
            " || (has(self.separationOfDuties) && self.separationOfDuties)"
            " || (has(self.pinRequiresApproval) && self.pinRequiresApproval))"
            " || (has(self.requiredApprovals) && self.requiredApprovals >= 1)",
            "a floor that asks for approvals needs requiredApprovals of at least 1",
            ".requiredApprovals",
        ),
    )

    enforcement: Enforcement | None = None
    allowed_backends: list[BackendGlob] | None = Field(default=None, min_length=1, max_length=64)
    max_shots: int | None = Field(default=None, ge=1)
    qpu_budget_seconds: float | None = Field(default=None, ge=0)
    qpu_budget_window: Days | None = None  # a spec may only lengthen it (a longer window counts more)
    required_approvals: int | None = Field(default=None, ge=0, le=32)
    require_signed_approvals: bool | None = None
    separation_of_duties: bool | None = None
    pin_requires_approval: bool | None = None
    retention: Retention | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Floor:
        needs = [
            name
            for name, value in (
                ("requireSignedApprovals", self.require_signed_approvals),
                ("separationOfDuties", self.separation_of_duties),
                ("pinRequiresApproval", self.pin_requires_approval),
            )
            if value
        ]
        if needs and not self.required_approvals:
            raise ValueError(
                f"floor.{needs[0]} asks for approvals but floor.requiredApprovals is "
                f"{self.required_approvals or 0}: set requiredApprovals to at least 1"
            )
        return self


class QuantumPolicySpec(SpecModel):
    match: PolicyMatch = Field(default_factory=PolicyMatch)
    floor: Floor = Field(default_factory=Floor)
    packs: list[PackName] = Field(default_factory=list, max_length=16)


class QuantumPolicyStatus(SpecModel):
    observed_generation: int | None = Field(default=None, ge=0)
    conditions: list[Condition] = Field(default_factory=list)


class PolicyMeta(SpecModel):
    """A cluster-scoped object's metadata: a name, no namespace."""

    name: DnsLabel
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    managed_fields: list[dict[str, object]] | None = None


class QuantumPolicy(SpecModel):
    api_version: Literal["qmlops.io/v1alpha1"] = "qmlops.io/v1alpha1"
    kind: Literal["QuantumPolicy"] = "QuantumPolicy"
    metadata: PolicyMeta
    spec: QuantumPolicySpec
    status: QuantumPolicyStatus | None = None
