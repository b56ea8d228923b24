"""Validation of spec documents: schema, cross-field, cross-document and governance problems.

Every problem is reported, not only the first, at the node it concerns. Messages are built here from
pydantic's error type and context rather than copied, because pydantic's messages and the inputs
they carry may quote a rejected value, and a rejected value may be a credential.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from controller.api import API_VERSION, GROUP, RESOURCES, QuantumModel, QuantumPipeline, limits
from controller.api.paths import alternatives, field_by_alias, model_in, wire_names
from controller.api.quantummodel import QuantumModelSpec, RuleOutcome
from controller.api.quantumpipeline import Step
from controller.api.quantumpolicy import QuantumPolicy
from controller.engine import governance, policy
from controller.engine.containment import OutsideWorkTree, inside_work_tree
from controller.engine.documents import (
    FieldPath,
    LoadedDocument,
    LoadedResource,
    Position,
    Problem,
    Severity,
    format_path,
    load_documents,
    looks_like_token,
)

__all__ = [
    "LoadedDocument",
    "LoadedResource",
    "Problem",
    "ValidationReport",
    "check_document",
    "exit_code",
    "governance_problems",
    "load_resources",
    "looks_like_token",
    "pipeline_limit_problems",
    "validate_documents",
    "validate_object",
    "validate_paths",
]

EXIT_OK, EXIT_VIOLATIONS, EXIT_UNUSABLE = 0, 1, 2

# Field names under which people put credentials. ``credentialsSecret`` matches on purpose: it names
# a Secret, and a token pasted there by mistake must not be echoed back.
CREDENTIAL_KEY = re.compile(
    r"(?i)(token|passw(or)?d|passwd|pwd|secret|api[_-]?key|private[_-]?key|access[_-]?key|credential"
    r"|bearer|authorization|session[_-]?key|signature)"
)
# Keys whose value is a credential itself, not the name of a Secret ("credentials-secret: ibm-quantum"
# in an annotation is fine; "ibm-token: ..." is not).
HOLDS_CREDENTIAL = re.compile(
    r"(?i)(token|passw(or)?d|passwd|pwd|api[_-]?key|private[_-]?key|access[_-]?key|bearer|authorization)"
)
_RELATIVE_PATH = re.compile(r"^([A-Za-z][\w-]*(?:\.[\w-]+)*): (.+)$", re.DOTALL)
_SPLIT_PROBLEMS = re.compile(r"; (?=[A-Za-z][\w-]*(?:\.[\w-]+)*: )")
HIDDEN = "<hidden>"
# Matrix keys that governance rules read, and the Training field each sets.
GOVERNED_SETTINGS = {"training.backend": "backend", "training.shots": "shots"}
# Spec paths that are the model's policy (and whose credentials it uses): a pipeline may not vary them.
POLICY_SECTIONS = ("governance", "modelCard", "promotion", "training.credentialsSecret")


# --- reports ---------------------------------------------------------------------------------------


@dataclass
class ValidationReport:
    problems: list[Problem] = field(default_factory=list)
    files: int = 0
    documents: int = 0
    resources: list[LoadedResource] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return exit_code(self.problems)

    def counts(self) -> tuple[int, int]:
        errors = sum(1 for p in self.problems if p.severity == "error")
        return errors, len(self.problems) - errors


def exit_code(problems: Iterable[Problem]) -> int:
    """0 clean (warnings allowed), 1 violations, 2 input that could not be read at all."""
    problems = list(problems)
    if any(p.unusable for p in problems):
        return EXIT_UNUSABLE
    return EXIT_VIOLATIONS if any(p.severity == "error" for p in problems) else EXIT_OK


# --- secrets ---------------------------------------------------------------------------------------


def is_credential_key(name: str | int) -> bool:
    return isinstance(name, str) and bool(CREDENTIAL_KEY.search(name))


def _string_leaves(value: Any, limit: int = 200) -> list[str]:
    out: list[str] = []
    stack = [value]
    while stack and len(out) < limit:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str | int | float) and not isinstance(item, bool):
            out.append(str(item))
    return out


def _scrub(message: str, value: Any, sensitive: bool) -> str:
    """``message`` without any rejected value that could be a credential."""
    leaves = _string_leaves(value)
    secret = [v for v in leaves if (sensitive and len(v) >= 3) or looks_like_token(v)]
    for text in sorted(set(secret), key=len, reverse=True):
        message = message.replace(repr(text), HIDDEN).replace(text, HIDDEN)
    return message


def _display_path(path: Sequence[str | int]) -> str:
    return format_path(HIDDEN if looks_like_token(p) else p for p in path)


# --- from a pydantic error to a problem --------------------------------------------------------------

_EXPECTS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
    "none_required": "null",
}


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    return {dict: "a mapping", list: "a list", str: "a string", int: "an integer", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _bounds_message(kind: str, ctx: dict[str, Any]) -> str | None:
    texts = {
        "greater_than_equal": "must be at least {ge}",
        "greater_than": "must be greater than {gt}",
        "less_than_equal": "must be at most {le}",
        "less_than": "must be less than {lt}",
        "string_too_long": "must be at most {max_length} characters",
        "too_short": "must have at least {min_length} item(s)",
        "too_long": "must have at most {max_length} items",
        "string_pattern_mismatch": "must match the pattern {pattern}",
        "literal_error": "must be {expected}",
        "enum": "must be one of {expected}",
        "multiple_of": "must be a multiple of {multiple_of}",
    }
    if kind == "string_too_short":
        return (
            "must not be empty"
            if ctx.get("min_length") == 1
            else "must be at least {min_length} characters".format(**ctx)
        )
    template = texts.get(kind)
    if template is None:
        return None
    try:
        return template.format(**ctx)
    except (KeyError, IndexError):
        return None


def _describe(error: ErrorDetails, sensitive: bool) -> str:
    """A message for one pydantic error that never quotes the rejected value unless it is our own
    validator's message, scrubbed of anything that could be a credential."""
    kind, ctx, value = error["type"], dict(error.get("ctx") or {}), error.get("input")
    if kind == "missing":
        return "required field is missing"
    if kind in _EXPECTS:
        return f"must be {_EXPECTS[kind]} (got {_kind_of(value)})"
    if kind == "finite_number":
        return "must be a finite number"
    bounded = _bounds_message(kind, ctx)
    if bounded is not None:
        return bounded
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return _scrub(str(ctx["error"]), value, sensitive)
    return _scrub(str(error.get("msg", "invalid value")), value, sensitive)


