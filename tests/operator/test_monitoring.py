"""Monitoring in the cluster, end to end: the real operator reconciles a model with ``spec.monitoring``,
a real ``qmlops serve`` serves its champion from the same Git remote and takes labelled feedback, the
operator's ``live`` check reads that server, and the test reads ``status.monitoring`` from the API
server and the monitoring gauges from the operator's ``/metrics`` (names as docs/monitoring.md says)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import BaseTestServer, TestServer

from controller.serving.server import ServeConfig, Server
from tests.operator.operator_env import NAMESPACE, OperatorEnv, tiny_model
from tests.operator.test_end_to_end import env
from tests.support.kube import free_port

__all__ = ["env"]  # the end-to-end tests' operator environment (RBAC checked as used)

pytestmark = pytest.mark.slow
MODEL = "iris-tiny"
LIVE = {"maxAccuracyDrop": 0.2, "minSamples": 6, "window": 100}


@pytest.fixture
async def served(env: OperatorEnv) -> AsyncIterator[tuple[Server, BaseTestServer]]:
    """``qmlops serve`` for the model, following the operator's remote (a URL: cloned, fetched on refresh)."""
    config = ServeConfig(
        repo=f"file://{env.remote}", models=[(NAMESPACE, MODEL)], workdir=env.tmp / "serve", prediction_log=None
    )
    server = Server(config)
    async with TestServer(server.app(), host="127.0.0.1") as test_server:
        yield server, test_server


def samples(exposition: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in exposition.splitlines()
        if line and not line.startswith("#")
    }


async def test_the_operator_watches_a_served_champion_into_status_and_gauges(
    env: OperatorEnv, served: tuple[Server, BaseTestServer]
) -> None:
    server, test_server = served
    base = str(test_server.make_url("")).rstrip("/")
    metrics_port = free_port()
    labels = f'model="{MODEL}",namespace="{NAMESPACE}"'
    async with env.operator(metrics_port=metrics_port, serving_live_url=base) as runtime:
        await env.client.create(tiny_model(iterations=2))
        await env.until_phase("Ready")
        champion = env.status()["champion"]
        assert champion["version"] == 1

        # the server picks the champion up from Git; its answers come back labelled, every one wrong
        await server.refresh()
        rows = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [4.9, 3.0, 1.4, 0.2], [6.4, 3.2, 4.5, 1.5]] * 2
        async with aiohttp.ClientSession() as http:
            body = {
                "id": "r1",
                "inputs": [
                    {"name": "input", "shape": [8, 4], "datatype": "FP64", "data": [v for row in rows for v in row]}
                ],
            }
            async with http.post(f"{base}/v2/models/{NAMESPACE}.{MODEL}/infer", json=body) as rsp:
                assert rsp.status == 200, await rsp.text()
                given = (await rsp.json())["outputs"][0]["data"]
            wrong = [{"0": "1", "1": "0"}[label] for label in given]
            feedback = {"feedback": [{"id": "r1", "labels": wrong}]}
            async with http.post(f"{base}/v2/models/{NAMESPACE}.{MODEL}/feedback", json=feedback) as rsp:
                assert rsp.status == 200, await rsp.text()

        # monitoring is declared: the next reconcile checks the champion, the live check reads the server
        monitoring = {"every": "1h", "live": LIVE, "onDrift": ["alert"]}
        await env.client.patch("QuantumModel", NAMESPACE, MODEL, {"spec": {"monitoring": monitoring}})
        await env.until(lambda: (env.status().get("monitoring") or {}).get("verdict") == "drift", 60)
        watched = env.status()["monitoring"]
        assert watched["version"] == 1 and watched["drifted"] == ["live"]
        assert watched["liveAccuracy"] == 0.0 and watched["liveSamples"] == 8
        assert watched["championAccuracy"] == champion["metrics"]["accuracy"]
        assert watched["lastCheck"]
        assert "drift-detected" in env.decisions()
        await env.until(lambda: "DriftDetected" in env.reasons(), 30)
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{metrics_port}/metrics") as rsp:
            exposition = samples(await rsp.text())
        assert exposition[f"qmlops_model_live_accuracy{{{labels}}}"] == 0.0
        assert exposition[f"qmlops_model_champion_accuracy{{{labels}}}"] == champion["metrics"]["accuracy"]
        assert exposition[f"qmlops_model_champion_version{{{labels}}}"] == 1.0
        assert exposition[f"qmlops_drift_detected_total{{{labels}}}"] == 1.0
        assert runtime.metrics.drifts.labels(namespace=NAMESPACE, model=MODEL)._value.get() == 1.0


async def test_a_champion_promoted_after_monitoring_was_declared_is_checked_at_once(env: OperatorEnv) -> None:
    """No server answers here: the live check is "not run" with the reason, never "ok", and it runs
    right after the first promotion, not a monitoring period later."""
    model = tiny_model(iterations=2, monitoring={"every": "1h", "live": LIVE})
    async with env.operator(serving_live_url=f"http://127.0.0.1:{free_port()}"):
        await env.client.create(model)
        await env.until_phase("Ready")
        await env.until(lambda: (env.status().get("monitoring") or {}).get("version") == 1, 30)
    watched = env.status()["monitoring"]
    assert watched["verdict"] == "not-run" and watched["drifted"] == []
    assert "liveAccuracy" not in watched
