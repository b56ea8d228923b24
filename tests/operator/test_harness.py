"""The Kubernetes API harness behaves like an apiserver where the operator depends on it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import kmock
import kopf
import pytest

from tests.support.kube import ApiError, Client, KubeApi, kopf_running, login_to

WIDGETS: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "shortNames": ["wd"]},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1},
                                    "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                                },
                            },
                            "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
                        },
                    }
                },
            }
        ],
    },
}


def widget(name: str = "w1", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": name, "namespace": "ns1"},
        "spec": {"size": 1, **spec},
    }


@pytest.fixture
async def widgets(kube: KubeApi, client: Client) -> Client:
    await client.create(WIDGETS)  # through the API, like `kubectl apply -f crd.yaml`
    await client.namespace("ns1")
    return client


async def test_qmlops_crds_register_from_the_crds_folder(kube: KubeApi, client: Client) -> None:
    kinds = {k.kind: k for k in kube.register_crds()}
    assert kinds["QuantumModel"].status_subresource and kinds["QuantumModel"].short_names == ("qm",)
    discovery = await client.call("GET", "/apis/qmlops.io/v1alpha1")
    names = {r["name"] for r in discovery["resources"]}
    assert {"quantummodels", "quantummodels/status", "quantumpipelines", "quantumpipelines/status"} <= names
    core = {r["name"] for r in (await client.call("GET", "/api/v1"))["resources"]}
    assert {"namespaces", "events", "configmaps", "secrets"} <= core


async def test_create_prunes_defaults_and_drops_status(kube: KubeApi, widgets: Client) -> None:
    body = widget(color=None, typo="x")
    body["status"] = {"phase": "Forged"}
    created = await widgets.create(body)
    assert created["spec"] == {"size": 1, "color": "red"}
    assert "status" not in created
    meta = created["metadata"]
    assert meta["generation"] == 1 and meta["uid"] and meta["resourceVersion"].isdigit()
    assert (await widgets.get("Widget", "ns1", "w1")) == created


async def test_invalid_objects_are_refused_naming_the_field(widgets: Client) -> None:
    with pytest.raises(ApiError) as err:
        await widgets.create(widget(size=0))
    assert err.value.status == 422
    assert "spec.size" in err.value.body["message"]
    assert err.value.body["details"]["causes"][0]["field"] == "spec.size"
    with pytest.raises(ApiError) as err:
        await widgets.create({**widget(), "spec": {"color": "green", "size": 2}})
    assert err.value.status == 422 and "spec.color" in err.value.body["message"]


async def test_unknown_status_fields_vanish_as_on_a_cluster(widgets: Client) -> None:
    await widgets.create(widget())
    patched = await widgets.patch("Widget", "ns1", "w1", {"status": {"phase": "Ready", "extra": 1}}, status=True)
    assert patched["status"] == {"phase": "Ready"}


async def test_generation_moves_on_spec_changes_only(widgets: Client) -> None:
    created = await widgets.create(widget())
    rv = int(created["metadata"]["resourceVersion"])
    same = await widgets.patch("Widget", "ns1", "w1", {"spec": {"size": 1}})
    assert same["metadata"]["resourceVersion"] == str(rv), "a no-op write keeps the resourceVersion"
    labelled = await widgets.patch("Widget", "ns1", "w1", {"metadata": {"labels": {"a": "b"}}})
    assert labelled["metadata"]["generation"] == 1 and int(labelled["metadata"]["resourceVersion"]) > rv
    status = await widgets.patch("Widget", "ns1", "w1", {"status": {"phase": "Ready"}}, status=True)
    assert status["metadata"]["generation"] == 1
    changed = await widgets.patch("Widget", "ns1", "w1", {"spec": {"size": 3}})
    assert changed["metadata"]["generation"] == 2


async def test_status_subresource_is_apart(widgets: Client) -> None:
    await widgets.create(widget())
    await widgets.patch("Widget", "ns1", "w1", {"status": {"phase": "Ready"}}, status=True)
    main = await widgets.patch("Widget", "ns1", "w1", {"spec": {"size": 2}, "status": {"phase": "Hacked"}})
    assert main["status"] == {"phase": "Ready"} and main["spec"]["size"] == 2
    status = await widgets.patch("Widget", "ns1", "w1", {"spec": {"size": 9}, "status": {"phase": "Done"}}, status=True)
    assert status["spec"]["size"] == 2 and status["status"] == {"phase": "Done"}


async def test_stale_resource_version_is_a_conflict(widgets: Client) -> None:
    first = await widgets.create(widget())
    await widgets.patch("Widget", "ns1", "w1", {"spec": {"size": 2}})
    stale = first["metadata"]["resourceVersion"]
    with pytest.raises(ApiError) as err:
        await widgets.patch("Widget", "ns1", "w1", {"metadata": {"resourceVersion": stale}, "spec": {"size": 5}})
    assert err.value.status == 409
    with pytest.raises(ApiError) as err:
        await widgets.replace({**first, "spec": {"size": 5}})
    assert err.value.status == 409
    unversioned = {**first, "metadata": {k: v for k, v in first["metadata"].items() if k != "resourceVersion"}}
    with pytest.raises(ApiError) as err:
        await widgets.replace(unversioned)
    assert err.value.status == 422
    current = await widgets.get("Widget", "ns1", "w1")
    replaced = await widgets.replace({**current, "spec": {"size": 5}})
    assert replaced["spec"]["size"] == 5 and replaced["metadata"]["generation"] == 3


async def test_json_patch_test_failure_is_unprocessable(widgets: Client) -> None:
    await widgets.create(widget())
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
        {"op": "add", "path": "/metadata/finalizers", "value": ["x"]},
    ]
    with pytest.raises(ApiError) as err:
        await widgets.call(
            "PATCH", "/apis/example.com/v1/namespaces/ns1/widgets/w1", ops, "application/json-patch+json"
        )
    assert err.value.status == 422


async def test_finalizers_hold_deletion_and_owned_objects_are_collected(kube: KubeApi, widgets: Client) -> None:
    owner = await widgets.create({**widget(), "metadata": {"name": "w1", "namespace": "ns1", "finalizers": ["f"]}})
    ref = {"apiVersion": "example.com/v1", "kind": "Widget", "name": "w1", "uid": owner["metadata"]["uid"]}
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cm", "namespace": "ns1", "ownerReferences": [ref]},
    }
    await widgets.create(configmap)
    marked = await widgets.delete("Widget", "ns1", "w1")
    assert marked["metadata"]["deletionTimestamp"] and kube.read("Widget", "ns1", "w1") is not None
    with pytest.raises(ApiError) as err:
        await widgets.patch("Widget", "ns1", "w1", {"metadata": {"finalizers": ["f", "g"]}})
    assert err.value.status == 422
    await widgets.patch("Widget", "ns1", "w1", {"metadata": {"finalizers": None}})
    assert kube.read("Widget", "ns1", "w1") is None
    assert kube.read("ConfigMap", "ns1", "cm") is None
    with pytest.raises(ApiError) as err:
        await widgets.get("Widget", "ns1", "w1")
    assert err.value.status == 404


async def test_namespaced_objects_need_their_namespace(widgets: Client) -> None:
    with pytest.raises(ApiError) as err:
        await widgets.create({**widget(), "metadata": {"name": "w", "namespace": "nowhere"}})
    assert err.value.status == 404 and "nowhere" in err.value.body["message"]


async def _events(kube: KubeApi, url: str, count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with kube.request("GET", url) as rsp:
        async for line in rsp.content:
            if line.strip():
                events.append(json.loads(line))
            if len(events) == count:
                break
    return events


async def test_watch_streams_resumes_and_expires(kube: KubeApi, widgets: Client) -> None:
    first = await widgets.create(widget("a"))
    url = "/apis/example.com/v1/namespaces/ns1/widgets?watch=true"
    listing = asyncio.create_task(_events(kube, url, 3))
    await asyncio.sleep(0.1)
    await widgets.create(widget("b"))
    await widgets.patch("Widget", "ns1", "a", {"spec": {"size": 4}})
    seen = await asyncio.wait_for(listing, 10)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in seen] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("MODIFIED", "a"),
    ]

    since = first["metadata"]["resourceVersion"]
    resumed = await asyncio.wait_for(_events(kube, f"{url}&resourceVersion={since}", 2), 10)
    assert [e["type"] for e in resumed] == ["ADDED", "MODIFIED"]

    kube.compact()
    expired = await asyncio.wait_for(_events(kube, f"{url}&resourceVersion={since}", 1), 10)
    assert expired[0]["type"] == "ERROR" and expired[0]["object"]["code"] == 410


async def test_dropped_watches_end_the_stream(kube: KubeApi, widgets: Client) -> None:
    url = "/apis/example.com/v1/namespaces/ns1/widgets?watch=true"
    stream = asyncio.create_task(_events(kube, url, 100))
    await asyncio.sleep(0.1)
    await widgets.create(widget("a"))
    await kube.wait_for(lambda: kube.drop_watches() > 0 or None, timeout=10)
    assert len(await asyncio.wait_for(stream, 10)) == 1


async def test_injected_faults_answer_without_writing(kube: KubeApi, widgets: Client) -> None:
    await widgets.create(widget())
    kube.fail(kmock.action.UPDATE, "widgets", status=503, times=2)
    for _ in range(2):
        with pytest.raises(ApiError) as err:
            await widgets.patch("Widget", "ns1", "w1", {"spec": {"size": 2}})
        assert err.value.status == 503
    assert (kube.read("Widget", "ns1", "w1") or {})["spec"]["size"] == 1
    assert (await widgets.patch("Widget", "ns1", "w1", {"spec": {"size": 2}}))["spec"]["size"] == 2
    kube.fail(kmock.action.UPDATE, "widgets", status=409, subresource="status")
    with pytest.raises(ApiError) as err:
        await widgets.patch("Widget", "ns1", "w1", {"status": {"phase": "x"}}, status=True)
    assert err.value.status == 409
    kube.stall(kmock.action.FETCH, "widgets", seconds=0.2)
    with pytest.raises(ApiError) as err:
        await widgets.get("Widget", "ns1", "w1")
    assert err.value.status == 504
    assert (await widgets.get("Widget", "ns1", "w1"))["spec"]["size"] == 2


async def test_secrets_turn_string_data_into_data(kube: KubeApi, client: Client) -> None:
    await client.namespace("ns1")
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s", "namespace": "ns1"},
        "stringData": {"token": "abc"},
    }
    created = await client.create(secret)
    assert created["data"] == {"token": "YWJj"} and "stringData" not in created


async def test_kopf_sees_objects_runs_handlers_and_releases_its_finalizer(kube: KubeApi, widgets: Client) -> None:
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(login_to(kube))
    seen: list[str] = []

    @kopf.on.create("example.com", "v1", "widgets", registry=registry)
    def created(name: str, patch: kopf.Patch, **_: Any) -> None:
        seen.append(name)
        patch.status["phase"] = "Seen"

    @kopf.on.delete("example.com", "v1", "widgets", registry=registry)
    def deleted(name: str, **_: Any) -> None:
        seen.append(f"deleted {name}")

    settings = kopf.OperatorSettings()
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="example.com")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="example.com")
    async with kopf_running(registry, settings=settings):
        await widgets.create(widget())
        done = await kube.wait_for(lambda: (kube.read("Widget", "ns1", "w1") or {}).get("status"), timeout=20)
        assert done == {"phase": "Seen"}
        assert (kube.read("Widget", "ns1", "w1") or {})["metadata"]["finalizers"]
        await widgets.delete("Widget", "ns1", "w1")
        await kube.wait_for(lambda: kube.read("Widget", "ns1", "w1") is None, timeout=20)
    assert seen == ["w1", "deleted w1"]


async def test_status_is_validated_even_once_the_spec_is_known(widgets: Client) -> None:
    await widgets.create(widget())
    await widgets.patch("Widget", "ns1", "w1", {"status": {"phase": "Ready"}}, status=True)
    with pytest.raises(ApiError) as err:
        await widgets.patch("Widget", "ns1", "w1", {"status": {"phase": 3}}, status=True)
    assert err.value.status == 422 and "status.phase" in err.value.body["message"]
    created = await widgets.get("Widget", "ns1", "w1")
    assert created["status"] == {"phase": "Ready"}
