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


ALL = sorted(p.name for p in WORKFLOWS.glob("*.y*ml"))


def test_every_workflow_is_checked() -> None:
    assert {"ci.yml", "validate-specs.yml", "kind-e2e.yml"} <= set(ALL)


@pytest.mark.parametrize("name", ALL)
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
    for name in ALL:
        (job,) = _load(name)["jobs"].values()
        for step in job["steps"]:
            assert "${{" not in step.get("run", ""), (name, step.get("name"))


# --- the validate steps, run as GitHub runs them ---------------------------------------------------


def _run_step(
    step: dict[str, Any], cwd: Path, paths: str, env: dict[str, str] | None = None, path: Path | None = None
) -> tuple[int, str, Path, Path]:
    """Run ``step`` as GitHub does: bash -eo pipefail, its outputs and summary in files, after the step that
    writes the report script into RUNNER_TEMP (``path`` is put first on PATH: a fake qmlops)."""
    scratch = cwd.parent
    output, summary, runner_temp = scratch / "output", scratch / "summary", scratch / "runner-temp"
    runner_temp.mkdir(exist_ok=True)
    search = [str(p) for p in (path, Path(sys.executable).parent) if p is not None]
    full_env = {
        **os.environ,
        "PATH": os.pathsep.join([*search, os.environ["PATH"]]),
        "QMLOPS_PATHS": paths,
        "GITHUB_OUTPUT": str(output),
        "GITHUB_STEP_SUMMARY": str(summary),
        "RUNNER_TEMP": str(runner_temp),
        **(env or {}),
    }
    prepare = _step(_load("validate-specs.yml"), "Prepare the report writer")
    done = None
    for name, current in (("prepare.sh", prepare), ("step.sh", step)):
        script = scratch / name
        script.write_text(current["run"])
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=cwd,
            env=full_env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert name == "step.sh" or done.returncode == 0, done.stderr
    assert done is not None
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


# --- the plan step, against a fake qmlops that answers as `qmlops plan` does ------------------------

# What `qmlops plan` prints (stdout, then its count on stderr), with a file name a pull request chose:
# a code fence to break out of the summary's, a terminal escape and a right-to-left override.
PLAN = (
    "team-a/iris (specs/iris.yaml): train: the spec changed since version 3\n"
    "team-a/odd (specs/```\x1b[31modd\u202e.yaml): nothing: version 2 is the champion\n"
)
FAKE_QMLOPS = """#!/usr/bin/env bash
printf '%s\\n' "$*" > "$FAKE_QMLOPS_ARGS"
printf '%s' "$FAKE_QMLOPS_PLAN"
echo "qmlops plan: 2 models, 1 to change" >&2
exit "$FAKE_QMLOPS_EXIT"
"""


def _run_plan(tmp_path: Path, exit_code: int, base_sha: str = "") -> tuple[int, str, str, str]:
    bin_dir, repo = tmp_path / "bin", tmp_path / "repo"
    bin_dir.mkdir()
    repo.mkdir()
    fake = bin_dir / "qmlops"
    fake.write_text(FAKE_QMLOPS)
    fake.chmod(0o755)
    args = tmp_path / "args"
    env = {
        "FAKE_QMLOPS_ARGS": str(args),
        "FAKE_QMLOPS_PLAN": PLAN,
        "FAKE_QMLOPS_EXIT": str(exit_code),
        "BASE_SHA": base_sha,
    }
    plan = _step(_load("validate-specs.yml"), "Plan")
    code, out, _, summary = _run_step(plan, repo, "specs/", env=env, path=bin_dir)
    return code, out, summary.read_text(), args.read_text().strip()


@pytest.mark.parametrize(
    ("plan_exit", "step_exit", "headline"),
    [
        (0, 0, "Nothing to do (exit 0)"),
        (1, 0, "Merging changes models (exit 1)"),  # an ordinary pull request: green
        (2, 2, "could not plan (exit 2)"),
        (3, 3, "qmlops plan failed (exit 3)"),
        (137, 137, "qmlops plan failed (exit 137)"),
    ],
)
def test_the_plan_step_fails_only_when_plan_could_not_plan(
    tmp_path: Path, plan_exit: int, step_exit: int, headline: str
) -> None:
    code, out, summary, args = _run_plan(tmp_path, plan_exit, base_sha="0123abcd")
    assert code == step_exit, out
    assert args == "plan --repo . --since 0123abcd"
    assert summary.startswith("## qmlops plan\n")
    assert headline in summary
    assert "team-a/iris (specs/iris.yaml): train: the spec changed since version 3" in summary
    assert "qmlops plan: 2 models, 1 to change" in summary


def test_the_plan_is_fenced_and_escaped_in_the_summary_and_the_log(tmp_path: Path) -> None:
    code, out, summary, _ = _run_plan(tmp_path, 1)
    assert code == 0
    lines = summary.splitlines()
    opening = next(i for i, line in enumerate(lines) if line.startswith("```"))
    assert lines[opening] == "````text"  # longer than the ``` inside, which therefore cannot close it
    closing = next(i for i, line in enumerate(lines) if i > opening and line.startswith("````"))
    fenced = "\n".join(lines[opening + 1 : closing])
    assert "team-a/odd (specs/```\\x1b[31modd\\u202e.yaml): nothing: version 2 is the champion" in fenced
    assert "team-a/iris" in fenced
    for shown in (summary, out):
        assert "\x1b" not in shown and "\u202e" not in shown
    # The log prints the plan with workflow commands stopped, and starts them again on a line of its own.
    start = out.index("::stop-commands::")
    token = out[start:].split("\n", 1)[0].removeprefix("::stop-commands::")
    assert f"\n::{token}::\n" in out[start:]
    assert "team-a/odd" in out[start : out.index(f"::{token}::", start + 1)]


def test_the_plan_step_plans_the_whole_repository_without_a_base_commit(tmp_path: Path) -> None:
    code, _, summary, args = _run_plan(tmp_path, 0)
    assert (code, args) == (0, "plan --repo .")
    assert "Nothing to do (exit 0)" in summary


def test_the_validate_log_annotations_and_summary_escape_what_a_file_name_carries(spec_repo: Path) -> None:
    odd = "```\x1b[2Jodd.yaml"
    bad = (spec_repo / "specs" / "good.yaml").read_text().replace("training:", "traning:")
    (spec_repo / "specs" / odd).write_text(bad)
    workflow = _load("validate-specs.yml")
    _run_step(_step(workflow, "Validate (JSON report)"), spec_repo, "specs/")
    code, out, _, summary = _run_step(_step(workflow, "Validate"), spec_repo, "specs/")
    assert code == 1
    assert "::error file=specs/```\\x1b[2Jodd.yaml,line=" in out
    assert "\x1b" not in out
    text = summary.read_text()
    assert "Violations (exit 1)" in text
    assert "specs/```\\x1b[2Jodd.yaml" in text
    assert "\n````text\n" in text
    assert "\x1b" not in text
    start = out.index("::stop-commands::")
    token = out[start:].split("\n", 1)[0].removeprefix("::stop-commands::")
    report = out[start : out.index(f"\n::{token}::\n", start)]
    assert "specs/```\\x1b[2Jodd.yaml" in report and "\x1b" not in report
