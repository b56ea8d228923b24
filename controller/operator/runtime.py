"""What one operator process holds: the API client, the worker pool with a Git checkout per worker,
the checkpoint store, the metrics. The process itself (kopf run with it) is ``process.main``: this
module is imported by the handlers, workers and pipelines and imports none of them.

Reconciles (and the trainings inside them) run on a bounded thread pool, off the event loop. Each pool
thread owns a clone of the GitOps repository (a :class:`WorkTree`) and its own engine ``Reconciler``, so that two models
reconciled at once never share a Git work tree; they meet at the remote, where the engine's registry
rebases and retries a rejected push.

The pool's threads live as long as the process: Qiskit's native allocator (mimalloc 3.x, built into
``qiskit._accelerate``) has crashed the process on the first allocation of a thread started after
other threads that used it had ended, so training threads are made once and never replaced.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import itertools
import logging
import sys
import threading
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import kopf
from pydantic import ValidationError

from controller.api.quantumpolicy import QuantumPolicy
from controller.engine import training
from controller.engine.errors import StallingError
from controller.engine.reconcile import Reconciler, TrainerFn
from controller.engine.registry import Git, GitIdentity
from controller.engine.registry.trust import Trust, TrustError, check_signing_key, private_key_file
from controller.operator import checkpoints, metrics, serving
from controller.operator.jobs import EndedCells, JobExecutor, JobSettings
from controller.operator.kube import ApiAccess, KubeClient, NotFound, resource_path
from controller.operator.secrets import read_credentials
from controller.operator.settings import OperatorConfig
from controller.operator.worktree import WorkTree
from controller.shells.gitsource import GitCredentials, GitSource
from controller.shells.live import ServingEndpoint
from controller.shells.workdir import private_folder

log = logging.getLogger(__name__)
T = TypeVar("T")

CLEANUP_GRACE_SECONDS = 120.0
SWITCH_INTERVAL_SECONDS = 0.0005
_POOLS: dict[tuple[str, int], concurrent.futures.ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def process_pool(name: str, workers: int) -> concurrent.futures.ThreadPoolExecutor:
    """The process's pool of ``workers`` threads named ``name`` (``qmlops-reconcile``: the reconciles;
    ``qmlops-cell``: every pipeline's cells), made on first use and never shut down (see the module's
    docstring); an operator started again in the same process reuses it."""
    with _POOLS_LOCK:
        pool = _POOLS.get((name, workers))
        if pool is None:
            pool = _POOLS[name, workers] = concurrent.futures.ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix=name
            )
        return pool


class SigningKeyError(StallingError):
    """The Secret named by ``--signing-key-secret`` holds no usable SSH key (nothing is committed)."""


class Runtime:
    def __init__(
        self,
        config: OperatorConfig,
        access: ApiAccess,
        *,
        trainer: TrainerFn | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config
        self.access = access
        self.client = KubeClient(access)
        self.metrics = metrics.Metrics()
        self.checkpoints = checkpoints.CheckpointStore(self.client)
        self.ended_cells = EndedCells()  # the jobs executor's: pipeline cells' Jobs a reconcile found ended
        self.trainer = trainer
        self.clock = clock or (lambda: datetime.now(UTC))
        self.closing = threading.Event()
        self.pool = process_pool("qmlops-reconcile", config.training_workers)
        self._in_flight: set[asyncio.Future[Any]] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._local = threading.local()
        self._slots = itertools.count()
        self._metrics_server: Any = None
        self._git_credentials: GitCredentials | None = None
        self._ledger_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._signing_key: Path | None = None
        self.policies: dict[str, QuantumPolicy] = {}  # the QuantumPolicies watched, by name

    # --- lifecycle (kopf startup and cleanup activities) -------------------------------------------

    async def startup(self, **_: Any) -> None:
        self.loop = asyncio.get_running_loop()
        # A reconcile thread gives the GIL up at every file it reads and then waits for the event loop
        # to hand it back: by default up to 5 ms each time, most of a reconcile with nothing to do.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_SECONDS))
        if not self.config.peering:  # a standby replica takes over later than it starts: no index
            try:
                kept = await self.checkpoints.index(self.config.namespaces)
                log.info("%d training checkpoint(s) kept by earlier pods", kept)
            except Exception as err:  # each model then looks its checkpoint up itself
                log.warning("checkpoint ConfigMaps not listed: %s", type(err).__name__)
            try:  # spec.serving taken away while no operator ran: its objects go now
                for gone in await serving.sweep(self.client, self.config.namespaces):
                    log.info("%s removed: its model no longer asks for serving", gone)
            except Exception as err:  # they stay until the model goes; the next start tries again
                log.warning("serving objects not swept: %s", type(err).__name__)
        if self.config.metrics_port:
            self._metrics_server = await metrics.serve(self.metrics, self.config.metrics_port)
        self._prepare_checkouts()

    def _prepare_checkouts(self) -> None:
        """Start each pool thread's checkout now (clone, fetch, first checks: ``WorkTree.warm``), while
        kopf lists the models, rather than at each thread's first reconcile: writing a large
        registry's files is most of a start. Best effort: what fails here is tried again, and
        reported, by the first reconcile."""
        loop = asyncio.get_running_loop()
        for _ in range(self.config.training_workers):
            warming = loop.run_in_executor(self.pool, self._prepare_checkout)
            warming.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: never "never retrieved"

    def _prepare_checkout(self) -> None:
        if self.closing.is_set():
            return
        try:
            registry = self.reconciler().registry
            if isinstance(registry, WorkTree):
                registry.warm()
        except Exception as err:
            log.debug("checkout not prepared at startup: %s", type(err).__name__)

    async def cleanup(self, **_: Any) -> None:
        self.closing.set()  # trainings stop at their next iteration; queued reconciles do not start
        if self._in_flight:  # a reconcile past its training (a push, a status) is let finish
            await asyncio.wait(set(self._in_flight), timeout=CLEANUP_GRACE_SECONDS)
        if self._metrics_server is not None:
            await self._metrics_server.cleanup()
        await self.client.close()

    def login(self, **_: Any) -> kopf.ConnectionInfo:
        return self.access.connection_info()

    # --- running work off the loop -----------------------------------------------------------------

    async def off_loop(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the worker pool; the queue depth counts what waits for a free worker."""
        self.metrics.queue_depth.inc()

        def started() -> T:
            self.metrics.queue_depth.dec()
            if self.closing.is_set():
                raise training.TrainingStopped("the operator is stopping")
            self.metrics.running.inc()
            try:
                return fn()
            finally:
                self.metrics.running.dec()

        future = asyncio.get_running_loop().run_in_executor(self.pool, started)
        self._in_flight.add(future)
        future.add_done_callback(self._in_flight.discard)
        return await future

    def on_loop(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        """From a pool thread: run ``coro`` on the event loop and wait for its result."""
        assert self.loop is not None, "the runtime has not started"
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def ledger_lock(self, namespace: str, model: str) -> asyncio.Lock:
        """Held by a model's reconcile and its pipelines' reconciles: they write the same ledger and share
        the model's training folder (and its ConfigMap), so one at a time."""
        key = (namespace, model)
        lock = self._ledger_locks.get(key)
        if lock is None:
            lock = self._ledger_locks[key] = asyncio.Lock()
        return lock

    # --- the engine, one per pool thread -----------------------------------------------------------

    def reconciler(self, *, coalesce: bool = False) -> Reconciler:
        """This thread's Reconciler over its own checkout, cloned on first use (and retried after a
        failure on the next reconcile); ``coalesce`` lets it skip a fetch made a moment ago."""
        found: Reconciler | None = getattr(self._local, "reconciler", None)
        if found is None:
            found = self._local.reconciler = self._new_reconciler()
        if isinstance(found.registry, WorkTree):
            found.registry.coalesce = coalesce
        return found

    def _new_reconciler(self) -> Reconciler:
        slot = getattr(self._local, "slot", None)
        if slot is None:
            slot = self._local.slot = next(self._slots)
        source = GitSource(
            self.config.repo,
            private_folder(self.config.clones) / f"repo-{slot}",
            branch=self.config.branch,
            credentials=self.git_credentials(),
        )
        checkout = source.prepare()
        name, email = self.config.commit_identity
        registry = WorkTree(
            checkout,
            identity=GitIdentity(name, email),
            remote="origin",
            trust=self.trust(checkout),
            signing_key=self.signing_key(),
        )
        reconciler = Reconciler(
            registry,
            trainer=self.trainer,
            clock=self.clock,
            checkpoint_root=self.checkpoint_root,
            credentials=self.credentials,
            policies=lambda: list(self.policies.values()),
            executor=self.job_executor(),
            live=ServingEndpoint.services(serving.object_name, self.config.serving_live_url),
        )
        return reconciler

    def job_executor(self) -> JobExecutor | None:
        """With ``--executor jobs``, the executor that runs each training as a Job; else None (in-process)."""
        config = self.config
        if config.executor != "jobs":
            return None
        settings = JobSettings(
            image=config.job_image,
            service_account=config.job_service_account,
            backoff_limit=config.job_backoff_limit,
            resources=dict(config.job_resources),
            ceiling=dict(config.job_ceiling),
        )
        return JobExecutor(self, settings)

    @property
    def checkpoint_root(self) -> Path:
        return self.config.checkpoints

    def checkpoint_dir(self, namespace: str, name: str) -> Path:
        return self.checkpoint_root / namespace / name

    def policy_event(self, *, event: Any, name: str, logger: Any, **_: Any) -> None:
        """A QuantumPolicy added, changed or deleted. One that the types refuse (a floor that contradicts
        itself) is logged with its field and leaves the policy as it was: a floor never drops silently."""
        body = event.get("object") or {}
        if event.get("type") == "DELETED":
            self.policies.pop(name, None)
            return
        try:
            self.policies[name] = QuantumPolicy.model_validate(
                {k: body[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in body}
                | {"metadata": {"name": name}}
            )
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            logger.warning(
                "QuantumPolicy %s refused, the previous one stays in force: %s: %s", name, where, first["msg"]
            )

    def trust(self, checkout: Path) -> Trust | None:
        """The allowed signers, with ``--signed-since`` resolved in this checkout (one Trust per
        reconciler: it remembers the signatures it checked)."""
        signers = self.config.allowed_signers
        if signers is None:
            return None
        since = Git(checkout, remote=None).resolve(self.config.signed_since) if self.config.signed_since else None
        return Trust(signers, since)

    def signing_key(self) -> Path | None:
        """The SSH key from ``--signing-key-secret``, written once to a file only this user reads and
        checked like ``qmlops run --signing-key`` checks its file; an unusable key stops every reconcile
        with an error naming the Secret (never its content)."""
        if not self.config.signing_key_secret:
            return None
        if self._signing_key is None:
            namespace, name = self.config.signing_key_secret.split("/", 1)
            where = f"--signing-key-secret: Secret {namespace}/{name}"
            try:
                secret = self.on_loop(self.client.get(resource_path("v1", "secrets", namespace, name)))
            except NotFound:
                raise SigningKeyError(f"{where} does not exist") from None
            data = secret.get("data") or {}
            encoded = data.get("ssh-privatekey") or data.get("signing-key")
            if not encoded:
                raise SigningKeyError(f"{where} holds no ssh-privatekey")
            try:
                text = base64.b64decode(str(encoded), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise SigningKeyError(f"{where}: ssh-privatekey is not base64-encoded text") from None
            path = private_key_file(text, private_folder(self.config.workdir / "signing"))
            try:
                check_signing_key(path)
            except TrustError:
                raise SigningKeyError(
                    f"{where}: ssh-privatekey is not an SSH private key without a passphrase"
                ) from None
            self._signing_key = path
        return self._signing_key

    def git_credentials(self) -> GitCredentials | None:
        if not self.config.git_secret:
            return None
        if self._git_credentials is None:
            namespace, name = self.config.git_secret.split("/", 1)
            secret = self.on_loop(self.client.get(resource_path("v1", "secrets", namespace, name)))
            self._git_credentials = GitCredentials.from_secret(secret)
        return self._git_credentials

    def credentials(self, namespace: str, secret: str) -> training.Credentials:
        """The engine's lookup of ``training.credentialsSecret``, from a pool thread."""
        return self.on_loop(read_credentials(self.client, namespace, secret))

    async def read(self, api_version: str, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as the API server has it now; None when there is none."""
        try:
            return await self.client.get(resource_path(api_version, plural, namespace, name))
        except NotFound:
            return None
