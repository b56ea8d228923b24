"""The operator reads each model's spec on a check thread, never on kopf's event loop, within a time
budget: a reading that runs late fails the reconcile, which is retried, and the operator goes on."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from controller.operator import checks, workers
from tests.operator.operator_env import NAMESPACE, OperatorEnv, make_remote, tiny_model
from tests.support.kube import Client, KubeApi
from tests.training.specs import QASM_ANSATZ

pytestmark = pytest.mark.slow


@pytest.fixture
async def env(kube: KubeApi, client: Client, tmp_path: Path) -> AsyncIterator[OperatorEnv]:
    kube.register_crds()
    await client.namespace(NAMESPACE)
    yield OperatorEnv(kube, client, make_remote(tmp_path), tmp_path)


def qasm_model() -> dict[str, Any]:
    model = tiny_model(iterations=2)
    model["spec"]["circuit"]["ansatz"] = {"kind": "QASM", "qasm": QASM_ANSATZ}
    return model


async def test_a_models_spec_is_read_on_a_check_thread(env: OperatorEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    read = workers.read

    def recorded(*args: Any) -> workers.Reading:
        threads.append(threading.current_thread().name)
        return read(*args)

    monkeypatch.setattr(workers, "read", recorded)
    async with env.operator():
        await env.client.create(qasm_model())
        await env.until_phase("Ready")
    assert threads and all(name.startswith("qmlops-check") for name in threads), threads


async def test_a_reading_past_its_budget_fails_the_reconcile_which_is_retried(
    env: OperatorEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    read = workers.read
    late = threading.Event()

    def slow_once(*args: Any) -> workers.Reading:
        if not late.is_set():
            late.set()
            time.sleep(1.0)
        return read(*args)

    monkeypatch.setattr(checks, "RECONCILE_BUDGET_SECONDS", 0.3)
    monkeypatch.setattr(workers, "read", slow_once)
    async with env.operator():
        await env.client.create(qasm_model())
        await env.until(lambda: "validation did not finish within 0.3s" in (env.status().get("message") or ""), 60)
        assert env.status()["phase"] == "Failed"
        await env.until_phase("Ready")  # retried with the backoff, and read in time
