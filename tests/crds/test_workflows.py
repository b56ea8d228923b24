"""The GitHub workflows: valid workflow files, the shape callers rely on, and the validate step's script
run for real against spec files."""

from __future__ import annotations

import importlib.resources
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

from tests.crds import objects

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"


def _load(name: str) -> dict[str, Any]:
    # YAML 1.2, as GitHub reads workflows: `on` is a key, not the boolean true.
    data: dict[str, Any] = YAML(typ="safe", pure=True).load((WORKFLOWS / name).read_text())
    return data


def _step(workflow: dict[str, Any], name: str) -> dict[str, Any]:
    (job,) = workflow["jobs"].values()
    for step in job["steps"]:
        if step.get("name") == name:
            return dict(step)
    raise KeyError(name)


@pytest.mark.parametrize("name", ["ci.yml", "validate-specs.yml"])
def test_workflow_matches_the_github_workflow_schema(name: str) -> None:
    vendored = importlib.resources.files("check_jsonschema.builtin_schemas").joinpath("vendor/github-workflows.json")
    schema = json.loads(vendored.read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(_load(name))


def test_ci_runs_the_test_script_on_python_3_11_for_pushes_and_pull_requests() -> None:
    ci = _load("ci.yml")
    assert {"push", "pull_request"} <= set(ci["on"])
    (job,) = ci["jobs"].values()
    uses = [s.get("uses", "") for s in job["steps"]]
    assert any(u.startswith("actions/checkout@") for u in uses)
    setup = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@"))
    assert setup["with"]["python-version"] == "3.11"
    assert any(s.get("run", "").strip() == "scripts/test" for s in job["steps"])
    assert "qmlops crds --check" in (REPO / "scripts" / "test").read_text()


def test_validate_specs_is_reusable_with_the_inputs_callers_set() -> None:
    workflow = _load("validate-specs.yml")
    assert set(workflow["on"]) == {"workflow_call"}
    inputs = workflow["on"]["workflow_call"]["inputs"]
    assert inputs["paths"]["default"] == "specs/"
    assert inputs["qmlops-repository"]["required"] is True
    assert inputs["qmlops-ref"]["type"] == "string"
    assert inputs["python-version"]["default"] == "3.11"
    assert (inputs["run-plan"]["type"], inputs["run-plan"]["default"]) == ("boolean", False)
    assert workflow["permissions"] == {"contents": "read"}


def test_validate_specs_installs_the_requested_qmlops_and_plans_only_when_asked() -> None:
    workflow = _load("validate-specs.yml")
    install = _step(workflow, "Install qmlops")
    assert install["env"] == {
        "QMLOPS_REPOSITORY": "${{ inputs.qmlops-repository }}",
        "QMLOPS_REF": "${{ inputs.qmlops-ref }}",
    }
    assert "git+https://github.com/${QMLOPS_REPOSITORY}@${QMLOPS_REF}" in install["run"]
    assert "--output json" in _step(workflow, "Validate (JSON report)")["run"]
    plan = _step(workflow, "Plan")
    assert plan["if"] == "inputs.run-plan"
    assert plan["env"]["BASE_SHA"] == "${{ github.event.pull_request.base.sha }}"
    assert 'qmlops plan --repo . --since "$BASE_SHA"' in plan["run"]


def test_no_input_is_expanded_inside_a_script() -> None:
    # Inputs reach scripts through env: an expression inside `run` would be spliced into the shell text.
    for name in ("ci.yml", "validate-specs.yml"):
        (job,) = _load(name)["jobs"].values()
        for step in job["steps"]:
            assert "${{" not in step.get("run", ""), (name, step.get("name"))


# --- the validate steps, run as GitHub runs them ---------------------------------------------------


def _run_step(step: dict[str, Any], cwd: Path, paths: str) -> tuple[int, str, Path, Path]:
    script = cwd.parent / "step.sh"
    script.write_text(step["run"])
    output, summary = cwd.parent / "output", cwd.parent / "summary"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "QMLOPS_PATHS": paths,
        "GITHUB_OUTPUT": str(output),
        "GITHUB_STEP_SUMMARY": str(summary),
    }
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr, output, summary


@pytest.fixture
def spec_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "specs").mkdir(parents=True)
    (repo / "more").mkdir()
    yaml = YAML(typ="safe", pure=True)
    with (repo / "specs" / "good.yaml").open("w") as f:
        yaml.dump(objects.model(), f)
    with (repo / "more" / "pipeline.yaml").open("w") as f:
        yaml.dump(objects.pipeline(), f)
    return repo


def test_the_validate_step_passes_clean_specs(spec_repo: Path) -> None:
    code, out, _, summary = _run_step(_step(_load("validate-specs.yml"), "Validate"), spec_repo, "specs/ more/")
    assert code == 0, out
    assert "::error" not in out
    assert "## qmlops validate" in summary.read_text()


def test_the_validate_step_fails_and_annotates_each_problem(spec_repo: Path) -> None:
    bad = (spec_repo / "specs" / "good.yaml").read_text().replace("training:", "traning:")
    (spec_repo / "specs" / "bad.yaml").write_text(bad)
    workflow = _load("validate-specs.yml")
    code, out, output, _ = _run_step(_step(workflow, "Validate (JSON report)"), spec_repo, "specs/")
    assert code == 0  # the report step never fails the job; the next one does
    assert output.read_text() == "exit-code=1\n"
    report = json.loads((spec_repo / "qmlops-validate.json").read_text())
    assert report and all(p["file"] == "specs/bad.yaml" for p in report)

    code, out, _, summary = _run_step(_step(workflow, "Validate"), spec_repo, "specs/")
    assert code == 1
    line = next(p["line"] for p in report if p["path"] == "spec.traning")
    assert f"::error file=specs/bad.yaml,line={line},col=" in out
    assert "::spec.traning: unknown field 'traning'" in out
    assert "::stop-commands::" in out  # the report itself is printed with workflow commands off
    assert "specs/bad.yaml" in summary.read_text()
