"""A Kubernetes API to run the operator against: kmock's KubernetesEmulator with an API server's rules.

No kube-apiserver can run here. kmock (by kopf's author) serves HTTP the way kopf expects: it parses
Kubernetes URLs, answers discovery, streams watches and lets a test script reactions in its DSL
(``api[kmock.action.UPDATE][:2] << kmock.KubernetesError(status=503)``), which is how faults are
injected. What kmock stores is a plain dict with no rules, so this module keeps the objects itself and
applies the rules the operator depends on, as a real API server does:

- resources come from CRD manifests (``crds/*.yaml``, or a CRD created through the API), with their
  scope, names and status subresource in discovery;
- objects are pruned of unknown fields (a status field missing from the schema vanishes, as on a
  cluster), defaulted and validated against the CRD schema with its CEL rules (``tests.support.schema``):
  422 Invalid with causes;
- every write bumps a cluster-wide resourceVersion; a write that names a stale resourceVersion gets 409
  Conflict, a failed JSON-patch ``test`` gets 422 (kopf's finalizer patches rely on both);
- ``metadata.generation`` moves on spec changes only, never on status or metadata;
- the status subresource is apart: writes to the object ignore status, writes to /status ignore all else;
- deletion honours finalizers (deletionTimestamp first, removal when the last finalizer goes), and
  garbage-collects the objects whose ownerReferences point at a removed object;
- watches resume from a resourceVersion and answer 410 Gone once the history is compacted;
- ValidatingWebhookConfigurations are called on create and update (``kubectl apply`` of a bad spec is
  refused by the operator's webhook);
- faults: 5xx/409 through the DSL (:meth:`KubeApi.fail`), slow answers (:meth:`KubeApi.stall`), dropped
  watch streams (:meth:`KubeApi.drop_watches`) and compaction (:meth:`KubeApi.compact`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime
import json
import re
import secrets
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import jsonpatch
import jsonpointer
import kmock
from kmock._internal import dsl, parsing, rendering
from ruamel.yaml import YAML

from tests.support import schema

REPO_ROOT = Path(__file__).resolve().parents[2]
CRDS_DIR = REPO_ROOT / "crds"

JSON = dict[str, Any]
Key = tuple[str, str, str, str]  # group, plural, namespace ("" when cluster-scoped), name
ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


# --- a fix to kmock's URL parsing -------------------------------------------------------------------
# kmock 0.8 reads ``/api/v1/namespaces[/NAME]`` as the prefix of a namespaced URL and fails on it with
# a ValueError (500), so the Namespace resource itself (which kopf lists first) is unreachable.

_kmock_parse_path = parsing.parse_path


def _parse_path(path: str) -> parsing.ParsedPath:
    parts = path.strip("/").split("/")
    if parts[:1] == ["api"] and len(parts) in (3, 4) and parts[2] == "namespaces":
        name = parts[3] if len(parts) == 4 else None
        return parsing.ParsedPath(group="", version=parts[1], plural="namespaces", name=name)
    return _kmock_parse_path(path)


parsing.parse_path = _parse_path


# --- resource kinds --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    custom: bool = False  # served from a CRD: generation, schema, resourceVersion required on PUT
    crd: JSON | None = field(default=None, compare=False, hash=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def resource(self) -> kmock.resource:
        return kmock.resource(self.group, self.version, self.plural)

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def url(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [root]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name:
            parts.append(name)
        if subresource:
            parts.append(subresource)
        return "/".join(parts)


BUILTIN_KINDS = (
    Kind("", "v1", "namespaces", "Namespace", namespaced=False, singular="namespace", short_names=("ns",)),
    Kind("", "v1", "configmaps", "ConfigMap", singular="configmap", short_names=("cm",)),
    Kind("", "v1", "secrets", "Secret", singular="secret"),
    Kind("", "v1", "events", "Event", singular="event", short_names=("ev",)),
    Kind("", "v1", "pods", "Pod", singular="pod", short_names=("po",), status_subresource=True),
    Kind("batch", "v1", "jobs", "Job", singular="job", status_subresource=True),
    Kind("", "v1", "services", "Service", singular="service", short_names=("svc",)),
    Kind("apps", "v1", "deployments", "Deployment", singular="deployment", short_names=("deploy",)),
    Kind(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        singular="customresourcedefinition",
        short_names=("crd", "crds"),
    ),
    Kind(
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        namespaced=False,
        singular="validatingwebhookconfiguration",
    ),
)


def kind_from_crd(crd: JSON) -> Kind:
    spec = crd["spec"]
    names = spec["names"]
    served = [v for v in spec["versions"] if v.get("served", True)]
    version = next((v for v in served if v.get("storage")), served[0])
    return Kind(
        group=spec["group"],
        version=version["name"],
        plural=names["plural"],
        kind=names["kind"],
        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
        singular=names.get("singular", names["kind"].lower()),
        short_names=tuple(names.get("shortNames", ())),
        categories=tuple(names.get("categories", ())),
        status_subresource="status" in (version.get("subresources") or {}),
        custom=True,
        crd=crd,
    )


def kopf_peering_crd(kind: str, plural: str, scope: str) -> JSON:
    """One of kopf's peering CRDs (kopf's peering.yaml, group kopf.dev): an object per operator group
    whose status lists the live operators (their identity, priority and lifetime)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.kopf.dev"},
        "spec": {
            "scope": scope,
            "group": "kopf.dev",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            },
                        }
                    },
                }
            ],
        },
    }


