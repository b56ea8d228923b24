"""Checks that relate a pipeline to the QuantumModel spec: matrix keys as spec paths, the step graph; and a spec
model's fields by their names on the wire, which validation's "did you mean" walks too."""

from __future__ import annotations

import functools
import types
import typing
from typing import Annotated, Any

from pydantic import BaseModel, TypeAdapter, ValidationError


def field_by_alias(model: type[BaseModel], alias: str) -> tuple[str, Any] | None:
    """The field of ``model`` named ``alias`` on the wire (camelCase): its Python name and annotation."""
    for name, info in model.model_fields.items():
        if (info.alias or name) == alias:
            return name, info.annotation
    return None


def wire_names(model: type[BaseModel]) -> list[str]:
    """The fields of ``model`` by their names on the wire, in declaration order."""
    return [info.alias or name for name, info in model.model_fields.items()]


def alternatives(annotation: Any) -> tuple[Any, ...]:
    """The types ``annotation`` allows: those of a union (``X | None``), else itself (``list[X]`` is a list)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``X``, ``X | None``; None for scalars and collections."""
    for candidate in alternatives(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


@functools.cache
def _leaf_adapter(path: str) -> TypeAdapter[Any]:
    from controller.api.quantummodel import QuantumModelSpec

    model: type[BaseModel] = QuantumModelSpec
    parts = path.split(".")
    for i, part in enumerate(parts):
        found = field_by_alias(model, part)
        if found is None:
            where = ".".join(parts[:i]) or "spec"
            known = ", ".join(wire_names(model))
            raise KeyError(f"{where} has no field {part!r} (fields: {known})")
        name, annotation = found
        inner = model_in(annotation)
        if i == len(parts) - 1:
            if inner is not None:
                raise KeyError(f"{path} is a section, not a value a matrix can vary")
            # The field's constraints (ge, le, ...) live in its FieldInfo's metadata, not in the annotation.
            constraints = tuple(model.model_fields[name].metadata)
            leaf: Any = Annotated[(annotation, *constraints)] if constraints else annotation
            return TypeAdapter(leaf)
        if inner is None:
            raise KeyError(f"{'.'.join(parts[: i + 1])} is a value, it has no field {parts[i + 1]!r}")
        model = inner
    raise KeyError(path)  # unreachable: the loop returns on the last part


def check_matrix(matrix: dict[str, list[Any]], prefix: str = "matrix") -> None:
    """Every key is a real QuantumModel spec path to a value, and every value is valid there (which
    paths a pipeline may vary at all is a governance rule: see ``engine.validation``)."""
    problems = []
    for key, values in matrix.items():
        try:
            adapter = _leaf_adapter(key)
        except KeyError as err:
            problems.append(f"{prefix}.{key}: not a QuantumModel spec path: {err.args[0]}")
            continue
        if not values:
            problems.append(f"{prefix}.{key}: lists no values")
        seen: list[Any] = []
        for value in values:
            if any(type(value) is type(v) and value == v for v in seen):
                problems.append(f"{prefix}.{key}: {value!r} is listed twice")
            seen.append(value)
        for value in values:
            try:
                adapter.validate_python(value)
            except ValidationError as err:
                problems.append(f"{prefix}.{key}: {value!r} is not valid there: {err.errors()[0]['msg']}")
    if problems:
        raise ValueError("; ".join(problems))


def check_step_graph(steps: list[tuple[str, list[str]]]) -> None:
    names = [n for n, _ in steps]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"steps: duplicate step name {', '.join(duplicates)}")
    known = set(names)
    for name, deps in steps:
        for dep in deps:
            if dep == name:
                raise ValueError(f"steps.{name}.dependsOn: a step cannot depend on itself")
            if dep not in known:
                raise ValueError(f"steps.{name}.dependsOn: no step named {dep!r}")
    cycle = _find_cycle(dict(steps))
    if cycle:
        raise ValueError(f"steps: dependsOn forms a cycle: {' -> '.join(cycle)}")


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in graph.get(node, []):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state and (found := visit(node)):
            return found
    return None


def topological_order(steps: list[tuple[str, list[str]]]) -> list[str]:
    """Steps in an order that runs every dependency first (the listed order where free)."""
    done: list[str] = []
    pending = list(steps)
    while pending:
        ready = [(n, d) for n, d in pending if all(x in done for x in d)]
        if not ready:
            raise ValueError("steps: dependsOn forms a cycle")
        done.append(ready[0][0])
        pending.remove(ready[0])
    return done


# What each kind of step works on: the nearest step it depends on (directly or not) of one of these kinds
# (a select step without an evaluate step picks on the versions' own test-split figures).
STEP_INPUTS = {"evaluate": ("train",), "select": ("evaluate", "train"), "promote": ("select",)}


def check_step_inputs(steps: list[tuple[str, str, list[str]]]) -> None:
    """Each evaluate, select and promote step depends (directly or not) on a step it works on:
    ``steps`` are ``(name, action, dependsOn)``."""
    actions = {name: action for name, action, _ in steps}
    graph = {name: deps for name, _, deps in steps}
    for name, action, _ in steps:
        wanted = STEP_INPUTS.get(action)
        if wanted is None:
            continue
        queue, seen = list(graph[name]), set()
        while queue:
            dep = queue.pop(0)
            if dep in seen:
                continue
            seen.add(dep)
            if actions.get(dep) in wanted:
                break
            queue.extend(graph.get(dep, []))
        else:
            kinds = " or ".join(wanted)
            article = "an" if kinds[0] in "aeiou" else "a"
            raise ValueError(
                f"steps.{name}.dependsOn: a {action} step works on what {article} {kinds} step made: "
                "it must depend on one (directly or through other steps)"
            )
