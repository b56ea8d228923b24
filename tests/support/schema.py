"""Treat an object the way a Kubernetes apiserver treats it against one of our CRDs.

For the CRD tests and for the Kubernetes emulator the operator tests run against. On create and update
the apiserver prunes unknown fields, applies defaults, then validates (OpenAPI schema, list-map keys,
CEL ``x-kubernetes-validations``); :func:`admit` does the same in that order.

API
---
``version_schema(crd, version=None) -> dict``
    The ``openAPIV3Schema`` of ``version`` (default: the storage version).
``prune(obj, schema) -> obj``
    A copy without the fields the schema does not declare. At the root, ``apiVersion``, ``kind`` and
    ``metadata`` are kept whole (the apiserver handles ObjectMeta itself); under
    ``x-kubernetes-preserve-unknown-fields`` unknown fields are kept.
``apply_defaults(obj, schema) -> obj``
    A copy with every absent field that has a ``default`` filled in (a defaulted ``{}`` then gets its own
    nested defaults), and ``null`` in a non-nullable field replaced by its default or dropped.
``validate_against_crd(obj, crd, version=None) -> list[str]``
    Every problem as ``"spec.steps[1].name: message"``; empty when the object is valid. Validates the
    object as given: call :func:`admit` for the apiserver's whole sequence. CEL evaluation errors are
    problems too (the apiserver refuses the object when a rule cannot be evaluated).
``admit(obj, crd, version=None) -> tuple[dict, list[str]]``
    prune, default, validate: the object the apiserver would store and the problems that refuse it.
``structural_problems(schema) -> list[str]``
    Why a schema is not structural (Kubernetes' rules plus the keywords a CRD may not use).
``cel_rules(schema) -> list[CelRule]``
    Every CEL rule with the schema path it sits at and the node it applies to.
``evaluate_rule(rule, value, schema) -> bool``
    One CEL rule against one value (a node of the object), with values typed as the apiserver types
    them (``number`` fields are doubles even when written as ``1``). Raises :class:`CelError` when the
    rule does not compile or cannot be evaluated.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import celpy
import jsonschema  # type: ignore[import-untyped]
import jsonschema_rs
from celpy import celtypes

Schema = dict[str, Any]
ROOT_KEPT = ("apiVersion", "kind", "metadata")


# --- lookup ----------------------------------------------------------------------------------------


def version_schema(crd: dict[str, Any], version: str | None = None) -> Schema:
    versions = crd["spec"]["versions"]
    for v in versions:
        if (version is None and v.get("storage")) or v["name"] == version:
            schema: Schema = v["schema"]["openAPIV3Schema"]
            return schema
    raise KeyError(f"{crd['metadata']['name']} has no version {version or '(storage)'}")


def _preserves(schema: Schema) -> bool:
    return bool(schema.get("x-kubernetes-preserve-unknown-fields"))


# --- pruning and defaulting ------------------------------------------------------------------------


def prune(obj: Any, schema: Schema) -> Any:
    """A copy of ``obj`` without the fields ``schema`` does not declare (see the module docstring)."""
    pruned = _prune(obj, schema)
    if isinstance(obj, dict) and isinstance(pruned, dict):
        for key in ROOT_KEPT:
            if key in obj:
                pruned[key] = copy.deepcopy(obj[key])
    return pruned


def _prune(value: Any, schema: Schema) -> Any:
    if isinstance(value, dict):
        props: dict[str, Schema] = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        out = {}
        for key, sub in value.items():
            if key in props:
                out[key] = _prune(sub, props[key])
            elif isinstance(extra, dict):
                out[key] = _prune(sub, extra)
            elif _preserves(schema):
                out[key] = copy.deepcopy(sub)
        return out
    if isinstance(value, list) and "items" in schema:
        return [_prune(item, schema["items"]) for item in value]
    if value is None or isinstance(value, str | int | float):  # immutable: nothing to copy
        return value
    return copy.deepcopy(value)


def apply_defaults(obj: Any, schema: Schema) -> Any:
    """A copy of ``obj`` with the schema's defaults applied (see the module docstring)."""
    return _default(copy.deepcopy(obj), schema)