KOPF_PEERING_CRDS = (
    kopf_peering_crd("ClusterKopfPeering", "clusterkopfpeerings", "Cluster"),
    kopf_peering_crd("KopfPeering", "kopfpeerings", "Namespaced"),
)


def load_crds(folder: Path = CRDS_DIR) -> list[JSON]:
    yaml = YAML(typ="safe")
    crds: list[JSON] = []
    for path in sorted(folder.glob("*.yaml")):
        for doc in yaml.load_all(path.read_text(encoding="utf-8")):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                crds.append(json.loads(json.dumps(doc)))
    return crds


# --- errors in the apiserver's shape ---------------------------------------------------------------


def status_error(code: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=code, reason=reason, message=message, details=details or {})


def not_found(kind: Kind, name: str) -> kmock.KubernetesError:
    return status_error(404, "NotFound", f'{kind.qualified} "{name}" not found', name=name, kind=kind.plural)


def conflict(kind: Kind, name: str) -> kmock.KubernetesError:
    return status_error(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {kind.qualified} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        name=name,
        kind=kind.plural,
    )


def invalid(kind: Kind, name: str, problems: list[str]) -> kmock.KubernetesError:
    causes = [{"reason": "FieldValueInvalid", "message": p, "field": p.split(":", 1)[0]} for p in problems]
    message = f'{kind.kind}.{kind.group or "core"} "{name}" is invalid: ' + ", ".join(problems)
    return status_error(422, "Invalid", message, name=name, group=kind.group, kind=kind.kind, causes=causes)


# --- watches ---------------------------------------------------------------------------------------

_DROP = object()


@dataclass(eq=False)
class _Watch:
    kind: Kind
    namespace: str | None
    name: str | None
    selector: Callable[[JSON], bool]
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)

    def wants(self, kind: Kind, obj: JSON) -> bool:
        meta = obj.get("metadata", {})
        return (
            kind == self.kind
            and (self.namespace is None or meta.get("namespace") == self.namespace)
            and (self.name is None or meta.get("name") == self.name)
            and self.selector(obj)
        )


def selector(label_selector: str | None, field_selector: str | None) -> Callable[[JSON], bool]:
    """Equality-based label and field selectors (``a=b,c!=d,e``; ``metadata.name=x``)."""
    checks: list[Callable[[JSON], bool]] = []
    for term in filter(None, (label_selector or "").split(",")):
        checks.append(_label_check(term.strip()))
    for term in filter(None, (field_selector or "").split(",")):
        path, negate, want = re.split(r"(!?=+)", term.strip(), maxsplit=1)
        checks.append(_field_check(path.split("."), want, negate.startswith("!")))
    return lambda obj: all(check(obj) for check in checks)


def _label_check(term: str) -> Callable[[JSON], bool]:
    def labels(obj: JSON) -> dict[str, str]:
        return obj.get("metadata", {}).get("labels") or {}

    if "!=" in term:
        key, want = term.split("!=", 1)
        return lambda obj: labels(obj).get(key) != want
    if "=" in term:
        key, want = term.split("=", 1)
        key, want = key.rstrip("="), want.lstrip("=")
        return lambda obj: labels(obj).get(key) == want
    if term.startswith("!"):
        return lambda obj: term[1:] not in labels(obj)
    return lambda obj: term in labels(obj)


def _field_check(path: list[str], want: str, negate: bool) -> Callable[[JSON], bool]:
    def check(obj: JSON) -> bool:
        node: Any = obj
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        return (str(node) == want) != negate

    return check


# --- the API server --------------------------------------------------------------------------------


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _without(obj: JSON, *keys: str) -> JSON:
    return {k: v for k, v in obj.items() if k not in keys}


AdmissionHook = Callable[[Kind, str, JSON, JSON | None], Any]


