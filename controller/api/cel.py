"""CEL rules (``x-kubernetes-validations``) that travel with the types into the generated CRDs.

A rule sits next to the Python check that enforces the same thing, so the apiserver and
``qmlops validate`` refuse the same objects. Rules here only see the object they are attached to.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, JsonValue


def rules(*entries: dict[str, Any]) -> ConfigDict:
    """A model_config fragment carrying CEL rules into the model's JSON schema."""
    validations: list[JsonValue] = [dict(e) for e in entries]
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": validations})


def rule(expression: str, message: str, field_path: str | None = None, reason: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"rule": expression, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry
