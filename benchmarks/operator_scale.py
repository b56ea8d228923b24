"""1,000 QuantumModels whose versions already exist, reconciled to Ready by the operator through the
Kubernetes API harness; against a no-op kopf operator over the same objects in the same harness.

    .venv/bin/python benchmarks/operator_scale.py [--models 1000] [--workers 2] [--scratch DIR]

Setup (not measured): one tiny model is trained for real by the engine into a bare GitOps repository;
its registry folder is then derived for the other models with the registry's own functions (manifest,
ledger entries, model.yaml) and committed at once, so that every model has version 1 as its champion
and nothing is due.

The harness runs in a process of its own, as an apiserver would: what it spends pruning, validating
and storing each write is not counted as the operator's. Each operator runs in another process (so
that its memory is its own) and is started once imported (Qiskit's and scikit-learn's imports,
made once per process before kopf starts, as ``qmlops operator`` does, are not timed); the clock runs from kopf's start until every model shows ``phase: Ready`` (the no-op
operator writes just that, from a kopf handler that does nothing else). Printed: seconds, peak
resident memory and its growth while running, API writes, and the ratio (target <= 1.5).

The operator's work folder (a Git checkout per reconcile thread: 3,000 files at 1,000 models) is made
under ``--scratch``, tmpfs (``/dev/shm``) by default: this machine's virtual disk takes about 0.4 ms to
create a file (1.3 s for one checkout, varying from 0.5 to 3 s between runs), where a node's page
cache takes tens of microseconds, so on disk the figure measures the disk more than the operator.
``--scratch DIR`` measures on any other filesystem; the folder used is printed.
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
from subprocess import PIPE
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NAMESPACE = "bench"
SHM = Path("/dev/shm")


def model_body(index: int) -> dict[str, Any]:
    from tests.operator.operator_env import tiny_model

    body = tiny_model(f"m-{index:04d}", iterations=3)
    body["metadata"]["namespace"] = NAMESPACE
    return body


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


# --- the API server: the harness, in a process of its own ------------------------------------------


async def serve(models: int) -> None:
    """The harness with the CRDs and ``models`` QuantumModels, as an apiserver would be: in its own
    process, so that what it spends validating and storing each write is not the operator's.

    Protocol on stdin/stdout: prints its URL once the models exist; on ``start`` it starts the clock
    and prints the seconds until every model shows ``phase: Ready`` and the writes it took; it
    exits on ``stop``."""
    import kmock

    from tests.support.kube import Client, KubeApi

    async with KubeApi(history_limit=50_000) as api, kmock.Server(api):
        api.register_crds()
        client = Client(api)
        await client.namespace(NAMESPACE)
        for i in range(models):
            await client.create(model_body(i))
        writes = api.writes
        say(str(api.url).rstrip("/"))

        def all_ready() -> bool:
            return api.count("QuantumModel", lambda o: (o.get("status") or {}).get("phase") == "Ready") == models

        assert await line() == "start"
        started, cpu = time.perf_counter(), time.process_time()
        await api.wait_for(all_ready, timeout=3600)
        seconds = time.perf_counter() - started
        say(json.dumps({"seconds": seconds, "api_writes": api.writes - writes, "api_cpu": time.process_time() - cpu}))
        assert await line() == "stop"


# --- the operator, measured ----------------------------------------------------------------------------


def qmlops_operator(server: str, repo: str, workers: int, workdir: Path) -> tuple[Any, Any]:
    from controller.engine.training import data  # Qiskit is imported once at startup, not timed

    data.preload()  # as process.main does before kopf starts
    from controller.operator.handlers import build_registry
    from controller.operator.kube import ApiAccess
    from controller.operator.runtime import Runtime
    from controller.operator.settings import OperatorConfig, kopf_settings

    config = OperatorConfig(repo=repo, workdir=workdir, metrics_port=None, liveness=None, training_workers=workers)
    runtime = Runtime(config, ApiAccess(server=server))
    return build_registry(runtime, login=lambda **_: runtime.access.connection_info()), kopf_settings(config)


def noop_operator(server: str, repo: str, workdir: Path) -> tuple[Any, Any]:
    """kopf with one handler that writes ``phase: Ready``: the least an operator can do per object."""
    import kopf

    from controller.operator.kube import ApiAccess
    from controller.operator.settings import OperatorConfig, kopf_settings

    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(lambda **_: ApiAccess(server=server).connection_info())

    @kopf.on.resume("qmlops.io", "v1alpha1", "quantummodels", registry=registry)
    @kopf.on.create("qmlops.io", "v1alpha1", "quantummodels", registry=registry)
    def ready(patch: kopf.Patch, **_: Any) -> None:
        patch.status["phase"] = "Ready"

    settings = kopf_settings(OperatorConfig(repo=repo, workdir=workdir))
    settings.posting.enabled = False  # it has nothing to tell
    return registry, settings


async def operate(scenario: str, server: str, repo: str, workers: int, workdir: Path) -> None:
    """Run one operator against ``server``: ``ready`` once imported and built, kopf on ``go``, until
    ``stop``; then prints its resident memory before ``go`` and at its peak while running."""
    from tests.support.kube import kopf_running

    if scenario == "qmlops":
        registry, settings = qmlops_operator(server, repo, workers, workdir)
    else:
        registry, settings = noop_operator(server, repo, workdir)
    say("ready")
    assert await line() == "go"
    before = peak = rss_mb()
    cpu = time.process_time()

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_mb())
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    async with kopf_running(registry, settings=settings):
        assert await line() == "stop"
    sampler.cancel()
    say(json.dumps({"rss_before_mb": before, "peak_rss_mb": max(peak, rss_mb()), "cpu": time.process_time() - cpu}))


def rss_mb() -> float:
    """Resident memory now (not the lifetime peak of ru_maxrss, which imports would dominate)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def say(text: str) -> None:
    print(text, flush=True)


