"""How the operator runs: its configuration, and the kopf settings derived from it."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller import __version__
from controller.api import GROUP
from controller.engine.registry.trust import AllowedSigners
from controller.shells.live import SERVICE_URL
from controller.shells.workdir import repository_key

if TYPE_CHECKING:  # kopf takes most of a second to import: `qmlops --help` does not pay for it
    import kopf

FINALIZER = f"{GROUP}/finalizer"
REQUESTED_AT = f"reconcile.{GROUP}/requestedAt"
COMPONENT = "qmlops-operator"
PEERING_NAME = "qmlops"  # the (Cluster)KopfPeering object the operators' replicas meet in
PEERING_LIFETIME = 60  # kopf's default
RELEASE_IMAGE = f"ghcr.io/qmlops/qmlops:{__version__}"  # this release's image: the Jobs' and the servers' default
MIN_PEERING_LIFETIME, MAX_PEERING_LIFETIME = 15, 3600


@dataclass(frozen=True)
class WebhookConfig:
    """Where the validating webhook listens. Kubernetes calls webhooks over HTTPS only: ``insecure``
    (plain HTTP) is for local runs and tests."""

    port: int = 9443
    addr: str = "0.0.0.0"
    host: str | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    insecure: bool = False
    self_signed: bool = False  # a certificate made at start (``certificates.self_signed``), for local runs

    @property
    def serveable(self) -> bool:
        """kopf serves a webhook only with a certificate (or over plain HTTP, ``insecure``): without one
        it would make its own with a package that is not installed, and crash at start."""
        return bool(self.certfile and self.keyfile) or self.insecure or self.self_signed


@dataclass(frozen=True)
class OperatorConfig:
    repo: str  # URL or local path of the GitOps repository the registry and ledger are written to
    workdir: Path  # the Git checkout and the local copy of training checkpoints (an emptyDir in a pod)
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    branch: str | None = None
    git_secret: str | None = None  # "namespace/name" of the Secret with an SSH key or token for the repo
    signing_key_secret: str | None = None  # "namespace/name" of the Secret with the SSH key commits are signed with
    allowed_signers: AllowedSigners | None = None  # the keys the registry's history must verify against
    signed_since: str | None = None  # the last commit from before signing
    webhook: WebhookConfig | None = None
    metrics_port: int | None = 8080
    liveness: str | None = "http://0.0.0.0:8081/healthz"
    training_workers: int = 2
    peering: bool = False  # kopf peering: several operator replicas, one active
    # among peers the live one with the highest priority is active; peers of equal priority would all
    # pause (kopf's rule), so each process draws its own unless one is given
    peering_priority: int | None = None
    peering_lifetime: int = PEERING_LIFETIME  # seconds a keep-alive stays valid (kopf renews it 5-10 s before)
    retry_backoff: tuple[float, ...] = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0)
    # how often a model waiting for approvals looks at Git again (approvals are commits, not events)
    approval_poll: float = 60.0
    commit_identity: tuple[str, str] = ("qmlops-operator", "qmlops-operator@qmlops.io")
    watch_timeout: float = 300.0  # the apiserver ends each watch after this long; kopf reconnects
    serving_image: str = RELEASE_IMAGE  # the image of spec.serving's Deployments
    serving_git_secret: str | None = None  # a Secret of this name in the model's namespace, mounted for Git
    # where monitoring's live check reads a model's live accuracy: its serving Service by default
    serving_live_url: str = SERVICE_URL
    executor: str = "in-process"  # where trainings run: "in-process" (the pool) or "jobs" (a Job each)
    job_image: str = RELEASE_IMAGE  # the jobs executor's image: the operator's own (QMLOPS_IMAGE)
    job_service_account: str = "qmlops-training"
    job_backoff_limit: int = 3
    # the jobs executor's training.resources: what a spec that names none gets, and what none may exceed
    job_resources: dict[str, str] = field(default_factory=dict)
    job_ceiling: dict[str, str] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def clones(self) -> Path:
        """The folder of this repository's and branch's clones (one per pool thread): named by a
        digest of the URL and branch, so that an operator started with another ``--repo`` never
        reuses (nor pushes from) a clone of the one before, and a token in the URL names no folder."""
        return self.workdir / f"git-{repository_key(self.repo, self.branch)}"

    @property
    def checkpoints(self) -> Path:
        return self.workdir / "checkpoints"


def kopf_settings(config: OperatorConfig) -> kopf.OperatorSettings:
    import kopf

    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = FINALIZER
    # Progress and the last handled spec go into annotations, never into status: the CRD's schema
    # does not declare kopf's status fields, so the apiserver would prune them.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = essence_storage(GROUP)
    settings.peering.standalone = not config.peering
    settings.peering.name = PEERING_NAME
    settings.peering.clusterwide = not config.namespaces
    # Named namespaces (no patterns) are served as named: kopf then needs no cluster-wide list and
    # watch of namespaces and CRDs (deploy/namespaced grants none); CRDs are found once, at start.
    settings.scanning.disabled = bool(config.namespaces) and not any(
        char in namespace for namespace in config.namespaces for char in "*?[!"
    )
    if config.peering:
        # without its peering resources an operator must not run unpaused beside its peers
        settings.peering.mandatory = True
        settings.peering.lifetime = config.peering_lifetime
        settings.peering.priority = (
            config.peering_priority if config.peering_priority is not None else secrets.randbelow(2**31 - 1) + 1
        )
    settings.posting.enabled = True
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = COMPONENT
    settings.posting.event_name_prefix = "qmlops-"
    settings.watching.server_timeout = config.watch_timeout
    settings.watching.client_timeout = config.watch_timeout + 30
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10
    settings.background.cancellation_polling = 5
    if config.webhook is not None:
        settings.admission.server = webhook_server(config.webhook)
    return settings


def essence_storage(prefix: str) -> kopf.AnnotationsDiffBaseStorage:
    """kopf's annotations diff-base, building no essence: kopf builds one on every watch event (a deep
    copy of the body's spec, labels and annotations, copied again to clear its progress) to compare it
    with the last handled one, which only changing handlers (``on.create``/``update``/``delete``/
    ``resume``/``field``) look at, and this operator registers none (its handlers are ``on.event``,
    daemons and timers, and a test keeps it so). A handler naming fields to compare (``extra_fields``)
    gets kopf's own essence. The Jobs' bodies,
    whose pod template is most of them, are most of the events while a sweep trains."""
    import kopf

    class EssenceStorage(kopf.AnnotationsDiffBaseStorage):
        def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
            fields = list(extra_fields or ())
            if not fields:
                return kopf.BodyEssence()
            return super().build(body=body, extra_fields=fields)

    return EssenceStorage(prefix=prefix)


def webhook_server(config: WebhookConfig) -> kopf.WebhookServer:
    import kopf

    return kopf.WebhookServer(
        addr=config.addr,
        port=config.port,
        host=config.host,
        certfile=str(config.certfile) if config.certfile else None,
        pkeyfile=str(config.keyfile) if config.keyfile else None,
        insecure=config.insecure,
    )