@attrs.define(kw_only=True)
class KubeApi(kmock.KubernetesEmulator):
    """kmock's emulator with the API server's rules the operator relies on (see the module docstring)."""

    history_limit: int = 200_000
    call_webhooks: bool = True
    _kinds: dict[tuple[str, str], Kind] = attrs.field(factory=dict, init=False)
    _store: dict[Key, JSON] = attrs.field(factory=dict, init=False)
    # the same objects by (group, plural), in the store's order: a list of one kind (the webhook
    # configurations looked up on every write) does not walk every object of every kind
    _by_kind: dict[tuple[str, str], dict[Key, JSON]] = attrs.field(factory=dict, init=False)
    _rv: int = attrs.field(default=0, init=False)
    _compacted: int = attrs.field(default=0, init=False)
    _history: deque[tuple[int, Kind, JSON]] = attrs.field(factory=deque, init=False)
    _watches: set[_Watch] = attrs.field(factory=set, init=False)
    _tick: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)
    _webhook_session: aiohttp.ClientSession | None = attrs.field(default=None, init=False)
    _valid_specs: dict[str, set[str]] = attrs.field(factory=dict, init=False)
    _spec_free: dict[str, JSON] = attrs.field(factory=dict, init=False)
    writes: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.fallback[kmock.method.PUT] << self._serve_replace
        for kind in BUILTIN_KINDS:
            self.register(kind)

    async def __aexit__(self, *exc: Any) -> None:
        for watch in list(self._watches):
            watch.queue.put_nowait(_DROP)
        if self._webhook_session is not None:
            await self._webhook_session.close()
        await super().__aexit__(*exc)

    # --- registration ------------------------------------------------------------------------------

    def register(self, kind: Kind) -> Kind:
        self._kinds[(kind.group, kind.plural)] = kind
        self.resources[kind.resource] = kmock.ResourceInfo(
            kind=kind.kind,
            singular=kind.singular or kind.kind.lower(),
            namespaced=kind.namespaced,
            verbs=set(ALL_VERBS),
            shortnames=set(kind.short_names),
            categories=set(kind.categories),
            subresources={"status"} if kind.status_subresource else set(),
        )
        return kind

    def register_crd(self, crd: JSON) -> Kind:
        """Serve a CRD's resource and keep the CRD itself as an object, as the apiserver would."""
        kind = self.register(kind_from_crd(crd))
        crds = self.kind("apiextensions.k8s.io", "customresourcedefinitions")
        name = crd["metadata"]["name"]
        if (crds.group, crds.plural, "", name) not in self._store:
            self._commit_new(crds, copy.deepcopy(crd))
        return kind

    def register_crds(self, folder: Path = CRDS_DIR) -> list[Kind]:
        crds = load_crds(folder)
        if not crds:
            raise FileNotFoundError(f"{folder}: no CustomResourceDefinition found (run `qmlops crds --write`)")
        return [self.register_crd(crd) for crd in crds]

    def register_peering_crds(self) -> list[Kind]:
        """kopf's peering resources, for operators run with ``--peering``."""
        return [self.register_crd(copy.deepcopy(crd)) for crd in KOPF_PEERING_CRDS]

    def kind(self, group: str, plural: str) -> Kind:
        try:
            return self._kinds[(group, plural)]
        except KeyError:
            raise LookupError(f"{plural}.{group} is not registered") from None

    def kind_named(self, kind_name: str) -> Kind:
        return next(k for k in self._kinds.values() if kind_name in (k.kind, k.plural, *k.short_names))

    def _get_resources(self) -> list[kmock.resource]:
        return [kind.resource for kind in self._kinds.values()]

    # --- direct access for assertions (no HTTP, no faults) -----------------------------------------

    def read(self, kind: Kind | str, namespace: str | None, name: str) -> JSON | None:
        kind = self.kind_named(kind) if isinstance(kind, str) else kind
        obj = self._store.get(self._key(kind, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list(self, kind: Kind | str, namespace: str | None = None) -> list[JSON]:
        kind = self.kind_named(kind) if isinstance(kind, str) else kind
        return [
            copy.deepcopy(obj)
            for (_, _, ns, _), obj in self._by_kind.get((kind.group, kind.plural), {}).items()
            if namespace is None or ns == namespace
        ]

    def count(self, kind: Kind | str, predicate: Callable[[JSON], bool], namespace: str | None = None) -> int:
        """How many stored objects of ``kind`` satisfy ``predicate`` (read in place: do not mutate)."""
        kind = self.kind_named(kind) if isinstance(kind, str) else kind
        return sum(
            1
            for (_, _, ns, _), obj in self._by_kind.get((kind.group, kind.plural), {}).items()
            if (namespace is None or ns == namespace) and predicate(obj)
        )

    @property
    def resource_version(self) -> int:
        return self._rv

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 60.0) -> Any:
        """Wait until ``predicate()`` is truthy, re-checking after every write (and every 0.1 s, for
        conditions outside the store); returns its value."""
        async with asyncio.timeout(timeout):
            while not (result := predicate()):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._tick.wait(), 0.1)
            return result

    def write_kubeconfig(self, path: Path, *, user: str = "robot", token: str = "pod-token") -> Path:
        """A kubeconfig at ``path`` that points a client (the operator, a Job's pod) at this API."""
        path.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: harness\n"
            f"clusters: [{{name: harness, cluster: {{server: '{str(self.url).rstrip('/')}'}}}}]\n"
            f"users: [{{name: {user}, user: {{token: {token}}}}}]\n"
            f"contexts: [{{name: harness, context: {{cluster: harness, user: {user}}}}}]\n"
        )
        return path

    def watching(self, plural: str) -> bool:
        """Whether a client holds a watch on ``plural`` open (kopf has started serving it)."""
        return any(w.kind.plural == plural for w in self._watches)

    def calls(self, *user_agents: str) -> set[tuple[str, str, str]]:
        """(apiGroup, resource[/subresource], verb) of every resource request made by the clients whose
        User-Agent starts with one of ``user_agents``: what their RBAC rules must allow."""
        return {(group, plural, verb) for _, group, plural, verb in self.calls_in(*user_agents)}

    def calls_in(self, *user_agents: str) -> set[tuple[str | None, str, str, str]]:
        """The same calls with the namespace each was made in (None: cluster-wide), for checking a
        Role (which allows calls in its own namespace only) rather than a ClusterRole."""
        verbs = {
            kmock.action.LIST: "list",
            kmock.action.WATCH: "watch",
            kmock.action.FETCH: "get",
            kmock.action.CREATE: "create",
            kmock.action.UPDATE: "patch",
            kmock.action.DELETE: "delete",
        }
        used: set[tuple[str | None, str, str, str]] = set()
        for request in self._requests:
            agent = {k.lower(): v for k, v in request.headers.items()}.get("user-agent", "")
            res = request.resource
            if not agent.startswith(user_agents) or res is None or not res.plural:
                continue
            action = request.action
            verb = "update" if request.method == kmock.method.PUT else verbs.get(action) if action else None
            if verb is None:
                continue
            plural = f"{res.plural}/{request.subresource}" if request.subresource else res.plural
            used.add((request.namespace, res.group or "", plural, verb))
        return used

    # --- faults ------------------------------------------------------------------------------------

    def fail(
        self,
        action: kmock.action,
        plural: str | None = None,
        *,
        status: int = 503,
        times: int = 1,
        subresource: str | None = None,
        name: str | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with an error; nothing is written."""
        reason = {409: "Conflict", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}.get(status, "Error")
        error = kmock.KubernetesError(status=status, reason=reason, message="injected fault", details={})
        self._fault_view(action, plural, subresource, name) << _countdown(times, error)

    def stall(self, action: kmock.action, plural: str | None = None, *, seconds: float, times: int = 1) -> None:
        """Hold the next ``times`` matching requests for ``seconds`` before failing them (a timeout)."""
        error = kmock.KubernetesError(status=504, reason="Timeout", message="injected timeout", details={})
        self._fault_view(action, plural, None, None) << _countdown(times, error, delay=seconds)

    def _fault_view(self, action: kmock.action, plural: str | None, subresource: str | None, name: str | None) -> Any:
        view: Any = self[action]
        if plural is not None:
            known = next((k for (_, p), k in self._kinds.items() if p == plural), None)
            view = view[known.resource if known else kmock.resource(plural=plural)]
        if subresource is not None:
            view = view[kmock.subresource(subresource)]
        if name is not None:
            view = view[kmock.name(name)]
        return view

    def drop_watches(self) -> int:
        """End every open watch stream, as an apiserver restart or a load balancer would."""
        for watch in list(self._watches):
            watch.queue.put_nowait(_DROP)
        return len(self._watches)

    def compact(self) -> None:
        """Forget the change history: a watch resumed from an older resourceVersion gets 410 Gone."""
        self._history.clear()
        self._compacted = self._rv

    # --- request plumbing --------------------------------------------------------------------------

    async def _handle(self, request: rendering.Request) -> Any:
        """kmock's dispatch (by priority, then in the order declared), without two of its costs.

        The emulator's own store is skipped (it writes before the reactions run, even for faults): the
        fallbacks below are the store, and scripted reactions (faults) come before them. And a view is
        matched by its criteria instead of searching its history of requests for this one, which
        kmock does and which makes each request cost as much as all the requests before it.
        """
        payloads = sorted(
            enumerate(self._payloads), key=lambda item: ((*(-p for p in item[1].priorities), *(0,) * 8)[:8], item[0])
        )
        for _, payload in payloads:
            if payload._disabled.is_set() or not _matches(payload._source, request):
                continue
            try:
                return await payload(request)
            except rendering.ReactionMismatchError:
                payload._disabled.set()
            except NotImplementedError:
                pass
        raise NotImplementedError("no reaction matches the request")

    def _kind_of(self, request: rendering.Request) -> Kind:
        res = request.resource
        if res is None or (res.group, res.plural) not in self._kinds:
            raise status_error(404, "NotFound", "the server could not find the requested resource")
        kind = self._kinds[(res.group or "", res.plural or "")]
        if request.subresource not in (None, "status") or (request.subresource and not kind.status_subresource):
            raise status_error(404, "NotFound", "the server could not find the requested resource")
        return kind

    def _key(self, kind: Kind, namespace: str | None, name: str) -> Key:
        return (kind.group, kind.plural, (namespace or "") if kind.namespaced else "", name)

    def _existing(self, kind: Kind, namespace: str | None, name: str) -> JSON:
        obj = self._store.get(self._key(kind, namespace, name))
        if obj is None:
            raise not_found(kind, name)
        return obj

    # --- reads -------------------------------------------------------------------------------------

    async def _serve_fetch(self, request: rendering.Request) -> JSON:
        kind = self._kind_of(request)
        return copy.deepcopy(self._existing(kind, request.namespace, request.name or ""))

    async def _serve_list(self, request: rendering.Request) -> JSON:
        kind = self._kind_of(request)
        wants = selector(request.params.get("labelSelector"), request.params.get("fieldSelector"))
        items = [obj for obj in self.list(kind, request.namespace) if wants(obj)]
        return {
            "apiVersion": kind.api_version,
            "kind": f"{kind.kind}List",
            "metadata": {"resourceVersion": str(self._rv), "continue": ""},
            "items": items,
        }

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[Any]:
        kind = self._kind_of(request)
        params = request.params
        watch = _Watch(
            kind, request.namespace, request.name, selector(params.get("labelSelector"), params.get("fieldSelector"))
        )
        since = params.get("resourceVersion") or ""
        backlog: list[JSON]
        if since in ("", "0"):
            backlog = [
                {"type": "ADDED", "object": obj} for obj in self.list(kind, request.namespace) if watch.wants(kind, obj)
            ]
            if params.get("sendInitialEvents") == "true":
                backlog.append(self._bookmark(kind, initial_end=True))
        elif not since.isdigit() or int(since) < self._compacted:
            backlog = [self._gone(since)]
        else:
            backlog = [
                copy.deepcopy(ev) for rv, k, ev in self._history if rv > int(since) and watch.wants(k, ev["object"])
            ]
        # Registered before the first yield, so no write can slip between the backlog and the stream.
        gone = backlog and backlog[-1]["type"] == "ERROR"
        if not gone:
            self._watches.add(watch)
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        try:
            yield b""
            for event in backlog:
                yield event
            if gone:
                return
            async with asyncio.timeout(timeout):
                while (event := await watch.queue.get()) is not _DROP:
                    yield event
        except TimeoutError:
            return
        finally:
            self._watches.discard(watch)

    def _bookmark(self, kind: Kind, initial_end: bool = False) -> JSON:
        meta: JSON = {"resourceVersion": str(self._rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"type": "BOOKMARK", "object": {"apiVersion": kind.api_version, "kind": kind.kind, "metadata": meta}}

    @staticmethod
    def _gone(since: str) -> JSON:
        return {
            "type": "ERROR",
            "object": {
                "apiVersion": "v1",
                "kind": "Status",
                "status": "Failure",
                "reason": "Expired",
                "code": 410,
                "message": f"too old resource version: {since}",
            },
        }

    # --- writes ------------------------------------------------------------------------------------

    async def _serve_create(self, request: rendering.Request) -> Any:
        kind = self._kind_of(request)
        body = request.data
        if not isinstance(body, dict):
            raise status_error(400, "BadRequest", "the body of the request was not a JSON object")
        obj = self._prepare_new(kind, request.namespace, copy.deepcopy(body))
        await self._admit(kind, "CREATE", obj, None)
        key = self._key(kind, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if key in self._store:  # created meanwhile, while the webhook answered
            raise self._already_exists(kind, obj["metadata"]["name"])
        created = self._commit_new(kind, obj)
        return kmock.Response(status=201, payload=copy.deepcopy(created))

    def _prepare_new(self, kind: Kind, namespace: str | None, obj: JSON) -> JSON:
        meta = obj.setdefault("metadata", {})
        if kind.namespaced:
            if namespace and meta.get("namespace") not in (None, namespace):
                raise status_error(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            meta["namespace"] = namespace = namespace or meta.get("namespace")
            if not namespace:
                raise status_error(400, "BadRequest", "a namespaced object needs a namespace")
            if ("", "namespaces", "", namespace) not in self._store:
                raise status_error(
                    404, "NotFound", f'namespaces "{namespace}" not found', name=namespace, kind="namespaces"
                )
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        name = meta.get("name") or ""
        if not name:
            raise invalid(kind, "", ["metadata.name: Required value: name or generateName is required"])
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) or len(name) > 253:
            raise invalid(
                kind, name, [f"metadata.name: Invalid value: {json.dumps(name)}: a lowercase RFC 1123 subdomain"]
            )
        if self._key(kind, namespace, name) in self._store:
            raise self._already_exists(kind, name)
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        if kind.status_subresource:
            obj.pop("status", None)
        for managed in ("uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp"):
            meta.pop(managed, None)
        self._conform(kind, obj)
        if kind.kind == "Secret":
            self._secret_string_data(obj)
        if kind.kind == "CustomResourceDefinition":
            kind_from_crd(obj)  # refuses a CRD it cannot serve before storing it
        return obj

    @staticmethod
    def _already_exists(kind: Kind, name: str) -> kmock.KubernetesError:
        return status_error(
            409, "AlreadyExists", f'{kind.qualified} "{name}" already exists', name=name, kind=kind.plural
        )

    def _commit_new(self, kind: Kind, obj: JSON) -> JSON:
        meta = obj.setdefault("metadata", {})
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        if kind.custom:
            meta["generation"] = 1
        if kind.kind == "Namespace":
            obj["status"] = {"phase": "Active"}
        if kind.kind == "CustomResourceDefinition":
            self.register(kind_from_crd(obj))
        return self._store_write(kind, obj, "ADDED")

    async def _serve_update(self, request: rendering.Request) -> JSON:
        kind = self._kind_of(request)
        name = request.name or ""
        old = self._existing(kind, request.namespace, name)
        headers = {k.lower(): v for k, v in request.headers.items()}
        content_type = headers.get("content-type", "").split(";")[0].strip()
        new = self._patched(kind, old, request.data, content_type)
        return await self._update(kind, old, new, request.subresource == "status", request.namespace)

    async def _serve_replace(self, request: rendering.Request) -> JSON:
        kind = self._kind_of(request)
        name = request.name or ""
        old = self._existing(kind, request.namespace, name)
        new = copy.deepcopy(request.data)
        if not isinstance(new, dict) or new.get("metadata", {}).get("name") not in (None, name):
            raise status_error(400, "BadRequest", "the name of the object does not match the name on the URL")
        wanted = new.get("metadata", {}).get("resourceVersion")
        if wanted is None and kind.custom:
            raise invalid(kind, name, ["metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"])
        if wanted is not None and wanted != old["metadata"]["resourceVersion"]:
            raise conflict(kind, name)
        return await self._update(kind, old, new, request.subresource == "status", request.namespace)

    def _patched(self, kind: Kind, old: JSON, patch: Any, content_type: str) -> JSON:
        name = old["metadata"]["name"]
        if content_type == "application/json-patch+json":
            try:
                new = jsonpatch.JsonPatch(patch).apply(copy.deepcopy(old))
            except jsonpatch.JsonPatchTestFailed as err:
                raise status_error(
                    422, "Invalid", f"the server rejected our request due to an error in our request: {err}"
                ) from None
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as err:
                raise status_error(422, "Invalid", f"the patch does not apply: {err}") from None
            if new.get("metadata", {}).get("resourceVersion") != old["metadata"]["resourceVersion"]:
                raise conflict(kind, name)
            return dict(new)
        if content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            if not isinstance(patch, dict):
                raise status_error(400, "BadRequest", "a merge patch is a JSON object")
            wanted = (patch.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != old["metadata"]["resourceVersion"]:
                raise conflict(kind, name)
            return _merge(copy.deepcopy(old), patch)
        raise status_error(
            415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {content_type}"
        )

    async def _update(self, kind: Kind, old: JSON, new: JSON, to_status: bool, namespace: str | None) -> JSON:
        name = old["metadata"]["name"]
        new = self._carry_over(kind, old, new, to_status)
        self._conform(kind, new)
        if kind.kind == "Secret":
            self._secret_string_data(new)
        if old.get("metadata", {}).get("deletionTimestamp"):
            added = set(new["metadata"].get("finalizers") or ()) - set(old["metadata"].get("finalizers") or ())
            if added:
                raise invalid(
                    kind,
                    name,
                    ["metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted"],
                )
        if not to_status:
            await self._admit(kind, "UPDATE", new, old)
        current = self._store.get(self._key(kind, namespace, name))
        if current is None:
            raise not_found(kind, name)
        if current["metadata"]["resourceVersion"] != old["metadata"]["resourceVersion"]:
            raise conflict(kind, name)  # written meanwhile, while the webhook answered
        if _same(new, old):
            return copy.deepcopy(old)  # a no-op write: no new resourceVersion, no watch event
        if kind.custom and not to_status and _without(new, "metadata", "status") != _without(old, "metadata", "status"):
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            return self._remove(kind, new)
        return copy.deepcopy(self._store_write(kind, new, "MODIFIED"))

    @staticmethod
    def _carry_over(kind: Kind, old: JSON, new: JSON, to_status: bool) -> JSON:
        """What a write may not change: identity, server-set metadata, and the other half of the object."""
        if to_status:  # old's status is replaced: not copied first
            result = {key: value if key == "status" else copy.deepcopy(value) for key, value in old.items()}
            if "status" in new:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
            return result
        if kind.status_subresource:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        meta = new.setdefault("metadata", {})
        for fixed in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "generation",
            "resourceVersion",
        ):
            if fixed in old["metadata"]:
                meta[fixed] = old["metadata"][fixed]
            else:
                meta.pop(fixed, None)
        new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]
        return new

    def _conform(self, kind: Kind, obj: JSON) -> None:
        """Prune, default and validate a custom resource against its CRD, as the apiserver does.

        A spec already accepted once is not checked again (the apiserver's validation ratcheting
        lets unchanged fields through too): only the rest of the object is, against the CRD without
        its spec. CEL rules cost milliseconds each, and the operator writes status far more often
        than anyone writes a spec."""
        if not kind.custom or kind.crd is None:
            return
        version = schema.version_schema(kind.crd, kind.version)
        stored = schema.prune_and_default(obj, version)
        spec = json.dumps(_without(stored, "metadata", "status", "apiVersion", "kind"), sort_keys=True)
        known = self._valid_specs.setdefault(kind.plural, set())
        if spec in known:
            problems = schema.validate_against_crd(_without(stored, "spec"), self._without_spec(kind))
        else:
            problems = schema.validate_against_crd(stored, kind.crd, kind.version)
            if not problems and len(known) < 10_000:
                known.add(spec)
        if problems:
            raise invalid(kind, obj.get("metadata", {}).get("name", ""), problems)
        obj.clear()
        obj.update(stored)

    def _without_spec(self, kind: Kind) -> JSON:
        found = self._spec_free.get(kind.plural)
        if found is None:
            assert kind.crd is not None
            found = copy.deepcopy(kind.crd)
            for entry in found["spec"]["versions"]:
                root = entry["schema"]["openAPIV3Schema"]
                root.get("properties", {}).pop("spec", None)
                root["required"] = [r for r in root.get("required", []) if r != "spec"]
                root.pop("x-kubernetes-validations", None)
            found = self._spec_free[kind.plural] = found
        return found

    @staticmethod
    def _secret_string_data(obj: JSON) -> None:
        for key, value in (obj.pop("stringData", None) or {}).items():
            obj.setdefault("data", {})[key] = base64.b64encode(str(value).encode()).decode()

    async def _serve_delete(self, request: rendering.Request) -> JSON:
        kind = self._kind_of(request)
        name = request.name or ""
        obj = self._existing(kind, request.namespace, name)
        preconditions = (request.data or {}).get("preconditions") if isinstance(request.data, dict) else None
        for field_name in ("resourceVersion", "uid"):
            wanted = (preconditions or {}).get(field_name)
            if wanted is not None and wanted != obj["metadata"].get(field_name):
                raise conflict(kind, name)
        return copy.deepcopy(self._delete(kind, obj))

    def _delete(self, kind: Kind, obj: JSON) -> JSON:
        meta = obj["metadata"]
        if meta.get("deletionTimestamp"):
            return obj
        if meta.get("finalizers"):
            marked = copy.deepcopy(obj)
            marked["metadata"]["deletionTimestamp"] = _now()
            marked["metadata"]["deletionGracePeriodSeconds"] = 0
            if kind.custom:
                marked["metadata"]["generation"] = meta.get("generation", 1) + 1
            return self._store_write(kind, marked, "MODIFIED")
        return self._remove(kind, obj)

    def _remove(self, kind: Kind, obj: JSON) -> JSON:
        meta = obj["metadata"]
        key = self._key(kind, meta.get("namespace"), meta["name"])
        del self._store[key]
        del self._by_kind[(kind.group, kind.plural)][key]
        gone = self._store_write(kind, obj, "DELETED", keep=False)
        self._collect_garbage(meta["uid"])
        return gone

    def _collect_garbage(self, owner_uid: str) -> None:
        """Background cascading deletion: dependents whose every owner is gone are deleted too."""
        alive = {o["metadata"]["uid"] for o in self._store.values()}
        for (group, plural, _, _), obj in list(self._store.items()):
            owners = [ref.get("uid") for ref in obj["metadata"].get("ownerReferences") or ()]
            if owner_uid in owners and not any(uid in alive for uid in owners):
                self._delete(self._kinds[(group, plural)], obj)

    # --- the store ---------------------------------------------------------------------------------

    def _store_write(self, kind: Kind, obj: JSON, event: str, keep: bool = True) -> JSON:
        self._rv += 1
        self.writes += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        if keep:
            key = self._key(kind, obj["metadata"].get("namespace"), obj["metadata"]["name"])
            self._store[key] = self._by_kind.setdefault((kind.group, kind.plural), {})[key] = obj
        snapshot = {"type": event, "object": copy.deepcopy(obj)}
        if len(self._history) >= self.history_limit:
            self._compacted = self._history.popleft()[0]
        self._history.append((self._rv, kind, snapshot))
        for watch in list(self._watches):
            if watch.wants(kind, obj):
                watch.queue.put_nowait(copy.deepcopy(snapshot))
        self._tick.set()
        self._tick = asyncio.Event()
        return obj

    # --- admission webhooks ------------------------------------------------------------------------

    async def _admit(self, kind: Kind, operation: str, obj: JSON, old: JSON | None) -> None:
        """Call the ValidatingWebhookConfigurations whose rules match, like the apiserver's admission."""
        if not self.call_webhooks:
            return
        for config in self.list("validatingwebhookconfigurations"):
            for hook in config.get("webhooks") or ():
                if _hook_matches(hook, kind, operation):
                    await self._call_webhook(hook, kind, operation, obj, old)

    async def _call_webhook(self, hook: JSON, kind: Kind, operation: str, obj: JSON, old: JSON | None) -> None:
        url = (hook.get("clientConfig") or {}).get("url")
        if not url:
            return  # a service reference: no cluster DNS here
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": {"group": kind.group, "version": kind.version, "kind": kind.kind},
                "resource": {"group": kind.group, "version": kind.version, "resource": kind.plural},
                "requestKind": {"group": kind.group, "version": kind.version, "kind": kind.kind},
                "requestResource": {"group": kind.group, "version": kind.version, "resource": kind.plural},
                "name": obj["metadata"].get("name"),
                "namespace": obj["metadata"].get("namespace"),
                "operation": operation,
                "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters"]},
                "object": obj,
                "oldObject": old,
                "dryRun": False,
                "options": {},
            },
        }
        if self._webhook_session is None:
            self._webhook_session = aiohttp.ClientSession()
        timeout = aiohttp.ClientTimeout(total=float(hook.get("timeoutSeconds", 10)))
        try:
            async with self._webhook_session.post(url, json=review, timeout=timeout, ssl=False) as rsp:
                answer = await rsp.json()
        except (aiohttp.ClientError, TimeoutError) as err:
            if hook.get("failurePolicy", "Fail") == "Ignore":
                return
            raise status_error(
                500, "InternalError", f'Internal error occurred: failed calling webhook "{hook["name"]}": {err}'
            ) from None
        response = answer.get("response") or {}
        if not response.get("allowed"):
            result = response.get("status") or {}
            message = result.get("message") or "denied"
            raise status_error(
                int(result.get("code") or 400),
                "Forbidden" if result.get("code") == 403 else "BadRequest",
                f'admission webhook "{hook["name"]}" denied the request: {message}',
            )