async def line() -> str:
    return (await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)).strip()


# --- the comparison ---------------------------------------------------------------------------------


def measure(scenario: str, repo: Path, models: int, workers: int, scratch: Path | None) -> dict[str, float]:
    me = [sys.executable, __file__]
    with tempfile.TemporaryDirectory(prefix=f"qmlops-bench-{scenario}-", dir=scratch) as work:
        harness = subprocess.Popen([*me, "--serve", "--models", str(models)], stdin=PIPE, stdout=PIPE, text=True)
        server = read(harness)
        args = ["--scenario", scenario, "--server", server, "--repo", str(repo), "--workers", str(workers)]
        operator = subprocess.Popen([*me, *args, "--workdir", work], stdin=PIPE, stdout=PIPE, text=True)
        assert read(operator) == "ready"
        tell(harness, "start")
        tell(operator, "go")
        timing = json.loads(read(harness))
        tell(operator, "stop")
        memory = json.loads(read(operator))
        tell(harness, "stop")
        for process in (operator, harness):
            process.wait(timeout=120)
    return {**timing, **memory}


def read(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    return process.stdout.readline().strip()


def tell(process: subprocess.Popen[str], word: str) -> None:
    assert process.stdin is not None
    process.stdin.write(word + "\n")
    process.stdin.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="the operator's --training-workers")
    parser.add_argument(
        "--scratch",
        type=Path,
        default=SHM if SHM.is_dir() else None,
        help="where the operator's work folder (its Git checkouts) is made (default: /dev/shm, see above)",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scenario", choices=("qmlops", "noop"), help=argparse.SUPPRESS)
    parser.add_argument("--server", help=argparse.SUPPRESS)
    parser.add_argument("--repo", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve or args.scenario:
        import logging

        logging.basicConfig(level=logging.WARNING)
        if args.serve:
            asyncio.run(serve(args.models))
        else:
            asyncio.run(operate(args.scenario, args.server, args.repo, args.workers, args.workdir))
        return 0

    with tempfile.TemporaryDirectory(prefix="qmlops-bench-") as tmp:
        started = time.perf_counter()
        repo = prepare_repository(Path(tmp), args.models)
        print(f"setup: {args.models} models with a champion in {time.perf_counter() - started:.1f} s (not measured)")
        print(f"operator work folders under {args.scratch or tempfile.gettempdir()}")
        noop = measure("noop", repo, args.models, args.workers, args.scratch)
        qmlops = measure("qmlops", repo, args.models, args.workers, args.scratch)
    for name, result in (("no-op kopf operator", noop), ("qmlops operator", qmlops)):
        print(
            f"{name:22s} {result['seconds']:7.2f} s to Ready   peak RSS {result['peak_rss_mb']:7.1f} MB"
            f" (+{result['peak_rss_mb'] - result['rss_before_mb']:.1f} MB while running)"
            f"   {int(result['api_writes'])} API writes   CPU: operator {result['cpu']:.1f} s,"
            f" API server {result['api_cpu']:.1f} s"
        )
    ratio = qmlops["seconds"] / noop["seconds"]
    verdict = "within" if ratio <= 1.5 else "above"
    print(f"ratio qmlops / no-op: {ratio:.2f}x ({verdict} the 1.5x target) over {args.models} models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
