"""QuantumPolicy floors that a spec may tighten and never loosen (issue 12): the effective values and
where they came from, a pin under a floor that asks for approval, and policy files that cannot be used."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from controller.api.quantummodel import QuantumModelSpec
from controller.api.quantumpolicy import QuantumPolicy
from controller.engine import governance
from controller.engine.policy import effective
from tests.api.specs import model
from tests.registry.repos import Repos, git, tiny_spec
from tests.validation.cli import Result, qmlops

SPEC = "specs/tiny.yaml"
FLOOR = """\
apiVersion: qmlops.io/v1alpha1
kind: QuantumPolicy
metadata: {{name: production-floor}}
spec:
  match: {{namespaces: [demo]}}
  floor:
{floor}
"""


def policy(name: str = "floor", match: dict[str, Any] | None = None, **floor: Any) -> QuantumPolicy:
    return QuantumPolicy.model_validate(
        {"kind": "QuantumPolicy", "metadata": {"name": name}, "spec": {"match": match or {}, "floor": floor}}
    )


def spec(**governance: Any) -> QuantumModelSpec:
    """DESIGN.md's model with its governance as given (nothing else declared)."""
    data = model()["spec"]
    data["governance"] = {"allowedBackends": ["local:*", "fake:*"], **governance}
    data["promotion"].pop("requiredApprovals", None)
    return QuantumModelSpec.model_validate(data)


# --- floors ---------------------------------------------------------------------------------------------------


def test_a_floor_tightens_what_the_spec_left_loose_and_says_where_each_value_came_from() -> None:
    loose = spec(enforcement="audit", maxShots=500)
    floors = effective(loose, "team", None, [policy(enforcement="enforce", maxShots=100, requiredApprovals=1)])
    assert floors.spec.governance.enforcement.value == "enforce"
    assert floors.spec.governance.max_shots == 100
    assert floors.spec.promotion.required_approvals == 1
    assert [s.describe() for s in floors.sources] == [
        "governance.enforcement: enforce (QuantumPolicy floor)",
        "governance.maxShots: 100 (QuantumPolicy floor)",
        "promotion.requiredApprovals: 1 (QuantumPolicy floor)",
    ]


def test_a_spec_stricter_than_the_floor_keeps_its_own_values() -> None:
    strict = spec(maxShots=50, qpuBudgetSeconds=10)
    floors = effective(strict, "team", None, [policy(maxShots=100, qpuBudgetSeconds=3600)])
    assert floors.spec == strict and floors.sources == ()


def test_a_backend_the_floor_does_not_allow_is_blocked_naming_the_floor() -> None:
    local = spec(allowedBackends=["*"])
    floors = effective(local, "team", None, [policy(allowedBackends=["fake:*", "ibm:*"])])
    report = governance.evaluate(floors.spec)
    [failed] = [r for r in report.results if r.rule == "allowed-backends"]
    assert failed.result == "fail" and "fake:*, ibm:*" in failed.message
    assert governance.evaluate(local).results[0].result == "pass"


def test_a_policy_applies_only_to_the_models_it_matches() -> None:
    confidential = spec(dataClassification="confidential")
    only = {"namespaces": ["team"], "dataClassification": ["confidential", "restricted"], "labels": {"tier": "prod"}}
    floor = policy(match=only, maxShots=1)
    assert effective(confidential, "team", {"tier": "prod"}, [floor]).spec.governance.max_shots == 1
    assert effective(confidential, "other", {"tier": "prod"}, [floor]).sources == ()
    assert effective(confidential, "team", {"tier": "dev"}, [floor]).sources == ()
    assert effective(spec(), "team", {"tier": "prod"}, [floor]).sources == ()  # internal data


# --- through plan and run ------------------------------------------------------------------------------------------


def policies_dir(tmp_path: Path, floor: str) -> Path:
    folder = tmp_path / "policies"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "floor.yaml").write_text(FLOOR.format(floor=floor))
    return folder


def run(capsys: pytest.CaptureFixture[str], work: Path, *args: str) -> Result:
    return qmlops(capsys, "run", "--repo", str(work), "--once", *args)