@dataclass
class _Target:
    """Where a pydantic error points in the document's data."""

    path: list[str | int]
    via_union: bool = False
    at_key: bool = False


def _target(data: Any, loc: tuple[str | int, ...], kind: str) -> _Target:
    node, target = data, _Target([])
    for i, part in enumerate(loc):
        if _has_child(node, part):
            target.path.append(part)
            node = node[part]
        elif kind == "missing" and i == len(loc) - 1:
            target.path.append(part)
        elif part == "[key]":
            target.at_key = True
        else:
            target.via_union = True  # a union member's name, like 'int' or 'str'
    return target


def _get(data: Any, path: Sequence[str | int]) -> Any:
    node = data
    for part in path:
        if not _has_child(node, part):
            return None
        node = node[part]
    return node


def _has_child(node: Any, part: str | int) -> bool:
    if isinstance(node, dict):
        return isinstance(part, str) and part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _resolve(data: Any, base: Sequence[str | int], dotted: str) -> list[str | int]:
    """``base`` extended by a dotted path from a validator's message (``dataset.features``,
    ``steps.sweep.dependsOn``, ``matrix.circuit.ansatz.reps``) onto the document's real nodes."""
    node, path, parts, i = _get(data, base), list(base), dotted.split("."), 0
    while i < len(parts):
        if isinstance(node, dict):
            # Longest first: a matrix key like "circuit.ansatz.reps" is one key with dots in it.
            key = next((".".join(parts[i:j]) for j in range(len(parts), i, -1) if ".".join(parts[i:j]) in node), None)
            if key is None:
                break
            path.append(key)
            node, i = node[key], i + len(key.split("."))
        elif isinstance(node, list):
            index = _item_named(node, parts[i])
            if index is None:
                break
            path.append(index)
            node, i = node[index], i + 1
        else:
            break
    return path + list(parts[i:])


def _item_named(items: list[Any], name: str) -> int | None:
    if name.isdigit() and int(name) < len(items):
        return int(name)
    return next((k for k, item in enumerate(items) if isinstance(item, dict) and item.get("name") == name), None)


# --- the fields a model has, for "did you mean" --------------------------------------------------------


def _item_type(annotation: Any) -> Any:
    for candidate in alternatives(annotation):
        origin = typing.get_origin(candidate)
        if origin is list:
            return typing.get_args(candidate)[0]
        if origin is dict:
            return typing.get_args(candidate)[1]
    return None