def _matches(view: Any, request: rendering.Request) -> bool:
    """Whether ``request`` is in ``view``: by criteria along the chain of filters; kmock's own
    history search only for views whose meaning depends on history (slices, groups)."""
    while True:
        if isinstance(view, dsl.Root):
            return True
        if isinstance(view, dsl.Filter):
            if not view.criteria(request):
                return False
        elif not isinstance(view, dsl.Priority):
            return request in view
        view = view._source


def _countdown(times: int, error: Exception, delay: float = 0.0) -> Callable[[], Awaitable[Any]]:
    """A kmock reaction that answers with ``error`` ``times`` times, then steps aside for good (kmock
    disables a reaction that answers NotImplemented, and the next one in line answers)."""
    left = [times]

    async def react() -> Any:
        if left[0] <= 0:
            return NotImplemented
        left[0] -= 1
        await asyncio.sleep(delay)
        raise error

    return react


def _hook_matches(hook: JSON, kind: Kind, operation: str) -> bool:
    for rule in hook.get("rules") or ():
        groups, versions = rule.get("apiGroups") or (), rule.get("apiVersions") or ()
        resources, operations = rule.get("resources") or (), rule.get("operations") or ()
        if (
            (kind.group in groups or "*" in groups)
            and (kind.version in versions or "*" in versions)
            and (kind.plural in resources or "*" in resources)
            and (operation in operations or "*" in operations)
        ):
            return True
    return False


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = _merge(target.get(key), value)
    return target


