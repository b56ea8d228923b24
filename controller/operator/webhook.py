"""Validating admission: the same validator as ``qmlops validate``, so that ``kubectl apply`` of a bad
spec is refused with the message ``qmlops validate`` prints for it (``field.path: message``).

The review runs on a check thread, never on kopf's event loop, and is answered within
``WEBHOOK_BUDGET_SECONDS``: a review that has not finished by then is denied (HTTP 503, "validation did
not finish within 8s"), before the apiserver's own ``timeoutSeconds`` would apply ``failurePolicy``.
See ``checks.py`` for what happens to the work behind a late review."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from controller.api import GROUP, VERSION
from controller.engine.documents import LoadedDocument
from controller.engine.quantities import ceiling_problems
from controller.engine.validation import validate_documents, validate_object
from controller.operator import checks

# The path kopf serves each handler at (``/<id>``): deploy/webhook.yaml names the same paths.
WEBHOOKS = {"quantummodels": "validate-quantummodels", "quantumpipelines": "validate-quantumpipelines"}
# What the apiserver sets or what the operator writes: not the author's to get right.
_SERVER_FIELDS = ("status",)
_SERVER_METADATA = ("managedFields", "resourceVersion", "uid", "generation", "creationTimestamp")


@dataclass(frozen=True)
class Review:
    errors: list[str]
    warnings: list[str]

    @property
    def allowed(self) -> bool:
        return not self.errors

    def message(self) -> str:
        return "\n".join(self.errors)


def review(obj: Mapping[str, Any], model: Mapping[str, Any] | None = None) -> Review:
    """The verdict on one object as the apiserver sends it, in ``qmlops validate``'s words; a pipeline
    is judged with its ``model`` (as read from the API) beside it: by the model's governance."""
    meta = obj.get("metadata") or {}
    source = f"{obj.get('kind', 'object')} {meta.get('namespace', 'default')}/{meta.get('name', '?')}"
    if model is None:
        problems = validate_object(authored(obj), source)
    else:
        documents = [
            LoadedDocument(file=source, index=0, data=authored(obj), start=(0, 0)),
            LoadedDocument(file="model", index=0, data=authored(model), start=(0, 0)),
        ]
        problems = [p for p in validate_documents(documents, in_files=False).problems if p.file == source]
    lines = [(p.severity, f"{p.path}: {p.message}" if p.path else p.message) for p in problems]
    return Review(
        errors=[text for severity, text in lines if severity == "error"],
        warnings=[text for severity, text in lines if severity != "error"],
    )


def within(verdict: Review, obj: Mapping[str, Any], ceiling: Mapping[str, str] | None) -> Review:
    """``verdict`` with a QuantumModel's ``training.resources`` above the cluster's ``ceiling`` (the
    operator's ``--job-max-cpu``, ``--job-max-memory``) added as errors, each naming its field."""
    if not ceiling or obj.get("kind") != "QuantumModel":
        return verdict
    over = [f"{path}: {message}" for path, message in ceiling_problems(obj.get("spec") or {}, ceiling)]
    return Review(errors=[*verdict.errors, *over], warnings=verdict.warnings)


def authored(obj: Mapping[str, Any]) -> dict[str, Any]:
    plain = copy.deepcopy(dict(obj))
    for key in _SERVER_FIELDS:
        plain.pop(key, None)
    meta = dict(plain.get("metadata") or {})
    for key in _SERVER_METADATA:
        meta.pop(key, None)
    plain["metadata"] = meta
    return plain


ModelReader = Callable[[str, str], Awaitable[Mapping[str, Any] | None]]


async def admit(
    body: kopf.Body,
    warnings: list[str],
    model: Mapping[str, Any] | None = None,
    ceiling: Mapping[str, str] | None = None,
    **_: Any,
) -> None:
    try:
        verdict = await checks.run(lambda: within(review(body, model), body, ceiling), checks.WEBHOOK_BUDGET_SECONDS)
    except checks.CheckTimedOut as late:
        raise kopf.AdmissionError(str(late), code=503) from None
    warnings.extend(verdict.warnings)
    if not verdict.allowed:
        raise kopf.AdmissionError(verdict.message(), code=422)


def register(
    registry: kopf.OperatorRegistry, read_model: ModelReader | None = None, ceiling: Mapping[str, str] | None = None
) -> None:
    """The admission handlers; with ``read_model``, a pipeline is judged by its model's governance (the
    model read from the API; a pipeline whose model does not exist yet is admitted with a warning and
    judged when the operator sees both); with ``ceiling``, a model asking for more ``training.resources``
    than the cluster allows is refused."""
    limits = dict(ceiling or {})

    async def admit_model(body: kopf.Body, warnings: list[str], **kwargs: Any) -> None:
        await admit(body, warnings, ceiling=limits, **kwargs)

    async def admit_pipeline(body: kopf.Body, warnings: list[str], **kwargs: Any) -> None:
        meta, spec = body.get("metadata") or {}, body.get("spec") or {}
        name = spec.get("model") if isinstance(spec, Mapping) else None
        model = None
        if read_model is not None and isinstance(name, str) and name:
            model = await read_model(str(meta.get("namespace") or "default"), name)
            if model is None:
                warnings.append(
                    f"spec.model: no QuantumModel {name!r} in this namespace yet: no run starts until it exists"
                )
        await admit(body, warnings, model=model, **kwargs)

    for plural, handler_id in WEBHOOKS.items():
        kopf.on.validate(
            GROUP,
            VERSION,
            plural,
            id=handler_id,
            operations=["CREATE", "UPDATE"],
            registry=registry,
        )(admit_pipeline if plural == "quantumpipelines" else admit_model)
