"""1,000 QuantumModels whose versions already exist, reconciled to Ready by the operator through the
Kubernetes API harness; against a no-op kopf operator over the same objects in the same harness.

    .venv/bin/python benchmarks/operator_scale.py [--models 1000] [--workers 2]

Setup (not measured): one tiny model is trained for real by the engine into a bare GitOps repository;
its registry folder is then derived for the other models with the registry's own functions (manifest,
ledger entries, model.yaml) and committed at once, so that every model has version 1 as its champion
and nothing is due.

Each operator runs in its own process (so that peak memory is its own): the harness is started, the
CRDs registered and the models created, then the clock starts with the operator and stops when every
model shows ``phase: Ready`` (the no-op operator writes just that, from a kopf handler that does
nothing else). Printed: seconds, peak RSS and RSS growth of each run, and the ratio (target <= 1.5).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NAMESPACE = "bench"


def model_body(index: int) -> dict[str, Any]:
    from tests.operator.operator_env import tiny_model

    body = tiny_model(f"m-{index:04d}", iterations=3)
    body["metadata"]["namespace"] = NAMESPACE
    return body


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- setup: a GitOps repository where every model has a champion ------------------------------------


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def prepare_repository(folder: Path, models: int) -> Path:
    from datetime import UTC, datetime

    from controller.api import QuantumModel
    from controller.engine.reconcile import Observed, Reconciler
    from controller.engine.registry import GitIdentity, Registry
    from controller.engine.registry import index as index_file
    from controller.engine.registry import versions as version_files
    from controller.engine.registry.ledger import LEDGER_FILE, Ledger, draft
    from controller.engine.registry.yamlio import write_atomic
    from tests.operator.operator_env import make_remote

    remote = make_remote(folder)
    checkout = folder / "setup"
    git("clone", "--quiet", str(remote), str(checkout))
    registry = Registry(checkout, identity=GitIdentity("qmlops-operator", "qmlops-operator@qmlops.io"))
    first = QuantumModel.model_validate(model_body(0))
    outcome = Reconciler(registry, checkpoint_root=folder / "checkpoints").reconcile(Observed(model=first))
    assert outcome.status.champion is not None, outcome.status.message

    template = registry.versions(NAMESPACE, "m-0000")[0]
    ledger = registry.ledger(NAMESPACE, "m-0000")
    now = datetime.now(UTC)
    for i in range(1, models):
        name = f"m-{i:04d}"
        manifest = version_files.manifest(
            namespace=NAMESPACE,
            name=name,
            number=1,
            registered_at=template.registered_at,
            source=version_files.Provenance(None, None, None, None),
            spec_digest=template.spec_digest,
            dataset_digest=template.dataset_digest,
            artifact=template.artifact,
            artifact_digest=template.artifact_digest,
        )
        entries: list[Any] = []
        for entry in ledger.entries:
            data = dict(entry.data)
            if "versionDigest" in data:
                data["versionDigest"] = manifest["digest"]
            previous = entries[-1] if entries else None
            entries.append(
                draft(
                    previous,
                    at=entry.at,
                    kind=entry.kind,
                    model=f"{NAMESPACE}/{name}",
                    version=entry.version,
                    message=entry.message,
                    data=data,
                )
            )
        base = checkout / registry.model_path(NAMESPACE, name)
        write_atomic(base / version_files.file_name(1), version_files.encode(manifest))
        write_atomic(base / LEDGER_FILE, "".join(e.to_line() for e in entries).encode())
        version = version_files.Version(1, manifest)
        summary = index_file.summary(NAMESPACE, name, Ledger(tuple(entries)), [version])
        index_file.write(base / index_file.INDEX_FILE, NAMESPACE, name, summary)
    git("add", "-A", cwd=checkout)
    git(
        "-c",
        "user.name=bench",
        "-c",
        "user.email=bench@example.com",
        "commit",
        "--quiet",
        "-m",
        f"benchmark: {models - 1} more models with version 1 as champion ({now:%F})",
        cwd=checkout,
    )
    git("push", "--quiet", "origin", "HEAD:main", cwd=checkout)
    return remote


# --- one measured run ---------------------------------------------------------------------------------


async def run(scenario: str, repo: str, models: int, workers: int, workdir: Path) -> dict[str, float]:
    import kmock
    import kopf

    from tests.support.kube import Client, KubeApi, kopf_running, login_to

    async with KubeApi(history_limit=50_000) as api, kmock.Server(api):
        api.register_crds()
        client = Client(api)
        await client.namespace(NAMESPACE)
        for i in range(models):
            await client.create(model_body(i))
        if scenario == "qmlops":
            from controller.operator.handlers import build_registry
            from controller.operator.kube import ApiAccess
            from controller.operator.runtime import Runtime
            from controller.operator.settings import OperatorConfig, kopf_settings

            config = OperatorConfig(
                repo=repo, workdir=workdir, metrics_port=None, liveness=None, training_workers=workers
            )
            runtime = Runtime(config, ApiAccess(server=str(api.url).rstrip("/")))
            registry = build_registry(runtime, login=login_to(api))
            settings = kopf_settings(config)
        else:
            from controller.operator.settings import OperatorConfig, kopf_settings

            registry = kopf.OperatorRegistry()
            kopf.on.login(registry=registry)(login_to(api))

            @kopf.on.resume("qmlops.io", "v1alpha1", "quantummodels", registry=registry)
            @kopf.on.create("qmlops.io", "v1alpha1", "quantummodels", registry=registry)
            def ready(patch: kopf.Patch, **_: Any) -> None:
                patch.status["phase"] = "Ready"

            settings = kopf_settings(OperatorConfig(repo=repo, workdir=workdir))
        settings.posting.enabled = scenario == "qmlops"  # the no-op has nothing to tell

        def all_ready() -> bool:
            return api.count("QuantumModel", lambda o: (o.get("status") or {}).get("phase") == "Ready") == models

        before = rss_mb()
        started = time.perf_counter()
        async with kopf_running(registry, settings=settings):
            await api.wait_for(all_ready, timeout=3600)
            seconds = time.perf_counter() - started
        return {
            "seconds": seconds,
            "peak_rss_mb": rss_mb(),
            "rss_growth_mb": rss_mb() - before,
            "api_writes": api.writes,
        }


def measure(scenario: str, repo: Path, models: int, workers: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix=f"qmlops-bench-{scenario}-") as work:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--scenario",
                scenario,
                "--repo",
                str(repo),
                "--models",
                str(models),
                "--workers",
                str(workers),
                "--workdir",
                work,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="the operator's --training-workers")
    parser.add_argument("--scenario", choices=("qmlops", "noop"), help=argparse.SUPPRESS)
    parser.add_argument("--repo", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scenario:
        import logging

        logging.basicConfig(level=logging.WARNING)
        result = asyncio.run(run(args.scenario, args.repo, args.models, args.workers, args.workdir))
        print(json.dumps(result))
        return 0

    with tempfile.TemporaryDirectory(prefix="qmlops-bench-") as tmp:
        started = time.perf_counter()
        repo = prepare_repository(Path(tmp), args.models)
        print(f"setup: {args.models} models with a champion in {time.perf_counter() - started:.1f} s (not measured)")
        noop = measure("noop", repo, args.models, args.workers)
        qmlops = measure("qmlops", repo, args.models, args.workers)
    for name, result in (("no-op kopf operator", noop), ("qmlops operator", qmlops)):
        print(
            f"{name:22s} {result['seconds']:7.2f} s to Ready   peak RSS {result['peak_rss_mb']:7.1f} MB"
            f"   (+{result['rss_growth_mb']:.1f} MB while running)   {int(result['api_writes'])} API writes"
        )
    ratio = qmlops["seconds"] / noop["seconds"]
    verdict = "within" if ratio <= 1.5 else "above"
    print(f"ratio qmlops / no-op: {ratio:.2f}x ({verdict} the 1.5x target) over {args.models} models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
