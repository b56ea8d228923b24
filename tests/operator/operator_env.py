"""The operator running against the harness, with a bare Git repository as the GitOps remote."""

from __future__ import annotations

import base64
import contextlib
import copy
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from controller.operator.kube import ApiAccess
from controller.operator.settings import OperatorConfig, kopf_settings
from tests.support.kube import Client, KubeApi, kopf_running, login_to

NAMESPACE = "team-quantum"
GIT_TOKEN = "gho_" + "Zq9" * 12  # a value that must never show up outside its Secret
IBM_TOKEN = "ibmq-" + "f00d" * 16


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def make_remote(tmp: Path) -> Path:
    """A bare repository with one commit on main, standing in for the GitOps remote."""
    bare = tmp / "gitops.git"
    git("init", "--quiet", "--bare", "-b", "main", str(bare))
    seed = tmp / "seed"
    git("init", "--quiet", "-b", "main", str(seed))
    (seed / "README.md").write_text("quantum models\n")
    git("add", ".", cwd=seed)
    git("-c", "user.name=Alice", "-c", "user.email=alice@example.com", "commit", "--quiet", "-m", "start", cwd=seed)
    git("push", "--quiet", str(bare), "main", cwd=seed)
    return bare


def tiny_model(name: str = "iris-tiny", iterations: int = 4, **spec: Any) -> dict[str, Any]:
    """2 qubits on the statevector simulator, a handful of optimizer iterations."""
    body: dict[str, Any] = {
        "apiVersion": "qmlops.io/v1alpha1",
        "kind": "QuantumModel",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "owner": "alice@example.com",
            "dataset": {
                "source": "builtin:iris",
                "classes": [0, 1],
                "reduce": {"method": "pca", "components": 2},
                "testFraction": 0.3,
                "seed": 42,
            },
            "circuit": {
                "qubits": 2,
                "featureMap": {"kind": "ZFeatureMap", "reps": 1},
                "ansatz": {"kind": "RealAmplitudes", "reps": 1},
            },
            "training": {
                "backend": "local:statevector",
                "optimizer": {"kind": "COBYLA", "maxIterations": iterations},
                "seed": 7,
            },
            "promotion": {"policy": "auto", "gates": [{"metric": "accuracy", "min": 0.0}]},
            "governance": {"allowedBackends": ["local:*"]},
        },
    }
    body["spec"].update(copy.deepcopy(spec))
    return body


def secret(name: str, **data: str) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NAMESPACE}, "data": encoded}


SETTLE_SECONDS = 0.2


@contextlib.contextmanager
def settled_quickly() -> Iterator[None]:
    """Operators built here wait 0.2 s, not 2 s and 5 s, before looking at Jobs that ended together
    (``JOB_SETTLE_SECONDS``) and at a model its pipeline moved (``MOVED_SETTLE_SECONDS``): the settling
    itself is tested in test_jobs_parts.py; in every other test it would only add waiting."""
    from controller.operator import handlers, pipelines

    saved = pipelines.JOB_SETTLE_SECONDS, handlers.MOVED_SETTLE_SECONDS
    pipelines.JOB_SETTLE_SECONDS = handlers.MOVED_SETTLE_SECONDS = SETTLE_SECONDS
    try:
        yield
    finally:
        pipelines.JOB_SETTLE_SECONDS, handlers.MOVED_SETTLE_SECONDS = saved


@dataclass
class OperatorEnv:
    kube: KubeApi
    client: Client
    remote: Path
    tmp: Path
    base: OperatorConfig = field(init=False)

    def __post_init__(self) -> None:
        self.base = OperatorConfig(
            repo=str(self.remote),
            workdir=self.tmp / "pod-a",
            metrics_port=None,
            liveness=None,
            training_workers=2,
            retry_backoff=(0.3, 0.6, 1.0),
            watch_timeout=30.0,
        )

    @contextlib.asynccontextmanager
    async def operator(
        self,
        pod: str = "pod-a",
        *,
        trainer: Callable[..., Any] | None = None,
        clock: Callable[[], datetime] | None = None,
        **changes: Any,
    ) -> AsyncIterator[Any]:
        """An operator pod (a Runtime): its own work folder (an emptyDir: gone with the pod)."""
        from controller.operator.handlers import build_registry
        from controller.operator.runtime import Runtime

        config = replace(self.base, workdir=self.tmp / pod, **changes)
        access = ApiAccess(server=str(self.kube.url).rstrip("/"))
        runtime = Runtime(config, access, trainer=trainer, clock=clock)
        with settled_quickly():
            registry = build_registry(runtime, login=login_to(self.kube))

        async def ready() -> None:
            await self.kube.wait_for(lambda: self.kube.watching("quantummodels"), timeout=30)

        settings = kopf_settings(config)
        async with kopf_running(
            registry, settings=settings, namespaces=config.namespaces, ready=ready, liveness_endpoint=config.liveness
        ):
            yield runtime

    # --- reading what happened ---------------------------------------------------------------------

    def model(self, name: str = "iris-tiny") -> dict[str, Any] | None:
        return self.kube.read("QuantumModel", NAMESPACE, name)

    def status(self, name: str = "iris-tiny") -> dict[str, Any]:
        return dict((self.model(name) or {}).get("status") or {})

    def condition(self, name: str, kind: str) -> dict[str, Any]:
        return next((c for c in self.status(name).get("conditions", []) if c["type"] == kind), {})

    async def until(self, predicate: Callable[[], Any], timeout: float = 120.0) -> Any:
        return await self.kube.wait_for(predicate, timeout=timeout)

    async def until_phase(self, phase: str, name: str = "iris-tiny", timeout: float = 120.0) -> dict[str, Any]:
        await self.until(lambda: self.status(name).get("phase") == phase, timeout)
        return self.status(name)

    def events(self, name: str = "iris-tiny") -> list[dict[str, Any]]:
        return [e for e in self.kube.list("Event", NAMESPACE) if e["involvedObject"].get("name") == name]

    def reasons(self, name: str = "iris-tiny") -> list[str]:
        return [e["reason"] for e in self.events(name)]

    def decisions(self, name: str = "iris-tiny") -> list[str]:
        """The Qmlops-Decision trailers of the remote's commits for the model, oldest first."""
        out = git(
            "--git-dir",
            str(self.remote),
            "log",
            "--reverse",
            "--format=%(trailers:key=Qmlops-Model,valueonly,separator=)%x1f%(trailers:key=Qmlops-Decision,valueonly,separator=)",
            "main",
        )
        rows = [line.split("\x1f") for line in out.splitlines() if "\x1f" in line]
        return [decision.strip() for model, decision in rows if model.strip() == f"{NAMESPACE}/{name}"]

    def remote_files(self) -> str:
        """Everything the remote holds, as text (for looking for secrets)."""
        return git("--git-dir", str(self.remote), "log", "-p", "--all", "--format=%B")
