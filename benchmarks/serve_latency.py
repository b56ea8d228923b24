"""``qmlops serve`` against in-process predictions: the demo's 4-qubit iris champion on the exact
statevector, over HTTP (Open Inference Protocol v2) and by ``ModelArtifact.predict`` in this process.

    .venv/bin/python benchmarks/serve_latency.py [--single 300] [--batches 30] [--rows 256] [--swap-requests 200]

Setup (not measured): the demo's ``iris-vqc`` spec is trained by the engine into a fresh Git work tree
(twice, so that versions 1 and 2 exist and 2 is the champion); ``qmlops serve --repo <it>`` is started
as a process of its own on a free port of 127.0.0.1 and waited for on ``/v2/health/ready``.

Measured, one client connection (keep-alive), requests one after the other:

- single-row requests: p50 and p99 latency, beside ``ModelArtifact.predict`` on one row in-process;
- ``--rows``-row requests: rows per second, beside ``ModelArtifact.predict`` on the same rows (the
  ratio of the two times: target < 2x), and beside ``engine.prediction.predict`` in-process, the
  server's own path (Aer's exact statevector for many rows), which isolates the HTTP and batching
  overhead;
- the champion swapped under load: version 1 pinned (a rollback, committed by the engine) while four
  clients send requests; ``SIGHUP`` makes the server refresh at once. Printed: requests made, failed
  (target 0), and the versions seen.

Targets (issue 14): single-row p50 < 20 ms; 256-row HTTP time < 2x in-process; zero failed requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPEC = ROOT / "specs" / "iris" / "iris-vqc.yaml"
MODEL = ("demo", "iris-vqc")
INFER = "/v2/models/demo.iris-vqc/infer"


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def isolated_git(home: Path) -> None:
    config = home / ".gitconfig"
    config.write_text("[init]\n\tdefaultBranch = main\n[user]\n\tname = Bench\n\temail = bench@example.com\n")
    os.environ.update({"HOME": str(home), "GIT_CONFIG_GLOBAL": str(config), "GIT_CONFIG_NOSYSTEM": "1"})


def reconcile(repo: Path) -> None:
    from controller.engine.reconcile import Reconciler
    from controller.engine.registry import Registry
    from controller.runner.specs import observe

    registry = Registry(repo, remote=None)
    reconciler = Reconciler(registry, checkpoint_root=repo.parent / "checkpoints")
    for observed, _ in observe(registry.git, repo / "specs").models:
        reconciler.reconcile(observed)


def commit_spec(repo: Path, text: str, message: str) -> None:
    path = repo / "specs" / "iris-vqc.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    git("add", "specs", cwd=repo)
    git("commit", "--quiet", "-m", message, cwd=repo)


def trained_repository(base: Path) -> Path:
    """A work tree whose iris-vqc has versions 1 and 2, 2 the champion."""
    repo = base / "repo"
    repo.mkdir()
    git("init", "--quiet", cwd=repo)
    spec = SPEC.read_text()
    commit_spec(repo, spec, "Add iris-vqc")
    reconcile(repo)
    commit_spec(repo, spec.replace("maxIterations: 50", "maxIterations: 51"), "Retrain")
    reconcile(repo)
    return repo


def champion(repo: Path) -> Any:
    from controller.engine.prediction import load
    from controller.engine.registry import Registry

    return load(Registry(repo, remote=None), *MODEL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(repo: Path, port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "controller", "serve", "--repo", str(repo), "--host", "127.0.0.1"]
    return subprocess.Popen(
        [*command, "--port", str(port), "--interval", "3600"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def body(rows: np.ndarray) -> bytes:
    tensor = {"name": "input", "shape": list(rows.shape), "datatype": "FP64", "data": rows.ravel().tolist()}
    return json.dumps({"inputs": [tensor]}).encode()


@dataclass
class Figures:
    single_p50: float
    single_p99: float
    inprocess_single_p50: float
    batch_seconds: float
    inprocess_batch_seconds: float
    served_path_batch_seconds: float  # engine.prediction.predict in-process: the server's own path
    rows: int
    swap_requests: int = 0
    swap_failed: int = 0
    swap_versions: tuple[str, ...] = ()

    @property
    def ratio(self) -> float:
        return self.batch_seconds / self.inprocess_batch_seconds

    def report(self) -> str:
        return "\n".join(
            [
                f"single-row latency over HTTP: p50 {self.single_p50 * 1e3:.2f} ms, p99 {self.single_p99 * 1e3:.2f} ms"
                f"  (ModelArtifact.predict in-process: p50 {self.inprocess_single_p50 * 1e3:.2f} ms)",
                f"{self.rows}-row requests over HTTP: {self.rows / self.batch_seconds:,.0f} rows/s"
                f" ({self.batch_seconds * 1e3:.1f} ms per request); in-process {self.rows / self.inprocess_batch_seconds:,.0f}"
                f" rows/s ({self.inprocess_batch_seconds * 1e3:.1f} ms); ratio {self.ratio:.2f}x",
                f"  the server's own path in-process (prediction.predict, Aer's exact statevector for many rows): "
                f"{self.rows / self.served_path_batch_seconds:,.0f} rows/s ({self.served_path_batch_seconds * 1e3:.1f} ms);"
                f" HTTP and batching overhead over it {self.batch_seconds / self.served_path_batch_seconds:.2f}x",
                f"swap under load: {self.swap_requests} requests, {self.swap_failed} failed, versions served "
                f"{' then '.join(self.swap_versions)}",
                "targets: single-row p50 < 20 ms: "
                + ("met" if self.single_p50 < 0.020 else "MISSED")
                + f"; {self.rows}-row overhead < 2x: "
                + ("met" if self.ratio < 2.0 else "MISSED")
                + "; zero failed requests during the swap: "
                + ("met" if self.swap_failed == 0 and self.swap_requests else "MISSED"),
            ]
        )


def timed(call: Any, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        out.append(time.perf_counter() - started)
    return out


async def http_figures(port: int, x: np.ndarray, single: int, batches: int) -> tuple[list[float], list[float]]:
    import aiohttp

    url = f"http://127.0.0.1:{port}{INFER}"
    one, many = body(x[:1]), body(x)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        for _ in range(5):  # warm the connection and the server
            async with session.post(url, data=one, headers=headers) as response:
                assert response.status == 200, await response.text()
        singles, batch = [], []
        for _ in range(single):
            started = time.perf_counter()
            async with session.post(url, data=one, headers=headers) as response:
                await response.read()
                assert response.status == 200
            singles.append(time.perf_counter() - started)
        for _ in range(batches):
            started = time.perf_counter()
            async with session.post(url, data=many, headers=headers) as response:
                await response.read()
                assert response.status == 200
            batch.append(time.perf_counter() - started)
    return singles, batch


async def swap_under_load(
    repo: Path, server: subprocess.Popen[bytes], port: int, x: np.ndarray, requests: int
) -> tuple[int, int, list[str]]:
    """Four clients send requests while version 1 is pinned and the server is told (SIGHUP)."""
    import aiohttp

    url = f"http://127.0.0.1:{port}{INFER}"
    payload = body(x[:4])
    made, failed, versions = 0, 0, []
    done = asyncio.Event()

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal made, failed
        while made < requests and not (done.is_set() and versions and versions[-1] == "1"):
            made += 1
            try:
                async with session.post(url, data=payload, headers={"Content-Type": "application/json"}) as r:
                    answer = await r.json()
                    if r.status != 200:
                        failed += 1
                    elif not versions or versions[-1] != answer["model_version"]:
                        versions.append(answer["model_version"])
            except aiohttp.ClientError:
                failed += 1

    async def rollback() -> None:
        await asyncio.sleep(0.2)
        spec = SPEC.read_text().replace("maxIterations: 50", "maxIterations: 51")
        pinned = spec.replace(
            "      - {metric: accuracy, min: 0.8}", "      - {metric: accuracy, min: 0.8}\n    pin: 1"
        )
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, commit_spec, repo, pinned, "Roll back to version 1")
        await loop.run_in_executor(None, reconcile, repo)
        server.send_signal(signal.SIGHUP)
        done.set()

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(rollback(), *(client(session) for _ in range(4)))
    return made, failed, versions


def wait_ready(port: int, server: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"qmlops serve exited: {server.stderr.read().decode() if server.stderr else ''}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.2)
    raise SystemExit("qmlops serve did not become ready")


def measure(single: int, batches: int, rows: int, swap_requests: int) -> Figures:
    with tempfile.TemporaryDirectory(prefix="qmlops-serve-bench-") as scratch:
        base = Path(scratch)
        isolated_git(base)
        repo = trained_repository(base)
        model = champion(repo)
        rng = np.random.default_rng(7)
        low, high = np.array([4.3, 2.0, 1.0, 0.1]), np.array([7.9, 4.4, 6.9, 2.5])
        x = low + rng.random((rows, 4)) * (high - low)
        artifact = model.artifact
        artifact.predict(x[:1])  # the circuit decoded once, as the server does before serving
        inprocess_single = timed(lambda: artifact.predict(x[:1]), max(single // 3, 10))
        inprocess_batch = timed(lambda: artifact.predict(x), max(batches, 5))
        from controller.engine.prediction import predict

        predict(model, x)
        served_path = timed(lambda: predict(model, x), max(batches, 5))
        port = free_port()
        server = start_server(repo, port)
        try:
            wait_ready(port, server)
            singles, batch = asyncio.run(http_figures(port, x, single, batches))
            made, failed, versions = asyncio.run(swap_under_load(repo, server, port, x, swap_requests))
        finally:
            server.terminate()
            server.wait(timeout=30)
    return Figures(
        single_p50=float(np.percentile(singles, 50)),
        single_p99=float(np.percentile(singles, 99)),
        inprocess_single_p50=float(np.percentile(inprocess_single, 50)),
        batch_seconds=float(np.median(batch)),
        inprocess_batch_seconds=float(np.median(inprocess_batch)),
        served_path_batch_seconds=float(np.median(served_path)),
        rows=rows,
        swap_requests=made,
        swap_failed=failed,
        swap_versions=tuple(versions),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--single", type=int, default=300, help="single-row requests")
    parser.add_argument("--batches", type=int, default=30, help="multi-row requests")
    parser.add_argument("--rows", type=int, default=256, help="rows per multi-row request")
    parser.add_argument("--swap-requests", type=int, default=2000, help="at most this many requests around the swap")
    args = parser.parse_args()
    figures = measure(args.single, args.batches, args.rows, args.swap_requests)
    print(f"qmlops serve, {MODEL[0]}/{MODEL[1]} (4 qubits) on the exact statevector, {os.cpu_count()} cores")
    print(figures.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
