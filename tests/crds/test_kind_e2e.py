"""The kind end-to-end job (.github/workflows/kind-e2e.yml), checked where it cannot run: no Docker engine
here. Its steps call the subcommands its script has, the manifests it applies exist and render with the
image it builds and the repository it serves, the spec it commits validates, and the script's Git half
(seeding the repository, checking the operator's decision commits, the versions kept after a delete) runs
for real against a bare repository made by the git server's own init command, through a fake kubectl
whose `exec` runs the command here."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from controller.operator.settings import OperatorConfig

REPO = Path(__file__).resolve().parents[2]
KIND = REPO / ".github" / "kind"
SCRIPT = KIND / "e2e.sh"
WORKFLOW = REPO / ".github" / "workflows" / "kind-e2e.yml"
STEPS = ("image", "cert-manager", "git-server", "seed", "operator", "apply", "wait-ready", "check-decisions", "delete")


def _yaml_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in YAML(typ="safe", pure=True).load_all(path.read_text()) if d]


def _workflow() -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe", pure=True).load(WORKFLOW.read_text())
    return data


def _script_setting(name: str) -> str:
    match = re.search(rf'^{name}="?([^"\n]*)"?$', SCRIPT.read_text(), re.MULTILINE)
    assert match, name
    return match.group(1)


def _env_default(name: str) -> str:
    match = re.search(rf'^{name}="\$\{{{name}:-([^}}]*)\}}"$', SCRIPT.read_text(), re.MULTILINE)
    assert match, name
    return match.group(1)


def _by_kind(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name)


# --- the workflow and its script ------------------------------------------------------------------


def test_the_script_parses_and_is_executable() -> None:
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert os.access(SCRIPT, os.X_OK)


def test_the_job_runs_every_step_of_the_script_in_order_and_reads_the_logs_on_failure() -> None:
    (job,) = _workflow()["jobs"].values()
    runs = [(s.get("run", ""), s.get("if")) for s in job["steps"] if "run" in s]
    called = [run.removeprefix(".github/kind/e2e.sh ").strip() for run, _ in runs]
    assert called == [*STEPS, "diagnostics"]
    assert runs[-1][1] == "failure()"
    script = SCRIPT.read_text()
    for step in (*STEPS, "diagnostics"):
        assert f"\n  {step}) " in script, step
    kind = next(s for s in job["steps"] if s.get("uses", "").startswith("helm/kind-action@"))
    assert kind["with"]["cluster_name"] == "${{ env.CLUSTER }}"
    # Kubernetes 1.28 or newer: the CRDs' CEL rules carry fieldPath (docs/crds.md).
    node = re.fullmatch(r"kindest/node:v1\.(\d+)\.\d+", kind["with"]["node_image"])
    assert node is not None and int(node.group(1)) >= 28


def test_the_job_settings_are_the_scripts_defaults() -> None:
    (job,) = _workflow()["jobs"].values()
    for name in ("CLUSTER", "IMAGE", "CERT_MANAGER_VERSION", "READY_TIMEOUT"):
        assert job["env"][name] == _env_default(name), name


# --- what it applies --------------------------------------------------------------------------------


def test_the_manifests_it_applies_exist() -> None:
    script = SCRIPT.read_text()
    assert 'kubectl apply -f "$ROOT/crds/"' in script
    assert sorted(p.name for p in (REPO / "crds").glob("*.yaml")) == [
        "qmlops.io_quantummodels.yaml",
        "qmlops.io_quantumpipelines.yaml",
    ]
    assert 'kubectl apply -f "$KIND_DIR/git-server.yaml"' in script
    assert 'kubectl apply -k "$KIND_DIR/qmlops/"' in script
    overlay = YAML(typ="safe", pure=True).load((KIND / "qmlops" / "kustomization.yaml").read_text())
    assert overlay["resources"] == ["../../../deploy"]
    base_dir = (KIND / "qmlops" / "../../../deploy").resolve()
    assert base_dir == REPO / "deploy"
    base = YAML(typ="safe", pure=True).load((base_dir / "kustomization.yaml").read_text())
    for resource in base["resources"]:
        assert (base_dir / resource).is_file(), resource
    for component in base.get("components", []):
        assert (base_dir / component / "kustomization.yaml").is_file(), component


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (and its kustomize) is not installed")
def test_deploy_renders_with_the_built_image_the_served_repository_and_cert_manager() -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(KIND / "qmlops")], capture_output=True, text=True, check=True
    ).stdout
    documents = [d for d in YAML(typ="safe", pure=True).load_all(rendered) if d]
    image = _env_default("IMAGE")
    operator = _by_kind(documents, "Deployment", "qmlops-operator")
    assert [c["image"] for c in operator["spec"]["template"]["spec"]["containers"]] == [image]
    config = _by_kind(documents, "ConfigMap", "qmlops-operator")["data"]
    repository = _script_setting("REPOSITORY")
    assert config == {"repository": repository, "branch": "main", "gitSecret": ""}
    # What `e2e.sh operator` waits for: the certificate, and the CA injected into the webhook.
    certificate = _by_kind(documents, "Certificate", "qmlops-webhook")
    assert certificate["metadata"]["namespace"] == _script_setting("OPERATOR_NAMESPACE")
    webhook = _by_kind(documents, "ValidatingWebhookConfiguration", "qmlops")
    assert webhook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == "qmlops-system/qmlops-webhook"

    server = _yaml_all(KIND / "git-server.yaml")
    pod = _by_kind(server, "Deployment", "qmlops-git")["spec"]["template"]["spec"]
    assert {c["image"] for c in pod["containers"] + pod["initContainers"]} == {image}
    service = _by_kind(server, "Service", "qmlops-git")
    host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    assert service["spec"]["ports"][0]["port"] == 9418  # git://'s port, the URL names none
    assert repository == f"git://{host}/models.git"
    assert service["metadata"]["namespace"] == _script_setting("NAMESPACE")


def test_the_spec_it_commits_is_a_tiny_model_that_validates() -> None:
    spec_file = KIND / "model.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "controller.cli.main", "validate", str(spec_file)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == ""  # no warning either
    (model,) = _yaml_all(spec_file)
    assert (model["metadata"]["namespace"], model["metadata"]["name"]) == (
        _script_setting("NAMESPACE"),
        _script_setting("MODEL"),
    )
    training = model["spec"]["training"]
    assert (training["backend"], model["spec"]["circuit"]["qubits"]) == ("local:statevector", 2)
    assert training["optimizer"]["maxIterations"] == 2
    assert model["spec"]["promotion"]["policy"] == "auto"


def test_the_identity_it_expects_on_decision_commits_is_the_operators() -> None:
    name, email = OperatorConfig(repo="unused", workdir=Path("unused")).commit_identity
    assert _script_setting("OPERATOR_IDENTITY") == f"{name} <{email}>"


# --- the Git half of the script, run for real ------------------------------------------------------

FAKE_KUBECTL = r"""#!/usr/bin/env bash
# kubectl for the test: `exec ... -- COMMAND...` runs COMMAND here, /srv/git being $FAKE_SRV; the rest is logged.
printf '%s\n' "$*" >> "$FAKE_KUBECTL_LOG"
args=("$@")
for i in "${!args[@]}"; do
  if [ "${args[$i]}" = exec ]; then
    for ((j = i; j < ${#args[@]}; j++)); do
      if [ "${args[$j]}" = -- ]; then
        command=()
        for word in "${args[@]:$((j + 1))}"; do command+=("${word//\/srv\/git/$FAKE_SRV}"); done
        exec "${command[@]}"
      fi
    done
  fi
done
exit 0
"""


@pytest.fixture
def served(tmp_path: Path) -> dict[str, str]:
    """A bare repository made by the git server's init container's command, and a fake kubectl."""
    srv, bin_dir = tmp_path / "srv", tmp_path / "bin"
    srv.mkdir()
    bin_dir.mkdir()
    pod = _by_kind(_yaml_all(KIND / "git-server.yaml"), "Deployment", "qmlops-git")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    subprocess.run([w.replace("/srv/git", str(srv)) for w in init["command"]], check=True)
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(FAKE_KUBECTL)
    kubectl.chmod(0o755)
    return {
        **os.environ,
        "PATH": os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]]),
        "FAKE_SRV": str(srv),
        "FAKE_KUBECTL_LOG": str(tmp_path / "kubectl.log"),
    }


def _e2e(step: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), step], cwd=REPO, env=env, capture_output=True, text=True, check=False)


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


@pytest.mark.slow
def test_the_seeded_repository_takes_the_operators_decisions_and_keeps_them_after_a_delete(
    served: dict[str, str], tmp_path: Path
) -> None:
    seeded = _e2e("seed", served)
    assert seeded.returncode == 0, seeded.stderr
    bare = Path(served["FAKE_SRV"]) / "models.git"
    assert _git("--git-dir", str(bare), "show", "main:specs/e2e-tiny.yaml") == (KIND / "model.yaml").read_text()

    nothing_yet = _e2e("check-decisions", served)
    assert nothing_yet.returncode == 1
    assert "no commit with Qmlops-Decision: registered" in nothing_yet.stderr

    # The engine the operator drives, committing as the operator, pushing to the served repository.
    work = tmp_path / "work"
    _git("clone", "--quiet", str(bare), str(work))
    name, email = OperatorConfig(repo=str(bare), workdir=tmp_path).commit_identity
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "controller.cli.main",
            "run",
            "--once",
            "--repo",
            str(work),
            "--identity",
            f"{name} <{email}>",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr

    checked = _e2e("check-decisions", served)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    deleted = _e2e("delete", served)
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    logged = Path(served["FAKE_KUBECTL_LOG"]).read_text()
    assert "-n qmlops-e2e delete quantummodel e2e-tiny --wait=false" in logged
    assert "-n qmlops-e2e wait --for=delete --timeout=3m quantummodel/e2e-tiny" in logged


@pytest.mark.slow
def test_a_commit_by_anyone_but_the_operator_fails_the_check(served: dict[str, str], tmp_path: Path) -> None:
    assert _e2e("seed", served).returncode == 0
    work = tmp_path / "work"
    _git("clone", "--quiet", str(Path(served["FAKE_SRV"]) / "models.git"), str(work))
    run = subprocess.run(
        [sys.executable, "-m", "controller.cli.main", "run", "--once", "--repo", str(work)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    checked = _e2e("check-decisions", served)
    assert checked.returncode == 1
    assert "commits by others than the operator: qmlops <qmlops@example.invalid>" in checked.stderr
