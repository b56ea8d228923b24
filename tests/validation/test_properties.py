"""Property: whatever a pull request does to a valid spec, the validator answers with problems or a clean
bill, never a crash, and an exit code of 0, 1 or 2."""

from __future__ import annotations

import copy
import string
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from controller.engine.documents import Problem, load_text
from controller.engine.validation import exit_code, validate_documents
from tests.api.specs import ROOT, model, pipeline, to_yaml
from tests.validation.cli import write

SEEDS: list[Any] = [model(), pipeline()] + [
    YAML(typ="safe", pure=True).load(p.read_text(encoding="utf-8")) for p in sorted((ROOT / "examples").glob("*.yaml"))
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.text(alphabet=string.ascii_lowercase + ":*-_./", max_size=20),
    st.sampled_from(["local:aer", "fake:manila", "ibm:ibm_kyiv", "builtin:iris", "file:../x.csv", "0 3 * * 1", "QASM"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=8,
)
keys = st.one_of(
    st.text(max_size=15), st.sampled_from(["spec", "training", "token", "apiKey", "kind", "name", "steps"])
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        node = node[part]
    return node


def _set(root: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    _get(root, path[:-1])[path[-1]] = value
    return root


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    doc = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["delete", "replace", "insert", "swap", "duplicate"]))
        target = _get(doc, path)
        if action == "delete" and path:
            parent = _get(doc, path[:-1])
            del parent[path[-1]]
        elif action == "replace":
            doc = _set(doc, path, draw(values))
        elif action == "insert" and isinstance(target, dict):
            target[draw(keys)] = draw(values)
        elif action == "insert" and isinstance(target, list):
            target.insert(draw(st.integers(0, len(target))), draw(values))
        elif action == "swap":
            other = draw(st.sampled_from(paths))
            if other and path and other[: len(path)] != path and path[: len(other)] != other:
                a, b = copy.deepcopy(_get(doc, path)), copy.deepcopy(_get(doc, other))
                doc = _set(_set(doc, path, b), other, a)
        elif action == "duplicate" and isinstance(target, list) and target:
            target.append(copy.deepcopy(target[0]))
    return doc


def _check(problems: list[Problem]) -> None:
    assert exit_code(problems) in (0, 1, 2)
    for p in problems:
        assert p.severity in ("error", "warning")
        assert p.line >= 0 and p.column >= 0
        assert p.message and "Traceback" not in p.message
        p.format()
        p.to_json()


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_specs_never_crash_the_validator(doc: Any) -> None:
    text = to_yaml(doc)
    documents, unusable = load_text("mutated.yaml", text)
    report = validate_documents(documents)
    _check(unusable + report.problems)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(SEEDS),
    st.lists(
        st.tuples(
            st.floats(0, 1),
            st.one_of(
                st.text(max_size=6),
                st.sampled_from(["\t", ":", "- ", "&a", "*a", "{", "]", "!!", "\n  ", "'", "---\n", "<<: "]),
            ),
        ),
        min_size=1,
        max_size=5,
    ),
)
def test_mangled_yaml_text_never_crashes_the_validator(seed: Any, edits: list[tuple[float, str]]) -> None:
    text = to_yaml(seed)
    for where, insert in edits:
        at = int(where * len(text))
        text = text[:at] + insert + text[at:]
    documents, unusable = load_text("mangled.yaml", text)
    _check(unusable + validate_documents(documents).problems)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(mutated(), st.binary(max_size=16))
def test_the_command_answers_with_an_exit_code(tmp_path: Path, doc: Any, junk: bytes) -> None:
    from controller.cli.main import main

    spec = write(tmp_path, "spec.yaml", to_yaml(doc).encode() + junk)
    assert main(["validate", "--output", "json", str(spec)]) in (0, 1, 2)
