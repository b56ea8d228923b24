"""The validating webhook: kopf's admission server answering AdmissionReviews with the validator's verdict."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import pytest
from ruamel.yaml import YAML

from controller.operator import checks, webhook
from controller.operator.settings import OperatorConfig, WebhookConfig, kopf_settings
from tests.crds.objects import changed, model, pipeline
from tests.support.kube import ApiError, Client, KubeApi, free_port, kopf_running, login_to, port_open
from tests.validation.programs import doubling


@pytest.fixture
async def webhook_url(kube: KubeApi, client: Client, tmp_path: Path) -> AsyncIterator[str]:
    kube.register_crds()
    await client.namespace("team-quantum")
    port = free_port()
    config = OperatorConfig(
        repo=str(tmp_path / "repo"),
        workdir=tmp_path,
        webhook=WebhookConfig(port=port, addr="127.0.0.1", insecure=True),
    )
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(login_to(kube))
    webhook.register(registry)
    async with kopf_running(registry, settings=kopf_settings(config), ready=lambda: port_open("127.0.0.1", port)):
        yield f"http://127.0.0.1:{port}"


def admission_review(obj: dict[str, Any], operation: str = "CREATE") -> dict[str, Any]:
    plural = {"QuantumModel": "quantummodels", "QuantumPipeline": "quantumpipelines"}[obj["kind"]]
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "qmlops.io", "version": "v1alpha1", "kind": obj["kind"]},
            "resource": {"group": "qmlops.io", "version": "v1alpha1", "resource": plural},
            "name": obj["metadata"]["name"],
            "namespace": obj["metadata"]["namespace"],
            "operation": operation,
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": obj,
            "oldObject": obj if operation == "UPDATE" else None,
            "dryRun": False,
        },
    }


async def post_review(url: str, obj: dict[str, Any], operation: str = "CREATE") -> dict[str, Any]:
    plural = "quantummodels" if obj["kind"] == "QuantumModel" else "quantumpipelines"
    review = admission_review(obj, operation)
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/{webhook.WEBHOOKS[plural]}", json=review) as rsp,
    ):
        assert rsp.status == 200
        answer: dict[str, Any] = await rsp.json()
    assert answer["response"]["uid"] == review["request"]["uid"]
    return answer["response"]


def validate_cli(obj: dict[str, Any], folder: Path) -> list[str]:
    """``qmlops validate`` on the object as a file: each line's ``field.path: message`` part."""
    path = folder / "spec.yaml"
    with path.open("w") as f:
        YAML().dump(obj, f)
    out = subprocess.run(
        [sys.executable, "-m", "controller", "validate", str(path)], capture_output=True, text=True, check=False
    )
    return [line.split(": ", 1)[1] for line in out.stdout.splitlines() if line.startswith(str(path))]


async def test_a_valid_model_and_pipeline_are_allowed(webhook_url: str) -> None:
    assert (await post_review(webhook_url, model()))["allowed"] is True
    assert (await post_review(webhook_url, pipeline()))["allowed"] is True


async def test_updates_are_reviewed_with_server_fields_ignored(webhook_url: str) -> None:
    live = changed(model(), metadata__uid="u-1", metadata__resourceVersion="7", metadata__generation=3)
    live["status"] = {"phase": "Ready", "somethingNew": True}
    assert (await post_review(webhook_url, live, "UPDATE"))["allowed"] is True


@pytest.mark.parametrize(
    "bad",
    [
        changed(model(), spec__training__shots=0),
        changed(model(), spec__circuit__qubits=2, spec__training__backend="local:nowhere"),
        changed(model(), spec__training__optimiser={"kind": "COBYLA"}),
        changed(pipeline(), spec__steps__1__dependsOn=["nothing"]),
        changed(model(), spec__circuit__qubits=26, spec__training__backend="local:statevector"),
        changed(model(), spec__training__shots=10_000_000, spec__training__optimizer={"maxIterations": 100_000}),
    ],
    ids=["shots", "two-problems", "typo", "pipeline-graph", "qubits-over-memory", "shots-over-the-limit"],
)
async def test_a_bad_spec_is_refused_with_the_message_of_qmlops_validate(
    webhook_url: str, bad: dict[str, Any], tmp_path: Path
) -> None:
    answer = await post_review(webhook_url, bad)
    assert answer["allowed"] is False
    assert answer["status"]["code"] == 422
    lines = answer["status"]["message"].splitlines()
    assert lines == validate_cli(bad, tmp_path)
    assert lines and all(line.startswith("spec.") for line in lines)