def _fields_at(root: type[BaseModel], path: Sequence[str | int]) -> list[str]:
    annotation: Any = root
    for part in path:
        model = model_in(annotation)
        if isinstance(part, str) and model is not None:
            found = field_by_alias(model, part)
            if found is None:
                return []
            annotation = found[1]
        else:
            annotation = _item_type(annotation)
    model = model_in(annotation)
    return wire_names(model) if model else []


def _unknown_field_message(root: type[BaseModel], path: Sequence[str | int], sensitive: bool) -> str:
    name = str(path[-1]) if path else "?"
    shown = HIDDEN if looks_like_token(name) else name
    if sensitive:
        return (
            f"unknown field {shown!r}; it looks like a credential: keep credentials in a Kubernetes Secret "
            "named by spec.training.credentialsSecret, never in the spec (value not shown)"
        )
    known = _fields_at(root, path[:-1])
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f"unknown field {shown!r} (did you mean {close[0]!r}?)"
    if known and len(known) <= 12:
        return f"unknown field {shown!r} (fields here: {', '.join(known)})"
    return f"unknown field {shown!r}"


# --- one document ----------------------------------------------------------------------------------


class _Reporter:
    """Collects the problems of one document, each at the position of its node."""

    def __init__(self, document: LoadedDocument) -> None:
        self.document = document
        self.problems: list[Problem] = []

    def at(
        self,
        path: Sequence[str | int],
        message: str,
        severity: Severity = "error",
        rule: str | None = None,
        at_key: bool = False,
    ) -> None:
        self.problems.append(
            Problem(
                file=self.document.file,
                line=(pos := self._position(path, at_key))[0],
                column=pos[1],
                path=_display_path(path),
                message=message,
                severity=severity,
                rule=rule,
            )
        )

    def _position(self, path: Sequence[str | int], at_key: bool) -> Position:
        document = self.document
        if not document.has(path):
            # A field that is not there: point at the key of the nearest enclosing node that is.
            existing = list(path)
            while existing and not document.has(existing):
                existing.pop()
            return document.key_position(existing) if existing else document.start
        value = _get(document.data, path)
        # A list or mapping is best named by its key; so is an empty value, which ruamel places at the
        # next token (often the next line).
        if at_key or value is None or isinstance(value, dict | list):
            return document.key_position(path)
        return document.position(path)


def _sensitive(path: Sequence[str | int]) -> bool:
    return any(is_credential_key(p) for p in path)


def _schema_problems(reporter: _Reporter, root: type[BaseModel], err: ValidationError) -> None:
    data = reporter.document.data
    unions: dict[tuple[str | int, ...], list[str]] = {}
    for error in err.errors(include_url=False):
        kind = error["type"]
        target = _target(data, tuple(error["loc"]), kind)
        sensitive = _sensitive(target.path)
        if kind == "extra_forbidden":
            reporter.at(target.path, _unknown_field_message(root, target.path, sensitive), at_key=True)
            continue
        message = _describe(error, sensitive)
        if target.via_union:
            unions.setdefault(tuple(target.path), []).append(message)
            continue
        if kind in ("value_error", "assertion_error"):
            _validator_problems(reporter, target.path, message, sensitive)
            continue
        hidden = sensitive and _has_value(data, target.path)
        reporter.at(target.path, _with_secret_note(message, hidden), at_key=target.at_key)
    for path, messages in unions.items():
        reporter.at(list(path), _union_message(messages))


def _union_message(messages: list[str]) -> str:
    expected = [m.removeprefix("must be ").split(" (got ")[0] for m in messages if m.startswith("must be ")]
    if len(expected) == len(messages):
        got = next((m.split(" (got ")[1].rstrip(")") for m in messages if " (got " in m), None)
        unique = list(dict.fromkeys(expected))
        return f"must be {' or '.join(unique)}" + (f" (got {got})" if got else "")
    return "; or ".join(dict.fromkeys(messages))


def _has_value(data: Any, path: Sequence[str | int]) -> bool:
    return _get(data, path) is not None


def _with_secret_note(message: str, sensitive: bool) -> str:
    return f"{message} (value not shown: the field looks like a credential)" if sensitive else message


