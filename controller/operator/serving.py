"""``spec.serving``: the champion of a QuantumModel served in the cluster.

With ``spec.serving`` the operator owns, in the model's namespace, a Deployment running ``qmlops serve``
for that model alone (the operator's image, the operator's repository and branch, ready on
``/v2/health/ready``) and a Service in front of it on port 8080 (``http``). Both carry an owner reference
to the model, so they go with it. Without ``spec.serving`` nothing is created; when ``spec.serving`` is
taken away, the operator deletes the two objects it made (found by name and by their owner reference);
when it was taken away while no operator ran, the next operator's start finds them (:func:`sweep`).

An object is patched only when a field the operator sets differs from what it wants (someone edited it,
or ``spec.serving`` changed); fields the apiserver defaults are left alone, and a steady model costs two
reads.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from controller.api.quantummodel import Serving
from controller.operator.checkpoints import ModelRef
from controller.operator.kube import ApiError, KubeClient, NotFound, resource_path

PORT = 8080
COMPONENT = "serving"
MODEL_LABEL = "qmlops.io/model"
MAX_NAME = 63
GIT_SECRET_DIR = "/etc/qmlops/git"


@dataclass(frozen=True)
class ServingSetup:
    """What every serving Deployment gets from the operator: its image and the repository to follow."""

    image: str
    repo: str
    branch: str | None = None
    interval: float = 30.0
    git_secret: str | None = None  # a Secret in the model's namespace: the pods' Git credentials


def object_name(model: str) -> str:
    """``<model>-serving``, within a DNS label (a Service's name): a long name is cut and a digest added."""
    name = f"{model}-serving"
    if len(name) <= MAX_NAME:
        return name
    return f"{model[: MAX_NAME - 17]}-{hashlib.sha256(model.encode()).hexdigest()[:8]}-serving"


def labels(ref: ModelRef) -> dict[str, str]:
    return {"app.kubernetes.io/name": "qmlops", "app.kubernetes.io/component": COMPONENT, MODEL_LABEL: ref.name}


def owner(ref: ModelRef) -> dict[str, Any]:
    return {**ref.owner_reference(), "blockOwnerDeletion": True}


def _resources(serving: Serving) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if serving.resources is None:
        return out
    for part in ("requests", "limits"):
        amounts = getattr(serving.resources, part)
        if amounts is not None:
            values = {k: v for k, v in (("cpu", amounts.cpu), ("memory", amounts.memory)) if v is not None}
            if values:
                out[part] = values
    return out


def deployment(ref: ModelRef, serving: Serving, setup: ServingSetup) -> dict[str, Any]:
    args = ["serve", f"--repo={setup.repo}", f"--models={ref.namespace}/{ref.name}", f"--port={PORT}"]
    args += [f"--interval={setup.interval:g}", "--workdir=/tmp/qmlops"]
    if setup.branch:
        args.append(f"--branch={setup.branch}")
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    if setup.git_secret:
        args.append(f"--git-secret-dir={GIT_SECRET_DIR}")
        mounts.append({"name": "git-credentials", "mountPath": GIT_SECRET_DIR, "readOnly": True})
        volumes.append({"name": "git-credentials", "secret": {"secretName": setup.git_secret, "defaultMode": 0o440}})
    probe = {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 5, "failureThreshold": 3}
    container: dict[str, Any] = {
        "name": "serve",
        "image": setup.image,
        "args": args,
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": probe,
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"}, "periodSeconds": 10},
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "XDG_CACHE_HOME", "value": "/tmp/.cache"},
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    }
    resources = _resources(serving)
    if resources:
        container["resources"] = resources
    selector = {MODEL_LABEL: ref.name, "app.kubernetes.io/component": COMPONENT}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(ref),
        "spec": {
            "replicas": serving.replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": labels(ref)},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def service(ref: ModelRef) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(ref),
        "spec": {
            "selector": {MODEL_LABEL: ref.name, "app.kubernetes.io/component": COMPONENT},
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def _metadata(ref: ModelRef) -> dict[str, Any]:
    return {
        "name": object_name(ref.name),
        "namespace": ref.namespace,
        "labels": labels(ref),
        "ownerReferences": [owner(ref)],
    }


def covers(live: Any, want: Any) -> bool:
    """``live`` holds every field of ``want`` with its value (lists item by item); other fields of
    ``live`` (the apiserver's defaults) do not matter."""
    if isinstance(want, dict):
        return isinstance(live, dict) and all(k in live and covers(live[k], v) for k, v in want.items())
    if isinstance(want, list):
        return (
            isinstance(live, list)
            and len(live) == len(want)
            and all(covers(a, b) for a, b in zip(live, want, strict=True))
        )
    return bool(live == want)


def _path(body: dict[str, Any], name: str | None = None) -> str:
    plural = "deployments" if body["kind"] == "Deployment" else "services"
    return resource_path(body["apiVersion"], plural, body["metadata"]["namespace"], name)


async def sync(client: KubeClient, ref: ModelRef, serving: Serving | None, setup: ServingSetup, *, wrote: bool) -> bool:
    """Bring the model's serving objects to what ``serving`` asks. ``wrote``: this operator made them
    before (without it, a model without ``spec.serving`` costs no call). True when they exist now."""
    if serving is None:
        if wrote:
            await remove(client, ref)
        return False
    for desired in (deployment(ref, serving, setup), service(ref)):
        name = desired["metadata"]["name"]
        try:
            live = await client.get(_path(desired, name))
        except NotFound:
            await client.create(_path(desired), desired)
            continue
        if not _ours(live, ref):
            raise ApiError(409, "AlreadyExists", f"{desired['kind']} {name} exists and is not owned by this model")
        if not covers(live, desired):
            await client.merge_patch(_path(desired, name), {"metadata": desired["metadata"], "spec": desired["spec"]})
    return True


async def remove(client: KubeClient, ref: ModelRef) -> None:
    """Delete the serving objects this model owns (``spec.serving`` taken away)."""
    for api_version, plural in (("apps/v1", "deployments"), ("v1", "services")):
        path = resource_path(api_version, plural, ref.namespace, object_name(ref.name))
        try:
            live = await client.get(path)
            if _ours(live, ref):
                await client.delete(path)
        except NotFound:
            continue


def _ours(live: dict[str, Any], ref: ModelRef) -> bool:
    owners = (live.get("metadata") or {}).get("ownerReferences") or ()
    return any(o.get("uid") == ref.uid for o in owners)


SWEPT = (("apps/v1", "deployments"), ("v1", "services"))


async def sweep(client: KubeClient, namespaces: tuple[str, ...] = ()) -> list[str]:
    """At start: delete the serving Deployments and Services this operator labelled whose model no
    longer asks for serving (``spec.serving`` taken away while no operator ran). An object whose model
    is gone is left to the garbage collector (its owner reference); one owned by a model that still
    serves, or not named as this operator names them, is left alone. ``kind namespace/name`` of each
    object deleted."""
    from urllib.parse import quote

    from controller.api import API_VERSION

    selector = quote(f"app.kubernetes.io/name=qmlops,app.kubernetes.io/component={COMPONENT},{MODEL_LABEL}")
    models: dict[tuple[str, str], dict[str, Any] | None] = {}
    removed: list[str] = []
    for namespace in namespaces or (None,):
        for api_version, plural in SWEPT:
            listed = await client.get(resource_path(api_version, plural, namespace) + f"?labelSelector={selector}")
            for item in listed.get("items") or ():
                meta = item.get("metadata") or {}
                ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
                owner = next(
                    (
                        o
                        for o in meta.get("ownerReferences") or ()
                        if o.get("kind") == "QuantumModel" and str(o.get("apiVersion", "")).startswith("qmlops.io/")
                    ),
                    None,
                )
                if owner is None or not ns or name != object_name(str(owner.get("name", ""))):
                    continue
                key = (ns, str(owner["name"]))
                if key not in models:
                    try:
                        models[key] = await client.get(resource_path(API_VERSION, "quantummodels", ns, key[1]))
                    except NotFound:
                        models[key] = None
                model = models[key]
                if model is None or (model.get("metadata") or {}).get("uid") != owner.get("uid"):
                    continue  # the model is gone (or another took its name): its garbage collection
                if (model.get("spec") or {}).get("serving") is not None:
                    continue
                try:
                    await client.delete(resource_path(api_version, plural, ns, name))
                except NotFound:
                    continue
                removed.append(f"{'Deployment' if plural == 'deployments' else 'Service'} {ns}/{name}")
    return removed
