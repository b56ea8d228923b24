"""Kubernetes object metadata and status conditions, as the resources carry them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field

from controller.api.common import DnsLabel, SpecModel


class ObjectMeta(SpecModel):
    """The metadata a spec file may carry. Fields the apiserver sets are accepted and ignored."""

    name: DnsLabel
    namespace: DnsLabel = "default"
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    # Set by the cluster; present when an object is read back from the apiserver.
    generate_name: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: int | None = None
    finalizers: list[str] | None = None
    managed_fields: list[dict[str, Any]] | None = None
    owner_references: list[dict[str, Any]] | None = None


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class ConditionType(StrEnum):
    """kstatus' Ready/Reconciling/Stalled, plus one condition per stage of a model's life."""

    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    VALIDATED = "Validated"
    COMPLIANT = "Compliant"
    TRAINED = "Trained"
    PROMOTED = "Promoted"


class Condition(SpecModel):
    """A condition in the Kubernetes convention (metav1.Condition)."""

    type: str = Field(min_length=1, max_length=316)
    status: ConditionStatus
    reason: str = Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = Field(default="", max_length=32768)
    observed_generation: int | None = Field(default=None, ge=0)
    last_transition_time: datetime
