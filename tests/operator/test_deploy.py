"""deploy/: what a cluster admin applies, checked with kubernetes-validate and against the operator."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from ruamel.yaml import YAML

from controller.cli import operator as operator_cli
from controller.operator import webhook

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBERNETES_VERSIONS = ("1.28", "1.37")


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in YAML(typ="safe").load_all(path.read_text()) if d]


def manifests(root: Path = DEPLOY) -> list[dict[str, Any]]:
    """The documents kustomize would render: the kustomization's resources and its components'."""
    docs: list[dict[str, Any]] = []

    def walk(folder: Path) -> None:
        kustomization = load(folder / "kustomization.yaml")[0]
        for name in kustomization.get("resources", []):
            docs.extend(load(folder / name))
        for name in kustomization.get("components", []):
            walk(folder / name)

    walk(root)
    return docs


def one(kind: str, name: str | None = None, root: Path = DEPLOY) -> dict[str, Any]:
    found = [d for d in manifests(root) if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


BUILTIN_GROUPS = ("v1", "apps/v1", "rbac.authorization.k8s.io/v1", "admissionregistration.k8s.io/v1")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_builtin_manifest_is_valid_kubernetes(version: str) -> None:
    builtins = [d for d in manifests() if d["apiVersion"] in BUILTIN_GROUPS]
    assert {d["kind"] for d in builtins} >= {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        "ValidatingWebhookConfiguration",
        "ConfigMap",
    }
    for doc in builtins:
        kubernetes_validate.validate(doc, version, strict=True)
    others = {d["apiVersion"] for d in manifests()} - set(BUILTIN_GROUPS)
    assert others == {"cert-manager.io/v1"}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_renders_deploy() -> None:
    rendered = subprocess.run(["kubectl", "kustomize", str(DEPLOY)], capture_output=True, text=True, check=True)
    kinds = [d["kind"] for d in YAML(typ="safe").load_all(rendered.stdout) if d]
    assert sorted(kinds) == sorted(d["kind"] for d in manifests())
    assert "cert-manager.io/inject-ca-from: qmlops-system/qmlops-webhook" in rendered.stdout


def test_the_cluster_role_names_no_wildcards() -> None:
    for rule in one("ClusterRole")["rules"]:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], f"wildcard in {key}: {rule}"
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule


def test_the_pod_runs_locked_down_with_writable_scratch_only() -> None:
    deployment = one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    args = operator_args(container["args"])
    assert "emptyDir" in volumes[mounts[str(args.workdir)]], "the Git checkout lives on an emptyDir"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["health"] == args.liveness_port and container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert ports["metrics"] == args.metrics_port and ports["webhook"] == args.webhook_port
    tls = volumes[mounts[str(args.webhook_cert.parent)]]["secret"]["secretName"]
    assert tls == one("Certificate")["spec"]["secretName"]


def operator_args(args: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    operator_cli.register(sub)
    parsed = parser.parse_args(args)
    parsed.repo = "https://example.com/models.git"
    operator_cli.build_config(parsed)  # refuses a contradictory command line
    return parsed


def rules(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    }


def rendered(folder: Path) -> list[dict[str, Any]]:
    out = subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True, text=True, check=True).stdout
    return [d for d in YAML(typ="safe").load_all(out) if d]


# --- deploy/namespaced: the operator for one namespace -----------------------------------------------

NAMESPACED = DEPLOY / "namespaced"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_namespaced_install_is_valid_kubernetes_with_no_cluster_wide_permission(version: str) -> None:
    docs = manifests(NAMESPACED)
    assert {d["kind"] for d in docs} == {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment"}
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_namespaced_role_reads_secrets_and_writes_configmaps_in_its_namespace_only() -> None:
    role = one("Role", root=NAMESPACED)
    for rule in role["rules"]:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], f"wildcard in {key}: {rule}"
    granted = rules(role)
    assert {verb for group, resource, verb in granted if resource == "secrets"} == {"get"}
    assert ("", "configmaps", "create") in granted
    assert rules(role) == rules(one("ClusterRole")) - {
        (group, resource, verb)
        for group, resource in (("apiextensions.k8s.io", "customresourcedefinitions"), ("qmlops.io", "quantumpolicies"))
        for verb in ("list", "watch")
    }, (
        "the ClusterRole's rules, but the CRD scan and the (cluster-scoped) QuantumPolicies a namespaced operator does not read"
    )
    binding = one("RoleBinding", root=NAMESPACED)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "qmlops-operator"}
    (subject,) = binding["subjects"]
    assert (subject["kind"], subject["name"]) == (
        "ServiceAccount",
        one("ServiceAccount", root=NAMESPACED)["metadata"]["name"],
    )


def test_the_namespaced_operator_watches_and_reads_its_own_namespace() -> None:
    deployment = one("Deployment", root=NAMESPACED)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    args = operator_args(container["args"])
    assert args.namespaces == ["$(POD_NAMESPACE)"], "Kubernetes expands it to the pod's namespace"
    assert args.git_secret.startswith("$(POD_NAMESPACE)/")
    assert args.webhook_port == 0, "no webhook: a ValidatingWebhookConfiguration is cluster-scoped"
    config = one("ConfigMap", root=NAMESPACED)
    for value in env.values():
        ref = value.get("valueFrom", {}).get("configMapKeyRef")
        if ref:
            assert ref["name"] == config["metadata"]["name"] and ref["key"] in config["data"]
    assert pod["serviceAccountName"] == one("ServiceAccount", root=NAMESPACED)["metadata"]["name"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts[str(args.workdir)]]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_puts_the_namespaced_install_in_one_namespace() -> None:
    docs = rendered(NAMESPACED)
    (namespace,) = {d["metadata"]["namespace"] for d in docs}
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    assert [s["namespace"] for s in binding["subjects"]] == [namespace]


# --- deploy/peering: two replicas, one active ----------------------------------------------------------

PEERING = DEPLOY / "peering"


def test_the_peering_component_installs_kopfs_peering_resources_as_the_harness_serves_them() -> None:
    from controller.operator.settings import PEERING_NAME
    from tests.support.kube import KOPF_PEERING_CRDS

    docs = manifests(PEERING)
    assert [d for d in docs if d["kind"] == "CustomResourceDefinition"] == list(KOPF_PEERING_CRDS)
    (peering,) = [d for d in docs if d["kind"] == "ClusterKopfPeering"]
    assert peering["metadata"]["name"] == PEERING_NAME
    role = one("ClusterRole", root=PEERING)
    assert {group for group, _, _ in rules(role)} == {"kopf.dev"}
    binding = one("ClusterRoleBinding", root=PEERING)
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == one("ClusterRoleBinding")["subjects"]
    for doc in docs:
        if doc["apiVersion"] in BUILTIN_GROUPS:
            kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_the_peering_component_runs_two_replicas_with_peering(tmp_path: Path) -> None:
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    kustomization = tmp_path / "deploy" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace("  - cert-manager\n", "  - cert-manager\n  - peering\n"))
    (deployment,) = [d for d in rendered(tmp_path / "deploy") if d["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 2
    args = operator_args(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
    assert args.peering is True


def test_names_line_up_across_the_manifests() -> None:
    deployment = one("Deployment")
    pod = deployment["spec"]["template"]
    namespace = one("Namespace")["metadata"]["name"]
    assert pod["spec"]["serviceAccountName"] == one("ServiceAccount")["metadata"]["name"]
    binding = one("ClusterRoleBinding")
    assert binding["roleRef"]["name"] == one("ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "qmlops-operator", "namespace": namespace}]
    named_ports = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
    for service in (d for d in manifests() if d["kind"] == "Service"):
        assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= named_ports
    config = one("ConfigMap", "qmlops-operator")
    for env in pod["spec"]["containers"][0]["env"]:
        ref = env.get("valueFrom", {}).get("configMapKeyRef")
        if ref:
            assert ref["name"] == "qmlops-operator" and ref["key"] in config["data"]
    certificate = one("Certificate")
    assert "qmlops-webhook.qmlops-system.svc" in certificate["spec"]["dnsNames"]


def test_the_webhook_configuration_calls_the_operators_handlers() -> None:
    hooks = one("ValidatingWebhookConfiguration")["webhooks"]
    served = {f"/{handler}": plural for plural, handler in webhook.WEBHOOKS.items()}
    for hook in hooks:
        service = hook["clientConfig"]["service"]
        assert (service["name"], service["namespace"]) == ("qmlops-webhook", "qmlops-system")
        (rule,) = hook["rules"]
        assert rule["resources"] == [served[service["path"]]]
        assert rule["apiGroups"] == ["qmlops.io"] and set(rule["operations"]) == {"CREATE", "UPDATE"}
    assert {h["clientConfig"]["service"]["path"] for h in hooks} == set(served)


def test_the_dockerfile_runs_the_operator_as_non_root() -> None:
    text = (DEPLOY.parent / "Dockerfile").read_text()
    assert "USER 65532" in text and 'CMD ["operator"' in text
    assert "git" in text and "openssh-client" in text


# --- deploy/jobs: trainings as Kubernetes Jobs -----------------------------------------------------------

JOBS = DEPLOY / "jobs"


def test_the_jobs_component_and_the_training_namespace_manifests_are_valid_and_line_up() -> None:
    from controller.operator import jobs

    docs = manifests(JOBS) + manifests(JOBS / "namespace")
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)
    binding = one("ClusterRoleBinding", root=JOBS)
    assert binding["roleRef"]["name"] == one("ClusterRole", root=JOBS)["metadata"]["name"]
    assert binding["subjects"] == one("ClusterRoleBinding")["subjects"]
    account = one("ServiceAccount", root=JOBS / "namespace")["metadata"]["name"]
    assert account == jobs.DEFAULT_SERVICE_ACCOUNT
    role_binding = one("RoleBinding", root=JOBS / "namespace")
    assert role_binding["subjects"] == [{"kind": "ServiceAccount", "name": account}]
    assert rules(one("Role", root=JOBS / "namespace")) == {("", "configmaps", "get"), ("", "configmaps", "patch")}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_the_jobs_component_runs_the_operator_with_the_jobs_executor_and_its_own_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    kustomization = tmp_path / "deploy" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace("  - cert-manager\n", "  - cert-manager\n  - jobs\n"))
    (deployment,) = [d for d in rendered(tmp_path / "deploy") if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    image = next(e["value"] for e in container["env"] if e["name"] == "QMLOPS_IMAGE")
    assert image == container["image"], "the Jobs run the operator's own image"
    monkeypatch.setenv("QMLOPS_IMAGE", image)
    args = operator_args(container["args"])
    assert args.executor == "jobs" and args.job_image == image