def kinds(work: Path) -> list[str]:
    return [json.loads(line)["kind"] for line in (work / "registry/demo/tiny/ledger.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_pin_under_a_floor_that_asks_for_approval_waits_for_one(
    repos: Repos, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = repos.clone("work")
    repos.commit_file(work, SPEC, tiny_spec(), "tiny")
    assert run(capsys, work).code == 0
    repos.commit_file(work, SPEC, tiny_spec(iterations=6), "more iterations")
    assert run(capsys, work).code == 0
    assert kinds(work)[-1] == "promoted"
    pinned = tiny_spec(iterations=6).replace("    policy: auto\n", "    policy: auto\n    pin: 1\n")
    repos.commit_file(work, SPEC, pinned, "back to version 1", author="Mallory <mallory@example.com>")
    floor = policies_dir(tmp_path, "    requiredApprovals: 1\n    pinRequiresApproval: true")
    plan = qmlops(capsys, "plan", "--repo", str(work), "--policies", str(floor), "--output", "json")
    [row] = plan.json()
    assert row["action"] == "block" and "QuantumPolicy production-floor: pinRequiresApproval" in row["reason"]
    assert {"field": "promotion.pinRequiresApproval", "value": True, "source": "QuantumPolicy/production-floor"} in (
        row["floors"]
    )
    blocked = run(capsys, work, "--policies", str(floor))
    assert kinds(work)[-1] == "blocked" and "rolled-back" not in kinds(work), blocked.out
    git(work, "commit", "--quiet", "--allow-empty", "--author=Bob <bob@example.com>", "-m", "ok",
        "--trailer=Qmlops-Approve: demo/tiny@1")  # fmt: skip
    assert run(capsys, work, "--policies", str(floor)).code == 0
    assert kinds(work)[-2:] == ["approved", "rolled-back"]
    text = qmlops(capsys, "plan", "--repo", str(work), "--policies", str(floor))
    assert "  floor: promotion.requiredApprovals: 1 (QuantumPolicy/production-floor)" in text.out


def test_policy_files_that_cannot_be_used_are_refused_naming_the_flag_and_nothing_is_written(
    repos: Repos, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = repos.clone("work")
    repos.commit_file(work, SPEC, tiny_spec(), "tiny")
    head = git(work, "rev-parse", "HEAD")
    contradicts = policies_dir(tmp_path / "a", "    pinRequiresApproval: true")
    unknown = policies_dir(tmp_path / "b", "    maxShots: 10")
    text = (unknown / "floor.yaml").read_text() + "  packs: [eu-ai-act-high-risk-typo]\n"
    (unknown / "floor.yaml").write_text(text)
    inside = work / "policies"
    inside.mkdir()
    nested = tmp_path / "nested"  # read by the specs' bounded reader: refused, never a RecursionError
    nested.mkdir()
    (nested / "deep.yaml").write_text("a: " + "[" * 100_000 + "]" * 100_000 + "\n")
    for folder, words in (
        (contradicts, "floor.pinRequiresApproval asks for approvals"),
        (unknown, "spec.packs.0"),
        (nested, "deep.yaml:1:204: nested too deeply"),
        (inside, "inside the spec repository"),
        (tmp_path / "missing", "not a folder"),
    ):
        for command in ("plan", "run"):
            args = ["--once"] if command == "run" else []
            result = qmlops(capsys, command, "--repo", str(work), *args, "--policies", str(folder))
            assert result.code == 2, (command, folder, result.err)
            assert result.err.startswith(f"qmlops {command}: --policies: ") and words in result.err, result.err
            assert result.err.count("\n") == 1
    assert git(work, "rev-parse", "HEAD") == head and not (work / "registry").exists()


def test_validate_judges_a_spec_by_the_floors_of_its_policies(
    repos: Repos, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = repos.clone("work")
    repos.commit_file(work, SPEC, tiny_spec(), "tiny")  # local:statevector, allowed by its own spec
    clean = qmlops(capsys, "validate", str(work / SPEC))
    assert clean.code == 0, clean.out
    floor = policies_dir(tmp_path, '    allowedBackends: ["fake:*"]')
    refused = qmlops(capsys, "validate", str(work / SPEC), "--policies", str(floor))
    assert refused.code == 1
    assert "blocked by governance rule allowed-backends" in refused.out and "fake:*" in refused.out


def test_the_audit_shows_the_effective_policy_values_and_where_each_came_from(
    repos: Repos, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = repos.clone("work")
    repos.commit_file(work, SPEC, tiny_spec(), "tiny")  # 128 shots, no maxShots of its own
    floor = policies_dir(tmp_path, "    maxShots: 1000\n    qpuBudgetWindow: 90d")
    audit = qmlops(capsys, "audit", "--repo", str(work), "--policies", str(floor), "--format", "json")
    assert audit.code == 0, audit.err
    [model] = audit.json()["models"]
    assert model["policy"] == {
        "policiesGiven": True,
        "matched": ["production-floor"],
        "floors": [
            {"field": "governance.maxShots", "value": 1000, "source": "QuantumPolicy/production-floor"},
            {"field": "governance.qpuBudgetWindow", "value": "90d", "source": "QuantumPolicy/production-floor"},
        ],
    }
    plan = qmlops(capsys, "plan", "--repo", str(work), "--policies", str(floor), "--output", "json")
    assert plan.json()[0]["floors"] == model["policy"]["floors"]  # the values plan shows, from the same source
    table = qmlops(capsys, "audit", "--repo", str(work), "--policies", str(floor))
    assert "  QuantumPolicies: production-floor\n" in table.out
    assert "  floor: governance.maxShots: 1000 (QuantumPolicy/production-floor)\n" in table.out
    html = qmlops(capsys, "audit", "--repo", str(work), "--policies", str(floor), "--format", "html")
    assert "<h3>Effective policy</h3>" in html.out and "governance.qpuBudgetWindow: 90d" in html.out
    unjudged = qmlops(capsys, "audit", "--repo", str(work))
    assert "QuantumPolicies: none given (--policies DIR)" in unjudged.out
    inside = work / "policies"
    inside.mkdir()
    refused = qmlops(capsys, "audit", "--repo", str(work), "--policies", str(inside))
    assert (
        refused.code == 2 and refused.err.startswith("qmlops audit: --policies: ") and "inside the spec" in refused.err
    )
