"""The shipped examples: examples/ and specs/ validate clean; each refused example fails with exactly the
output kept beside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.api import QuantumModel
from controller.engine.validation import load_resources
from tests.api.specs import ROOT
from tests.validation.cli import qmlops

REFUSED = sorted((ROOT / "examples-refused").glob("*.yaml"))
SHIPPED = sorted([*(ROOT / "examples").rglob("*.yaml"), *(ROOT / "specs").rglob("*.yaml")])


def test_examples_and_specs_are_clean(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(ROOT)
    result = qmlops(capsys, "validate", "examples/", "specs/")
    assert (result.code, result.out) == (0, "")
    assert f"{len(SHIPPED)} files, {len(SHIPPED)} resources: clean" in result.err


@pytest.mark.parametrize("path", SHIPPED + REFUSED, ids=lambda p: str(p.relative_to(ROOT)))
def test_each_example_says_what_it_shows(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# ") and len(first) > 20


@pytest.mark.parametrize("path", REFUSED, ids=lambda p: p.name)
def test_refused_examples_print_what_they_promise(
    path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    result = qmlops(capsys, "validate", str(path.relative_to(ROOT)))
    assert result.code == 1
    assert result.out == path.with_suffix(".expected").read_text(encoding="utf-8")


def test_the_blocked_example_is_blocked_by_governance_only() -> None:
    resources, problems = load_resources([ROOT / "examples-refused" / "blocked-by-governance.yaml"])
    assert problems == [] and len(resources) == 1  # a valid spec: only governance refuses it


def test_the_demo_specs_stay_small_and_local() -> None:
    resources, problems = load_resources([ROOT / "specs"])
    assert problems == []
    models = [r.resource for r in resources if isinstance(r.resource, QuantumModel)]
    assert 1 <= len(models) <= 2
    assert "iris-vqc" in [m.metadata.name for m in models]
    for m in models:
        assert m.spec.training.backend.startswith(("local:", "fake:"))
        assert m.spec.training.optimizer.max_iterations <= 60 and m.spec.circuit.qubits <= 4