def _validator_problems(reporter: _Reporter, base: list[str | int], message: str, sensitive: bool) -> None:
    """A validator's message may hold several problems, each starting with the field it blames
    relative to where the validator ran (``dataset.features: ...; promotion.requiredApprovals: ...``)."""
    for part in _SPLIT_PROBLEMS.split(message):
        match = _RELATIVE_PATH.match(part)
        if match:
            path = _resolve(reporter.document.data, base, match.group(1))
            text = match.group(2)
        else:
            path, text = base, part
        hidden = (sensitive or _sensitive(path)) and _has_value(reporter.document.data, path)
        reporter.at(path, _with_secret_note(text, hidden))


def _credential_annotations(reporter: _Reporter) -> None:
    """Labels and annotations are free-form, so the schema lets anything through: a credential there
    would be committed to Git."""
    metadata = reporter.document.data.get("metadata")
    if not isinstance(metadata, dict):
        return
    for section in ("labels", "annotations"):
        entries = metadata.get(section)
        if not isinstance(entries, dict):
            continue
        for key, value in entries.items():
            if value and (HOLDS_CREDENTIAL.search(key) or (is_credential_key(key) and looks_like_token(value))):
                reporter.at(
                    ["metadata", section, key],
                    "looks like a credential committed to Git: keep it in a Kubernetes Secret (value not shown)",
                    rule="no-credentials",
                )


def check_document(
    document: LoadedDocument, repo_root: str | None = None
) -> tuple[LoadedResource | None, list[Problem]]:
    """The resource a document declares, or the schema problems that stop it being one.

    With ``repo_root``, a ``file:`` dataset must exist there and have the columns the spec names."""
    reporter = _Reporter(document)
    data = document.data
    if not isinstance(data, dict):
        reporter.at([], f"a spec document is a mapping with apiVersion, kind, metadata and spec, not {_kind_of(data)}")
        return None, reporter.problems
    root = _resource_type(reporter, data)
    if root is None:
        return None, reporter.problems
    _credential_annotations(reporter)
    try:
        resource = _as_apiserver_would(root, data)
    except ValidationError as err:
        _schema_problems(reporter, root, err)
        return None, reporter.problems
    except RecursionError:
        reporter.at([], "nested too deeply to validate")
        return None, reporter.problems
    _pipeline_rules(reporter, resource)
    if isinstance(resource, QuantumModel):
        _machine_limits(reporter, resource)
    if repo_root is not None and isinstance(resource, QuantumModel):
        _dataset_file(reporter, resource, repo_root)
    if repo_root is not None:
        _calibration_files(reporter, resource, repo_root)
    if any(p.severity == "error" for p in reporter.problems):
        return None, reporter.problems
    return LoadedResource(document, resource), reporter.problems


def _as_apiserver_would(root: type[QuantumModel] | type[QuantumPipeline], data: Any) -> QuantumModel | QuantumPipeline:
    """Validate as JSON, strictly: like the API server, a quoted number is a string, not a number, and
    ``yes`` is not a boolean. (pydantic's lax Python mode would quietly turn "4" into 4.)"""
    try:
        text = json.dumps(data, allow_nan=True)
    except (TypeError, ValueError):
        return root.model_validate(data)
    return root.model_validate_json(text, strict=True)