async def test_the_apiserver_refuses_kubectl_apply_through_the_webhook(
    kube: KubeApi, client: Client, webhook_url: str, tmp_path: Path
) -> None:
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "qmlops"},
        "webhooks": [
            {
                "name": "quantummodels.qmlops.io",
                "clientConfig": {"url": f"{webhook_url}/{webhook.WEBHOOKS['quantummodels']}"},
                "rules": [
                    {
                        "apiGroups": ["qmlops.io"],
                        "apiVersions": ["v1alpha1"],
                        "resources": ["quantummodels"],
                        "operations": ["CREATE", "UPDATE"],
                    }
                ],
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "failurePolicy": "Fail",
            }
        ],
    }
    await client.create(config)
    # a value the CRD's schema accepts, so that the webhook is what refuses it
    bad = changed(model(), spec__training__backend="fake:nowhere")
    with pytest.raises(ApiError) as err:
        await client.create(bad)
    assert err.value.status == 422
    expected = validate_cli(bad, tmp_path)
    assert expected and all(line in err.value.body["message"] for line in expected)
    assert 'admission webhook "quantummodels.qmlops.io" denied the request' in err.value.body["message"]
    assert kube.read("QuantumModel", "team-quantum", "iris-vqc") is None
    created = await client.create(model())
    assert created["metadata"]["name"] == "iris-vqc"


async def test_an_ansatz_past_the_openqasm_limits_is_denied_at_its_line(webhook_url: str, tmp_path: Path) -> None:
    """The issue's 16 levels of doubling gates: refused by the scan, in ``qmlops validate``'s words."""
    bad = changed(model(), spec__circuit__ansatz={"kind": "QASM", "qasm": doubling(16)})
    answer = await post_review(webhook_url, bad)
    assert answer["allowed"] is False
    assert answer["status"]["code"] == 422
    lines = answer["status"]["message"].splitlines()
    assert lines == validate_cli(bad, tmp_path)
    assert lines == [
        "spec.circuit.ansatz.qasm: line 16, column 1: the program expands to more than 10,000 operations by this "
        "statement (12,261 so far, gate definitions included); at most 10,000 (MAX_QASM_OPERATIONS)"
    ]


async def test_a_review_that_does_not_finish_in_time_is_denied_and_never_piles_up(
    webhook_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reviews run on ``CHECK_THREADS`` threads; one that waits past its budget is denied, and one that
    never got a thread is cancelled rather than run late."""
    release = threading.Event()
    started: list[str] = []

    def stuck(obj: Any, model: Any = None) -> webhook.Review:
        started.append(obj["metadata"]["name"])
        release.wait(30)
        return webhook.Review(errors=[], warnings=[])

    monkeypatch.setattr(checks, "WEBHOOK_BUDGET_SECONDS", 0.5)
    monkeypatch.setattr(webhook, "review", stuck)
    names = [f"m{i}" for i in range(checks.CHECK_THREADS + 2)]
    try:
        answers = await asyncio.gather(*(post_review(webhook_url, changed(model(), metadata__name=n)) for n in names))
    finally:
        release.set()
    for answer in answers:
        assert answer["allowed"] is False
        assert answer["status"] == {"code": 503, "message": "validation did not finish within 0.5s"}
    await asyncio.sleep(0.2)  # the released threads take whatever was left in the queue, if anything was
    assert len(started) == checks.CHECK_THREADS


def test_the_review_answers_before_the_apiserver_gives_up() -> None:
    """The apiserver applies failurePolicy after timeoutSeconds; the webhook denies before that."""
    config = YAML(typ="safe").load((Path(__file__).resolve().parents[2] / "deploy" / "webhook.yaml").read_text())
    timeouts = [hook["timeoutSeconds"] for hook in config["webhooks"]]
    assert timeouts and all(t >= checks.WEBHOOK_BUDGET_SECONDS + 1 for t in timeouts)
    assert all(hook["failurePolicy"] == "Fail" for hook in config["webhooks"])


async def test_a_pipeline_is_judged_by_its_models_governance_read_from_the_api(
    kube: KubeApi, client: Client, tmp_path: Path
) -> None:
    kube.register_crds()
    await client.namespace("team-quantum")
    await client.create(model())  # its governance: no QPU budget, so no ibm: backend
    port = free_port()
    config = OperatorConfig(
        repo=str(tmp_path / "repo"), workdir=tmp_path, webhook=WebhookConfig(port=port, addr="127.0.0.1", insecure=True)
    )
    read: list[tuple[str, str]] = []

    async def read_model(namespace: str, name: str) -> dict[str, Any] | None:
        read.append((namespace, name))
        return kube.read("QuantumModel", namespace, name)

    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(login_to(kube))
    webhook.register(registry, read_model)
    async with kopf_running(registry, settings=kopf_settings(config), ready=lambda: port_open("127.0.0.1", port)):
        url = f"http://127.0.0.1:{port}"
        assert (await post_review(url, pipeline()))["allowed"] is True
        outside = changed(pipeline(), spec__steps__0__train__matrix={"training.backend": ["ibm:ibm_kyiv"]})
        denied = await post_review(url, outside)
        assert denied["allowed"] is False
        assert "spec.steps[0].train.matrix[training.backend][0]" in denied["status"]["message"]
        assert "blocked by governance rule" in denied["status"]["message"]
        orphan = changed(pipeline(), spec__model="not-there")
        answer = await post_review(url, orphan)
        assert answer["allowed"] is True
        assert any("no QuantumModel 'not-there'" in w for w in answer.get("warnings", []))
    assert read == [("team-quantum", "iris-vqc"), ("team-quantum", "iris-vqc"), ("team-quantum", "not-there")]