def prune_and_default(obj: Any, schema: Schema) -> Any:
    """``apply_defaults(prune(obj, schema), schema)``, without copying the pruned copy once more."""
    return _default(prune(obj, schema), schema)


def _default(value: Any, schema: Schema) -> Any:
    if isinstance(value, dict):
        props: dict[str, Schema] = schema.get("properties", {})
        for key, sub in props.items():
            if value.get(key, ...) is None and not sub.get("nullable"):
                del value[key]
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
        extra = schema.get("additionalProperties")
        for key in list(value):
            node = props.get(key) or (extra if isinstance(extra, dict) else None)
            if node is None:
                continue
            if value[key] is None and not node.get("nullable"):
                del value[key]
                continue
            value[key] = _default(value[key], node)
        return value
    if isinstance(value, list) and "items" in schema:
        return [_default(item, schema["items"]) for item in value]
    return value


def admit(obj: dict[str, Any], crd: dict[str, Any], version: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """What the apiserver does with an object on create or update: prune, default, validate."""
    schema = version_schema(crd, version)
    stored = prune_and_default(obj, schema)
    return stored, validate_against_crd(stored, crd, version)


# --- validation ------------------------------------------------------------------------------------


def validate_against_crd(obj: Any, crd: dict[str, Any], version: str | None = None) -> list[str]:
    schema = version_schema(crd, version)
    problems = _openapi_problems(obj, schema)
    problems += _list_map_problems(obj, schema, "")
    problems += _cel_problems(obj, schema, "")
    return problems


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        return False
    return "T" in value.upper()


_FORMATS = jsonschema.FormatChecker(formats=())
_FORMATS.checks("date-time")(_date_time)


def _as_draft4(schema: Any) -> Any:
    """Kubernetes' OpenAPI v3.0 dialect as JSON schema draft 4 (same exclusive bounds), with the
    x-kubernetes-int-or-string extension spelled out."""
    if isinstance(schema, list):
        return [_as_draft4(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _as_draft4(v) for k, v in schema.items() if k not in ("default", "x-kubernetes-validations")}
    if schema.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if out.get("required") == []:  # draft 4 wants at least one name; an empty list requires nothing
        del out["required"]
    return out


_VALIDATORS: dict[int, tuple[Schema, Any]] = {}
_FAST: dict[int, tuple[Schema, Any]] = {}


def _openapi_problems(obj: Any, schema: Schema) -> list[str]:
    fast = _fast_validator(schema)
    if fast is not None and fast.is_valid(obj):
        return []
    return sorted(f"{_path(e.absolute_path)}: {e.message}" for e in _validator(schema).iter_errors(obj))


def _fast_validator(schema: Schema) -> Any:
    """The same Draft 4 schema compiled by jsonschema-rs, which tells a valid object from an invalid
    one a hundred times faster (the harness validates every status write, as an apiserver does, but
    in Python); the problems of an invalid one are still python-jsonschema's words. None when the
    schema names a format other than date-time (the only one the harness checks)."""
    cached = _FAST.get(id(schema))
    if cached is None or cached[0] is not schema:
        draft4 = _as_draft4(schema)
        usable = _formats(draft4) <= {"date-time"}
        fast = jsonschema_rs.Draft4Validator(draft4, formats={"date-time": _date_time}, validate_formats=True)
        cached = _FAST[id(schema)] = (schema, fast if usable else None)
    return cached[1]


def _formats(schema: Any) -> set[str]:
    if isinstance(schema, list):
        return set().union(*(_formats(s) for s in schema))
    if not isinstance(schema, dict):
        return set()
    found = {schema["format"]} if isinstance(schema.get("format"), str) else set()
    return found.union(*(_formats(v) for k, v in schema.items() if k not in ("enum", "default", "example")))


def _validator(schema: Schema) -> Any:
    """One compiled validator per schema object: an apiserver compiles a CRD's schema once, not per
    write (rebuilding it was most of the harness's time per status write at a thousand objects). The
    schema is kept beside its validator so that its id is not reused while cached."""
    cached = _VALIDATORS.get(id(schema))
    if cached is None or cached[0] is not schema:
        cached = (schema, jsonschema.Draft4Validator(_as_draft4(schema), format_checker=_FORMATS))
        _VALIDATORS[id(schema)] = cached
    return cached[1]


def _walk(value: Any, schema: Schema, path: str) -> Iterator[tuple[Any, Schema, str]]:
    """Every (value, schema, path) pair of the object that the schema describes."""
    yield value, schema, path
    if isinstance(value, dict):
        props: dict[str, Schema] = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, sub in value.items():
            sub_schema = props.get(key) or (extra if isinstance(extra, dict) else None)
            if sub_schema is not None:
                yield from _walk(sub, sub_schema, f"{path}.{key}" if path else key)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            yield from _walk(item, schema["items"], f"{path}[{i}]")


def _list_map_problems(obj: Any, schema: Schema, path: str) -> list[str]:
    problems = []
    for value, node, where in _walk(obj, schema, path):
        if node.get("x-kubernetes-list-type") != "map" or not isinstance(value, list):
            continue
        keys = node.get("x-kubernetes-list-map-keys", [])
        seen: set[tuple[str, ...]] = set()
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                continue
            key = tuple(repr(item.get(k)) for k in keys)
            if key in seen:
                shown = ", ".join(f"{k}={item.get(k)!r}" for k in keys)
                problems.append(f"{where}[{i}]: Duplicate value: {shown}")
            seen.add(key)
    return problems


# --- CEL -------------------------------------------------------------------------------------------


class CelError(Exception):
    """A rule that does not compile or cannot be evaluated against a value."""


@dataclass(frozen=True)
class CelRule:
    path: str  # where the rule sits in the schema, like "spec.steps[]"
    rule: str
    message: str
    field_path: str | None
    node: Schema


def cel_rules(schema: Schema, path: str = "") -> list[CelRule]:
    found = [
        CelRule(path or "<root>", r["rule"], r.get("message", ""), r.get("fieldPath"), schema)
        for r in schema.get("x-kubernetes-validations", [])
    ]
    for name, sub in schema.get("properties", {}).items():
        found += cel_rules(sub, f"{path}.{name}" if path else name)
    if isinstance(schema.get("items"), dict):
        found += cel_rules(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        found += cel_rules(schema["additionalProperties"], f"{path}{{}}")
    return found


_ENV = celpy.Environment()


@functools.cache
def _program(rule: str) -> Any:
    try:
        return _ENV.program(_ENV.compile(rule))
    except Exception as err:  # celpy raises its own parse errors; all mean "does not compile"
        raise CelError(f"rule does not compile: {rule}: {err}") from err


def compile_rule(rule: str) -> None:
    _program(rule)


def to_cel(value: Any, schema: Schema) -> Any:
    """A JSON value as the apiserver hands it to CEL: typed by the schema, not by how it was written."""
    if value is None:
        return None
    kind = schema.get("type")
    if kind == "object" and isinstance(value, dict):
        props: dict[str, Schema] = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        out = {}
        for key, sub in value.items():
            sub_schema = props.get(key) or (extra if isinstance(extra, dict) else {})
            out[celtypes.StringType(key)] = to_cel(sub, sub_schema)
        return celtypes.MapType(out)
    if kind == "array" and isinstance(value, list):
        return celtypes.ListType([to_cel(v, schema.get("items", {})) for v in value])
    if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return celtypes.DoubleType(float(value))
    if kind == "string" and schema.get("format") == "date-time" and isinstance(value, str):
        return celtypes.TimestampType(value)
    return celpy.json_to_cel(value)


def evaluate_rule(rule: str, value: Any, schema: Schema) -> bool:
    program = _program(rule)
    try:
        result = program.evaluate({"self": to_cel(value, schema)})
    except Exception as err:  # celpy raises CELEvalError and Python errors alike at evaluation
        raise CelError(f"rule evaluation error: {rule}: {err}") from err
    if isinstance(result, Exception):
        raise CelError(f"rule evaluation error: {rule}: {result}")
    if not isinstance(result, celtypes.BoolType | bool):
        raise CelError(f"rule does not evaluate to a bool: {rule} gave {result!r}")
    return bool(result)


def _cel_problems(obj: Any, schema: Schema, path: str) -> list[str]:
    problems = []
    for value, node, where in _walk(obj, schema, path):
        for entry in node.get("x-kubernetes-validations", []):
            blamed = where + (entry.get("fieldPath") or "")
            try:
                ok = evaluate_rule(entry["rule"], value, node)
            except CelError as err:
                problems.append(f"{blamed or '<root>'}: {err}")
                continue
            if not ok:
                problems.append(f"{blamed or '<root>'}: {entry.get('message') or 'failed rule: ' + entry['rule']}")
    return problems


# --- structural schema ------------------------------------------------------------------------------

_FORBIDDEN = {
    "$ref": "references are not allowed: inline the schema",
    "$schema": "not allowed in a CRD schema",
    "id": "not allowed in a CRD schema",
    "definitions": "not allowed in a CRD schema",
    "$defs": "not allowed in a CRD schema",
    "dependencies": "not allowed in a CRD schema",
    "additionalItems": "not allowed in a CRD schema",
    "patternProperties": "not supported by the apiserver",
    "const": "not part of OpenAPI v3.0",
    "prefixItems": "not part of OpenAPI v3.0",
    "title": None,  # allowed
}
_JUNCTORS = ("allOf", "anyOf", "oneOf", "not")
_NOT_IN_JUNCTORS = ("description", "type", "default", "additionalProperties", "nullable")
_TYPES = {"object", "array", "string", "integer", "number", "boolean"}
_METADATA_FIELDS_ALLOWED = {"name", "generateName"}


def structural_problems(schema: Schema) -> list[str]:
    """Why ``schema`` is not a structural schema that the apiserver accepts; empty when it is."""
    problems = _structural(schema, "<root>", root=True)
    meta = schema.get("properties", {}).get("metadata")
    if meta is not None:
        extra = set(meta.get("properties", {})) - _METADATA_FIELDS_ALLOWED
        if extra or set(meta) - {"type", "description", "properties"}:
            problems.append("<root>.metadata: only restrictions on name and generateName are allowed")
    return problems


def _structural(node: Schema, where: str, root: bool = False) -> list[str]:
    out: list[str] = []
    for key, why in _FORBIDDEN.items():
        if key in node and why:
            out.append(f"{where}: {key}: {why}")
    kind = node.get("type")
    if kind is None and not (node.get("x-kubernetes-int-or-string") or _preserves(node)):
        out.append(f"{where}: no type (only int-or-string and preserve-unknown-fields nodes may omit it)")
    if kind is not None and kind not in _TYPES:
        out.append(f"{where}: type {kind!r} is not one of {sorted(_TYPES)}")
    if node.get("x-kubernetes-int-or-string") and kind is not None:
        out.append(f"{where}: x-kubernetes-int-or-string must not set a type")
    if node.get("x-kubernetes-preserve-unknown-fields") is False:
        out.append(f"{where}: x-kubernetes-preserve-unknown-fields: false is not allowed (leave it out)")
    if root and kind != "object":
        out.append(f"{where}: the root must be of type object")
    extra = node.get("additionalProperties")
    if extra is False:
        out.append(f"{where}: additionalProperties: false is not allowed (the apiserver prunes unknown fields)")
    if "properties" in node and extra is not None:
        out.append(f"{where}: properties and additionalProperties are mutually exclusive")
    if node.get("uniqueItems"):
        out.append(f"{where}: uniqueItems: true is not allowed (quadratic to check)")
    if kind == "array" and not isinstance(node.get("items"), dict):
        out.append(f"{where}: an array needs a single items schema")
    if kind != "object" and ("properties" in node or "additionalProperties" in node):
        out.append(f"{where}: properties on a node of type {kind!r}")
    for junctor in _JUNCTORS:
        for i, sub in enumerate(_as_list(node.get(junctor))):
            out += _junctor_problems(sub, f"{where}.{junctor}[{i}]", node)
    out += _list_map_schema_problems(node, where)
    for name, sub in node.get("properties", {}).items():
        out += _structural(sub, f"{where}.{name}")
    if isinstance(node.get("items"), dict):
        out += _structural(node["items"], f"{where}[]")
    if isinstance(extra, dict):
        out += _structural(extra, f"{where}{{}}")
    return out


def _as_list(value: Any) -> list[Schema]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _junctor_problems(sub: Schema, where: str, outer: Schema) -> list[str]:
    out = []
    int_or_string = outer.get("x-kubernetes-int-or-string") and set(sub) <= {"type"}
    for key in _NOT_IN_JUNCTORS:
        if key in sub and not (key == "type" and int_or_string):
            out.append(f"{where}: {key} is not allowed inside a logical junctor")
    for name in sub.get("properties", {}):
        if name not in outer.get("properties", {}):
            out.append(f"{where}.{name}: a field inside a junctor must also be declared outside it")
    return out


def _list_map_schema_problems(node: Schema, where: str) -> list[str]:
    if node.get("x-kubernetes-list-type") != "map":
        return []
    items = node.get("items", {})
    if items.get("type") != "object":
        return [f"{where}: a map list needs object items"]
    out = []
    for key in node.get("x-kubernetes-list-map-keys", []):
        sub = items.get("properties", {}).get(key)
        if sub is None:
            out.append(f"{where}: list-map key {key!r} is not a property of the items")
        elif key not in items.get("required", []) and "default" not in sub:
            out.append(f"{where}: list-map key {key!r} must be required or have a default")
    if not node.get("x-kubernetes-list-map-keys"):
        out.append(f"{where}: a map list needs x-kubernetes-list-map-keys")
    return out


# --- CEL cost ---------------------------------------------------------------------------------------

# The apiserver refuses a CRD whose CEL rules it estimates too costly: per rule (10,000,000) and in
# total across the schema, each rule weighted by how many times it can run (100,000,000). The figures
# below follow cel-go's estimator in shape, not to the unit: a list a rule iterates costs its maxItems
# per iteration, and an unbounded list is estimated from the 3 MiB request size limit.
PER_RULE_LIMIT = 10_000_000
PER_CRD_LIMIT = 100_000_000
UNBOUNDED = 3 * 1024 * 1024 // 2  # the fewest bytes a list element takes in JSON
STEP_COST = 20  # an iteration step: variable lookups, a field access, a short string comparison
_ITERATION = re.compile(r"(\w+)\s*\.\s*(all|exists_one|exists|filter|map)\s*\(")


def _find_array(node: Schema, name: str) -> Schema | None:
    """The first list or map called ``name`` under ``node`` (breadth first)."""
    queue = [node]
    while queue:
        current = queue.pop(0)
        for key, sub in current.get("properties", {}).items():
            if key == name and sub.get("type") in ("array", "object"):
                return dict(sub)
            queue.append(sub)
        if isinstance(current.get("items"), dict):
            queue.append(current["items"])
    return None


def _bound(node: Schema) -> int:
    if node.get("type") == "array":
        return int(node.get("maxItems", UNBOUNDED))
    return int(node.get("maxProperties", UNBOUNDED))


def rule_cost(rule: CelRule) -> int:
    """An estimate of one evaluation of ``rule``: the product of the sizes of the lists it iterates."""
    cost = STEP_COST
    for match in _ITERATION.finditer(rule.rule):
        target = rule.node if match.group(1) == "self" else None
        if target is None:
            target = _find_array(rule.node, match.group(1))
        if target is None:
            continue  # a variable bound by an enclosing macro over self: counted at that macro
        cost *= _bound(target)
    return cost


def rule_cardinality(schema: Schema, rule_path: str) -> int:
    """How many times a rule at ``rule_path`` can run: the product of the bounds of the lists above it."""
    node, count = schema, 1
    for part in re.findall(r"[^.\[\]{}]+|\[\]|\{\}", rule_path):
        if part == "[]":
            count *= _bound(node)
            node = node["items"]
        elif part == "{}":
            count *= _bound(node)
            node = node["additionalProperties"]
        elif part != "<root>":
            node = node["properties"][part]
    return count


def cost_problems(schema: Schema) -> list[str]:
    problems, total = [], 0
    for rule in cel_rules(schema):
        one = rule_cost(rule)
        total += one * rule_cardinality(schema, rule.path)
        if one > PER_RULE_LIMIT:
            problems.append(f"{rule.path}: {rule.rule}: estimated cost {one:,} exceeds {PER_RULE_LIMIT:,}")
    if total > PER_CRD_LIMIT:
        problems.append(f"estimated cost of all rules {total:,} exceeds {PER_CRD_LIMIT:,}")
    return problems