def _same(new: JSON, old: JSON) -> bool:
    strip = ("resourceVersion",)
    return {**new, "metadata": _without(new["metadata"], *strip)} == {
        **old,
        "metadata": _without(old["metadata"], *strip),
    }


# --- clients ---------------------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, body: JSON) -> None:
        super().__init__(f"{status}: {body.get('message', body)}")
        self.status = status
        self.body = body


class Client:
    """A small JSON client over HTTP for tests: what kubectl would send."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api

    async def call(self, method: str, url: str, body: Any = None, content_type: str = "application/json") -> JSON:
        headers = {"Content-Type": content_type}
        data = json.dumps(body) if body is not None else None
        async with self.api.request(method, url, data=data, headers=headers) as rsp:
            text = await rsp.text()
            payload = json.loads(text) if text.strip() else {}
            if rsp.status >= 400:
                raise ApiError(rsp.status, payload)
            return dict(payload)

    def _kind(self, obj_or_kind: JSON | str) -> Kind:
        if isinstance(obj_or_kind, str):
            return self.api.kind_named(obj_or_kind)
        return self.api.kind_named(obj_or_kind["kind"])

    async def create(self, obj: JSON) -> JSON:
        kind = self._kind(obj)
        return await self.call("POST", kind.url(obj.get("metadata", {}).get("namespace")), obj)

    async def get(self, kind: str, namespace: str | None, name: str) -> JSON:
        return await self.call("GET", self._kind(kind).url(namespace, name))

    async def patch(self, kind: str, namespace: str | None, name: str, patch: JSON, status: bool = False) -> JSON:
        url = self._kind(kind).url(namespace, name, "status" if status else None)
        return await self.call("PATCH", url, patch, "application/merge-patch+json")

    async def replace(self, obj: JSON, status: bool = False) -> JSON:
        meta = obj["metadata"]
        url = self._kind(obj).url(meta.get("namespace"), meta["name"], "status" if status else None)
        return await self.call("PUT", url, obj)

    async def delete(self, kind: str, namespace: str | None, name: str) -> JSON:
        return await self.call("DELETE", self._kind(kind).url(namespace, name))

    async def apply(self, obj: JSON) -> JSON:
        """Create, or merge the spec, labels and annotations into the existing object (kubectl apply)."""
        try:
            return await self.create(obj)
        except ApiError as err:
            if err.status != 409:
                raise
        meta = obj["metadata"]
        patch = {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}
        patch["metadata"] = {k: meta[k] for k in ("labels", "annotations") if k in meta}
        return await self.patch(obj["kind"], meta.get("namespace"), meta["name"], patch)

    async def namespace(self, name: str) -> JSON:
        try:
            return await self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        except ApiError as err:
            if err.status != 409:
                raise
            return await self.get("Namespace", None, name)


def documents(paths: Iterable[Path]) -> list[JSON]:
    yaml = YAML(typ="safe")
    out: list[JSON] = []
    for path in paths:
        out += [json.loads(json.dumps(d)) for d in yaml.load_all(path.read_text(encoding="utf-8")) if d]
    return out


# --- kopf against the harness ----------------------------------------------------------------------


def login_to(api: KubeApi) -> Callable[..., Any]:
    """A kopf login handler that points kopf at the harness."""
    import kopf

    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=str(api.url).rstrip("/"), insecure=True, scheme="Bearer", token="harness")

    return login


class _NotKopfs(Collection["asyncio.Task[Any]"]):
    """The tasks kopf must leave alone when it stops: all but its own. ``kopf.operator`` cancels every
    task created while it ran, which in a test includes the test's own and the harness's."""

    def __contains__(self, task: object) -> bool:
        coro = task.get_coro() if isinstance(task, asyncio.Task) else None
        code = getattr(coro, "cr_code", None) or getattr(coro, "ag_code", None)
        return code is None or "/kopf/" not in code.co_filename.replace("\\", "/")

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(())

    def __len__(self) -> int:
        return 0


@contextlib.asynccontextmanager
async def kopf_running(
    registry: Any,
    *,
    settings: Any = None,
    namespaces: Iterable[str] = (),
    memo: Any = None,
    ready: Callable[[], Awaitable[Any]] | None = None,
    startup_timeout: float = 30.0,
    liveness_endpoint: str | None = None,
) -> AsyncIterator[asyncio.Task[None]]:
    """Run a kopf operator in this event loop until the block ends, then stop it gracefully.

    ``ready`` is awaited (within ``startup_timeout``) before the block starts: kopf's own ready flag
    is set once it has logged in, before it has discovered resources or opened its webhook server.
    """
    import kopf

    stop = asyncio.Event()
    listed = list(namespaces)
    tasks = await kopf.spawn_tasks(
        registry=registry,
        settings=settings,
        clusterwide=not listed,
        namespaces=listed,
        standalone=True,
        stop_flag=stop,
        memo=memo,
        liveness_endpoint=liveness_endpoint,
    )
    task = asyncio.create_task(kopf.run_tasks(tasks, ignored=_NotKopfs()))
    try:
        if ready is not None:
            waiter: asyncio.Future[Any] = asyncio.ensure_future(ready())
            await asyncio.wait({task, waiter}, timeout=startup_timeout, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()  # raises what stopped it
            if not waiter.done():
                waiter.cancel()
                raise TimeoutError("the operator did not get ready")
            waiter.result()
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)


def free_port() -> int:
    """A TCP port nothing listens on now (for a server a test starts)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def port_open(host: str, port: int, timeout: float = 30.0) -> None:
    """Wait until something listens on ``host:port``."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                _, writer = await asyncio.open_connection(host, port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return
