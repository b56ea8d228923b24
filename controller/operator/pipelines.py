"""QuantumPipelines: validated (with their model, when it exists) and given a status and conditions.
Running their steps comes in a later issue; a valid pipeline is Ready and waits for its triggers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from controller.api import API_VERSION, ConditionType
from controller.api.quantumpipeline import QuantumPipelineStatus
from controller.engine import status as engine_status
from controller.engine.documents import LoadedDocument, Problem
from controller.engine.validation import validate_documents
from controller.operator import checks
from controller.operator.kube import merge_diff, resource_path
from controller.operator.runtime import Runtime
from controller.operator.settings import REQUESTED_AT
from controller.operator.webhook import authored

log = logging.getLogger(__name__)


def review(pipeline: Mapping[str, Any], model: Mapping[str, Any] | None) -> list[Problem]:
    """The pipeline's problems, checked against its model's governance when the model exists."""
    meta = pipeline.get("metadata") or {}
    source = f"QuantumPipeline {meta.get('namespace')}/{meta.get('name')}"
    documents = [LoadedDocument(file=source, index=0, data=authored(pipeline), start=(0, 0))]
    if model is not None:
        documents.append(LoadedDocument(file="model", index=0, data=authored(model), start=(0, 0)))
    report = validate_documents(documents, in_files=False)
    return [p for p in report.problems if p.file == source]


def build_status(
    previous: Mapping[str, Any] | None,
    problems: list[Problem],
    model_found: bool,
    generation: int | None,
    requested_at: str | None,
    now: datetime,
) -> QuantumPipelineStatus:
    try:
        before = QuantumPipelineStatus.model_validate(previous or {})
    except ValidationError:
        before = QuantumPipelineStatus()
    errors = [f"{p.path}: {p.message}" if p.path else p.message for p in problems if p.severity == "error"]
    conditions = list(before.conditions)

    def put(kind: ConditionType, value: bool, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = engine_status.set_condition(
            conditions, kind, value, reason, message, generation=generation, now=now
        )

    if errors:
        phase, message = "Failed", "; ".join(errors)
        put(ConditionType.VALIDATED, False, "Invalid", message)
        put(ConditionType.READY, False, "Invalid", message)
        put(ConditionType.STALLED, True, "Invalid", message)
    elif not model_found:
        phase, message = "Pending", "waiting for its QuantumModel to exist in this namespace"
        put(ConditionType.VALIDATED, True, "Valid", "spec is valid")
        put(ConditionType.READY, False, "ModelNotFound", message)
        put(ConditionType.STALLED, False, "Progressing", "")
    else:
        phase, message = "Ready", "valid; runs start from its triggers"
        put(ConditionType.VALIDATED, True, "Valid", "spec is valid and keeps its model's governance")
        put(ConditionType.READY, True, "Ready", message)
        put(ConditionType.STALLED, False, "Progressing", "")
    put(ConditionType.RECONCILING, False, "Idle", "")
    return QuantumPipelineStatus(
        observed_generation=generation,
        phase=phase,
        message=message,
        conditions=engine_status.in_order(conditions),
        runs=before.runs,
        last_handled_reconcile_at=requested_at,
    )


class Pipelines:
    def __init__(self, runtime: Runtime, clock: Callable[[], datetime] | None = None) -> None:
        self.runtime = runtime
        self.clock = clock or (lambda: datetime.now(UTC))
        self.handled: dict[str, tuple[Any, ...]] = {}
        self.waiting: dict[tuple[str, str], dict[str, kopf.Body]] = {}  # (namespace, model) -> pipelines

    async def event(self, *, body: kopf.Body, uid: str, type: str | None, **_: Any) -> None:
        meta = body.get("metadata") or {}
        if type == "DELETED" or meta.get("deletionTimestamp"):
            self.handled.pop(uid, None)
            for waiting in self.waiting.values():
                waiting.pop(uid, None)
            return
        await self.reconcile(body, uid)

    async def model_seen(self, namespace: str, model: str) -> None:
        for uid, body in list(self.waiting.pop((namespace, model), {}).items()):
            self.handled.pop(uid, None)
            await self.reconcile(body, uid)

    async def reconcile(self, body: kopf.Body, uid: str) -> None:
        meta = body.get("metadata") or {}
        namespace, name = meta.get("namespace", ""), meta.get("name", "")
        generation = meta.get("generation")
        requested = (meta.get("annotations") or {}).get(REQUESTED_AT)
        key = (generation, requested)
        if self.handled.get(uid) == key:
            return
        model_name = (body.get("spec") or {}).get("model")
        model = await self.runtime.read(API_VERSION, "quantummodels", namespace, model_name) if model_name else None
        try:  # off the event loop: the model's OpenQASM ansatz is parsed here
            problems = await checks.run(lambda: review(body, model), checks.RECONCILE_BUDGET_SECONDS)
        except checks.CheckTimedOut as late:
            log.warning("%s/%s: %s; tried again at its next event", namespace, name, late)
            return
        new = build_status(body.get("status"), problems, model is not None, generation, requested, self.clock())
        patch = merge_diff(body.get("status") or {}, new.to_wire())
        if patch:
            path = resource_path(API_VERSION, "quantumpipelines", namespace, name, "status")
            await self.runtime.client.merge_patch(path, {"status": patch})
        self.handled[uid] = key
        if model is None and model_name:
            self.waiting.setdefault((namespace, model_name), {})[uid] = body
        self.runtime.metrics.reconciles.labels(
            kind="QuantumPipeline", result="invalid" if new.phase == "Failed" else "ok"
        ).inc()
