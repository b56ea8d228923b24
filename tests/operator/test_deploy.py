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


def manifests() -> list[dict[str, Any]]:
    """The documents kustomize would render: the kustomization's resources and its components'."""
    docs: list[dict[str, Any]] = []

    def walk(folder: Path) -> None:
        kustomization = load(folder / "kustomization.yaml")[0]
        for name in kustomization.get("resources", []):
            docs.extend(load(folder / name))
        for name in kustomization.get("components", []):
            walk(folder / name)

    walk(DEPLOY)
    return docs


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in manifests() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
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