def _resource_type(reporter: _Reporter, data: dict[str, Any]) -> type[QuantumModel] | type[QuantumPipeline] | None:
    api_version, kind = data.get("apiVersion"), data.get("kind")
    for name, value in (("apiVersion", api_version), ("kind", kind)):
        if value is None:
            expected = API_VERSION if name == "apiVersion" else " or ".join(RESOURCES)
            reporter.at([name], f"required field is missing: every resource states its {name} ({expected})")
        elif not isinstance(value, str):
            reporter.at([name], f"must be a string (got {_kind_of(value)})")
    if not isinstance(kind, str) or not isinstance(api_version, str):
        return None
    if kind == "QuantumModel":
        return QuantumModel
    if kind == "QuantumPipeline":
        return QuantumPipeline
    if not api_version.startswith(f"{GROUP}/"):
        reporter.at(
            ["kind"],
            f"not a qmlops resource (apiVersion {api_version[:80]}, kind {kind[:80]}): skipped",
            severity="warning",
        )
        return None
    close = difflib.get_close_matches(kind, list(RESOURCES), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    reporter.at(["kind"], f"unknown kind {kind[:80]!r}{hint}: {GROUP} has {' and '.join(RESOURCES)}")
    return None


def _pipeline_rules(reporter: _Reporter, resource: QuantumModel | QuantumPipeline) -> None:
    """A pipeline sweeps training settings, never the model's governance."""
    if not isinstance(resource, QuantumPipeline):
        return
    for i, step in enumerate(resource.spec.steps):
        for path, key in _swept_keys(step):
            section = next((s for s in POLICY_SECTIONS if key == s or key.startswith(s + ".")), None)
            if section is not None:
                reporter.at(
                    ["spec", "steps", i, "train", *path],
                    f"a pipeline cannot vary {section}: it is the model's policy, changed by pull request",
                    at_key=True,
                )


def _swept_keys(step: Step) -> list[tuple[FieldPath, str]]:
    """Every spec path a train step sets, where it is written: matrix keys, include and exclude entries."""
    if step.train is None:
        return []
    found: list[tuple[FieldPath, str]] = [(("matrix", key), key) for key in step.train.matrix or {}]
    for what, entries in (("include", step.train.include), ("exclude", step.train.exclude)):
        found += [((what, j, key), key) for j, entry in enumerate(entries) for key in entry]
    return found


def repo_root_of(file: str) -> str:
    """The Git work tree holding ``file`` (where ``file:`` datasets are found); the current directory
    when it is in none."""
    here = os.path.dirname(os.path.abspath(file))
    while True:
        if os.path.exists(os.path.join(here, ".git")):
            return here
        parent = os.path.dirname(here)
        if parent == here:
            return os.getcwd()
        here = parent


def _dataset_file(reporter: _Reporter, model: QuantumModel, repo_root: str) -> None:
    dataset = model.spec.dataset
    if not dataset.source.startswith("file:"):
        return
    relative = dataset.source.removeprefix("file:")
    try:
        path = str(inside_work_tree(repo_root, relative))
    except OutsideWorkTree as err:
        reporter.at(["spec", "dataset", "source"], f"file:{relative} {err.reason}")
        return
    if not os.path.isfile(path):
        reporter.at(["spec", "dataset", "source"], f"no file {relative} in the repository ({repo_root})")
        return
    columns = _csv_header(path)
    if columns is None:
        reporter.at(["spec", "dataset", "source"], f"{relative} is not a readable UTF-8 CSV file with a header row")
        return
    named = [("target", dataset.target)] + [(i, f) for i, f in enumerate(dataset.features or [])]
    for where, column in named:
        if column is not None and column not in columns:
            close = difflib.get_close_matches(column, columns, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (columns: {', '.join(columns[:20])})"
            path_ = ["spec", "dataset", "target"] if where == "target" else ["spec", "dataset", "features", where]
            reporter.at(path_, f"{relative} has no column {column!r}{hint}")
    too_large = _dataset_size(path, dataset.source)
    if too_large is not None:
        reporter.at(["spec", "dataset", "source"], too_large)


def used_backends(resource: QuantumModel | QuantumPipeline) -> list[tuple[list[str | int], str]]:
    """Every backend a spec makes its model run on, with where the spec names it: a model's training
    backend; a pipeline's drift triggers' and evaluate steps' backends and the ``training.backend``
    values of its train matrices."""
    if isinstance(resource, QuantumModel):
        return [(["spec", "training", "backend"], resource.spec.training.backend)]
    found: list[tuple[list[str | int], str]] = []
    for t, trigger in enumerate(resource.spec.triggers):
        if trigger.drift is not None and trigger.drift.backend is not None:
            found.append((["spec", "triggers", t, "drift", "backend"], trigger.drift.backend))
    for i, step in enumerate(resource.spec.steps):
        if step.evaluate is not None:
            for j, backend in enumerate(step.evaluate.backends):
                found.append((["spec", "steps", i, "evaluate", "backends", j], backend))
        if step.train is not None:
            key = "training.backend"
            for k, value in enumerate((step.train.matrix or {}).get(key, [])):
                found.append((["spec", "steps", i, "train", "matrix", key, k], str(value)))
            for k, entry in enumerate(step.train.include):
                if key in entry:
                    found.append((["spec", "steps", i, "train", "include", k, key], str(entry[key])))
    return found


def _calibration_files(reporter: _Reporter, resource: QuantumModel | QuantumPipeline, repo_root: str) -> None:
    """A fake device's ``calibrations/<device>.json`` in the repository is the calibration it trains,
    is evaluated and is monitored under: checked here, field by field (see training/calibration.py),
    for every fake device the spec uses (each file once, reported where the spec first names it)."""
    seen: set[str] = set()
    for where, backend in used_backends(resource):
        kind, _, name = backend.partition(":")
        if kind != "fake" or name in seen or not re.fullmatch(r"[a-z0-9_]{1,64}", name):
            continue  # a matrix value that is no device name is the matrix's own problem
        seen.add(name)
        _calibration_file(reporter, where, name, repo_root)


def _calibration_file(reporter: _Reporter, where: list[str | int], name: str, repo_root: str) -> None:
    from controller.api.devices import fake_device_qubits

    device = f"fake_{name}"
    relative = f"calibrations/{device}.json"
    try:
        path = inside_work_tree(repo_root, relative)
    except OutsideWorkTree as err:
        reporter.at(where, f"{relative} {err.reason}")
        return
    if not path.is_file():
        return
    qubits = fake_device_qubits(name)
    from controller.engine.training.calibration import CalibrationError, parse

    try:
        raw = path.read_bytes()
        parse(raw, relative, device, qubits)
    except CalibrationError as err:
        reporter.at(where, f"the calibration it runs under is refused: {err}")
    except OSError as err:
        reporter.at(where, f"{relative} cannot be read: {err.strerror}")


def _csv_header(path: str) -> list[str] | None:
    import csv

    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            first = handle.readline(64 * 1024)
    except (OSError, UnicodeDecodeError):
        return None
    row = next(csv.reader([first]), None)
    return [c.strip() for c in row] if row else None


# --- limits from the machine ---------------------------------------------------------------------------


def _machine_limits(reporter: _Reporter, model: QuantumModel) -> None:
    """What the spec asks of the machine: the simulator's memory or the device's qubits, and the
    shots of the whole training (controller/api/limits.py)."""
    spec = model.spec
    problem = limits.qubit_problem(spec.training.backend, spec.circuit.qubits)
    if problem is not None:
        reporter.at(["spec", "circuit", "qubits"], problem)
    problem = limits.shots_problem(spec)
    if problem is not None:
        reporter.at(["spec", "training"], problem)


# Matrix keys that change what a training asks of the machine.
LIMITED_SETTINGS = ("circuit.qubits", "training.backend", "training.shots", "training.optimizer.maxIterations")


def pipeline_limit_problems(resource: LoadedResource, models: dict[tuple[str, str], QuantumModel]) -> list[Problem]:
    """A pipeline runs its model elsewhere and otherwise: every backend it evaluates on must run the
    model's qubits, and every value its matrix sweeps must keep the training within the limits."""
    pipeline = resource.resource
    if not isinstance(pipeline, QuantumPipeline):
        return []
    model = models.get((resource.namespace, pipeline.spec.model))
    if model is None:
        return []
    spec, out = model.spec, []
    for path, backend in _pipeline_backends(pipeline):
        problem = limits.qubit_problem(backend, spec.circuit.qubits)
        if problem is not None:
            out.append(_problem_at(resource.document, path, f"the model's circuit.qubits on {backend}: {problem}"))
    for i, step in enumerate(pipeline.spec.steps):
        for key, values in ((step.train.matrix or {}) if step.train else {}).items():
            if key not in LIMITED_SETTINGS:
                continue
            for j, value in enumerate(values):
                varied = _varied(spec, key, value)
                if varied is None:
                    continue
                found = limits.qubit_problem(varied.training.backend, varied.circuit.qubits)
                found = found or limits.shots_problem(varied)
                if found is not None:
                    path = ("spec", "steps", i, "train", "matrix", key, j)
                    out.append(_problem_at(resource.document, path, found))
    return out


def _varied(spec: QuantumModelSpec, key: str, value: Any) -> QuantumModelSpec | None:
    """``spec`` with the matrix value at ``key`` (a value the schema refuses is reported elsewhere)."""
    wire = spec.to_wire()
    node = wire
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    try:
        return QuantumModelSpec.model_validate(wire)
    except ValidationError:
        return None


def _dataset_size(path: str, source: str) -> str | None:
    """Why the dataset file is more than a training may load, counted as it is read (the reader stops
    at the first byte or row over the bound); None when it fits. Unreadable content is the trainer's to
    report."""
    import csv
    from pathlib import Path

    try:
        for _ in limits.csv_rows(Path(path), source):
            pass
    except limits.DatasetTooLarge as err:
        return str(err)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return None


# --- several documents -------------------------------------------------------------------------------


def _cross_document(resources: list[LoadedResource]) -> tuple[list[LoadedResource], list[Problem]]:
    """Duplicate resources and pipelines that name a model not among the documents."""
    kept: list[LoadedResource] = []
    problems: list[Problem] = []
    seen: dict[tuple[str, str, str], LoadedResource] = {}
    for res in resources:
        key = (res.kind, res.namespace, res.name)
        if key in seen:
            first = seen[key]
            line = first.document.key_position(["metadata", "name"])[0]
            problems.append(
                _problem_at(
                    res.document,
                    ["metadata", "name"],
                    f"duplicate {res.kind} {res.namespace}/{res.name}: also defined in {first.file}:{line}",
                )
            )
            continue
        seen[key] = res
        kept.append(res)
    models = {(r.namespace, r.name) for r in kept if isinstance(r.resource, QuantumModel)}
    promoting: dict[tuple[str, str], LoadedResource] = {}
    for res in kept:
        if not isinstance(res.resource, QuantumPipeline):
            continue
        target = (res.namespace, res.resource.spec.model)
        if models and target not in models:  # the repository's models are here: this one is not among them
            problems.append(
                _problem_at(
                    res.document,
                    ["spec", "model"],
                    f"no QuantumModel {res.resource.spec.model!r} in namespace {res.namespace!r} "
                    "among the validated documents",
                )
            )
        promote = next((i for i, s in enumerate(res.resource.spec.steps) if s.promote is not None), None)
        if promote is None:
            continue
        other = promoting.setdefault(target, res)
        if other is not res:
            line = other.document.key_position(["metadata", "name"])[0]
            problems.append(
                _problem_at(
                    res.document,
                    ["spec", "steps", promote, "promote"],
                    f"QuantumPipeline {other.namespace}/{other.name} ({other.file}:{line}) promotes model "
                    f"{target[1]!r} already: one pipeline promotes a model",
                )
            )
    return kept, problems


def _problem_at(
    document: LoadedDocument,
    path: Sequence[str | int],
    message: str,
    severity: Severity = "error",
    rule: str | None = None,
) -> Problem:
    reporter = _Reporter(document)
    reporter.at(path, message, severity, rule)
    return reporter.problems[0]


def _schema(documents: Iterable[LoadedDocument], in_files: bool) -> tuple[list[LoadedResource], list[Problem]]:
    resources: list[LoadedResource] = []
    problems: list[Problem] = []
    for document in documents:
        resource, found = check_document(document, repo_root_of(document.file) if in_files else None)
        problems.extend(found)
        if resource is not None:
            resources.append(resource)
    kept, cross = _cross_document(resources)
    return kept, problems + cross


def load_resources(paths: Sequence[str | os.PathLike[str]]) -> tuple[list[LoadedResource], list[Problem]]:
    """The resources under ``paths`` that pass schema validation, and every problem found on the way
    (without governance: see :func:`governance_problems`)."""
    documents, problems, _ = load_documents(paths)
    resources, found = _schema(documents, in_files=True)
    return resources, sorted(problems + found, key=Problem.sort_key)


# --- governance as problems --------------------------------------------------------------------------


def _field_path(dotted: str) -> list[str | int]:
    return list(dotted.split("."))


def _governance_problem(
    document: LoadedDocument, spec: QuantumModelSpec, rule: str, outcome: RuleOutcome, path: FieldPath, text: str
) -> Problem | None:
    if outcome not in (RuleOutcome.FAIL, RuleOutcome.WARN):
        return None
    if outcome is RuleOutcome.FAIL and governance.enforced(spec):
        return _problem_at(document, path, f"blocked by governance rule {rule}: {text}", "error", rule)
    mode = "audit" if outcome is RuleOutcome.FAIL else "advice"
    return _problem_at(document, path, f"governance rule {rule} ({mode}): {text}", "warning", rule)


def governance_problems(
    resource: LoadedResource,
    models: dict[tuple[str, str], QuantumModel],
    policies: Sequence[QuantumPolicy] = (),
) -> list[Problem]:
    """Governance results as problems: a model's own rules (with the floors of the QuantumPolicies
    that match it), and a pipeline judged by its model's rules for every backend it evaluates on and
    every training value it sweeps."""
    found: list[Problem | None] = []
    if isinstance(resource.resource, QuantumModel):
        meta = resource.resource.metadata
        spec = policy.effective(resource.resource.spec, meta.namespace, meta.labels, list(policies)).spec
        for result in governance.evaluate(spec).results:
            path = tuple(_field_path(result.field or "spec"))
            found.append(_governance_problem(resource.document, spec, result.rule, result.result, path, result.message))
    else:
        model = models.get((resource.namespace, resource.resource.spec.model))
        if model is not None:
            found.extend(_pipeline_governance(resource.document, resource.resource, model.spec))
    return [p for p in found if p is not None]


def _pipeline_backends(pipeline: QuantumPipeline) -> list[tuple[FieldPath, str]]:
    uses: list[tuple[FieldPath, str]] = []
    for i, step in enumerate(pipeline.spec.steps):
        if step.evaluate:
            uses += [(("spec", "steps", i, "evaluate", "backends", j), b) for j, b in enumerate(step.evaluate.backends)]
    for i, trigger in enumerate(pipeline.spec.triggers):
        if trigger.drift and trigger.drift.backend:
            uses.append((("spec", "triggers", i, "drift", "backend"), trigger.drift.backend))
    return uses


def _pipeline_governance(
    document: LoadedDocument, pipeline: QuantumPipeline, spec: QuantumModelSpec
) -> list[Problem | None]:
    out: list[Problem | None] = []
    for path, backend in _pipeline_backends(pipeline):
        for result in governance.evaluate_backend(spec, backend):
            out.append(_governance_problem(document, spec, result.rule, result.result, path, result.message))
    out.extend(_matrix_governance(document, pipeline, spec))
    return out


def _matrix_governance(
    document: LoadedDocument, pipeline: QuantumPipeline, spec: QuantumModelSpec
) -> list[Problem | None]:
    """Each swept training value, put into the model spec on its own, must not break a rule that the
    spec itself keeps (policy sections cannot be swept at all: see ``_pipeline_rules``)."""
    base = {r.rule for r in governance.evaluate(spec).results if r.result is RuleOutcome.FAIL}
    out: list[Problem | None] = []
    for i, step in enumerate(pipeline.spec.steps):
        if step.train is None:
            continue
        swept: list[tuple[FieldPath, str, Any]] = [
            (("matrix", key, j), key, value)
            for key, values in (step.train.matrix or {}).items()
            for j, value in enumerate(values)
        ]
        swept += [
            (("include", j, key), key, value)
            for j, entry in enumerate(step.train.include)
            for key, value in entry.items()
        ]
        for where, key, value in swept:
            setting = GOVERNED_SETTINGS.get(key)
            if setting is None:
                continue
            varied = spec.model_copy(update={"training": spec.training.model_copy(update={setting: value})})
            for result in governance.evaluate(varied).results:
                if result.result is RuleOutcome.FAIL and result.rule not in base:
                    path = ("spec", "steps", i, "train", *where)
                    out.append(_governance_problem(document, spec, result.rule, result.result, path, result.message))
    return out


# --- entry points ------------------------------------------------------------------------------------


def validate_documents(
    documents: Sequence[LoadedDocument],
    with_governance: bool = True,
    in_files: bool = True,
    policies: Sequence[QuantumPolicy] = (),
) -> ValidationReport:
    """Schema, cross-document and (``with_governance``) governance problems of ``documents``;
    ``in_files`` when they were read from files, so that ``file:`` datasets can be checked."""
    resources, problems = _schema(documents, in_files)
    models = {(r.namespace, r.name): r.resource for r in resources if isinstance(r.resource, QuantumModel)}
    for res in resources:
        problems.extend(pipeline_limit_problems(res, models))
        if with_governance:
            problems.extend(governance_problems(res, models, policies))
    return ValidationReport(
        problems=sorted(problems, key=Problem.sort_key), documents=len(documents), resources=resources
    )


def validate_paths(
    paths: Sequence[str | os.PathLike[str]], with_governance: bool = True, policies: Sequence[QuantumPolicy] = ()
) -> ValidationReport:
    """``qmlops validate``: every problem of every document under ``paths`` (``policies``: the
    QuantumPolicy floors the models' governance is judged with)."""
    documents, unusable, files = load_documents(paths)
    report = validate_documents(documents, with_governance, policies=policies)
    report.problems = sorted(unusable + report.problems, key=Problem.sort_key)
    report.files = files
    return report


def validate_object(obj: dict[str, Any], source: str, with_governance: bool = True) -> list[Problem]:
    """The problems of an object read from the Kubernetes API (the admission webhook's view): the same
    checks as ``qmlops validate``, at line and column 0 since there is no source text."""
    document = LoadedDocument(file=source, index=0, data=obj, start=(0, 0))
    return validate_documents([document], with_governance, in_files=False).problems
