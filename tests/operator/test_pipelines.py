"""The operator runs QuantumPipelines against the harness: a sweep on the statevector, scored on Aer,
selected and promoted through the model's gates; a requested rerun served from the cache; a restart
in the middle of a run resumes it without registering anything twice; bad input stalls."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.operator.settings import FINALIZER
from tests.operator.operator_env import NAMESPACE, OperatorEnv, git, make_remote, tiny_model
from tests.operator.test_end_to_end import USED_BY_PIPELINES, Count, Hold, allowed_by_cluster_role, finalizers
from tests.support.kube import Client, KubeApi

pytestmark = pytest.mark.slow

MODEL_ITERATIONS = 2


@pytest.fixture
async def env(kube: KubeApi, client: Client, tmp_path: Path) -> AsyncIterator[OperatorEnv]:
    kube.register_crds()
    await client.namespace(NAMESPACE)
    yield OperatorEnv(kube, client, make_remote(tmp_path), tmp_path)
    # whatever a test did, every call the operator made is allowed by deploy/rbac.yaml
    used = {call for call in kube.calls("kopf/", "qmlops-operator/") if call[0] != "kopf.dev"}
    assert used <= allowed_by_cluster_role(), used - allowed_by_cluster_role()


def sweep(name: str = "sweep", model: str = "iris-tiny", **spec: Any) -> dict[str, Any]:
    """Two cells (3 and 4 optimizer iterations: neither is the model's own 2) trained one at a time on
    the statevector, scored on Aer, the best selected and sent through the model's gates."""
    body: dict[str, Any] = {
        "apiVersion": "qmlops.io/v1alpha1",
        "kind": "QuantumPipeline",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "model": model,
            "steps": [
                {"name": "sweep", "train": {"matrix": {"training.optimizer.maxIterations": [3, 4]}}},
                {"name": "noise", "dependsOn": ["sweep"], "evaluate": {"backends": ["local:aer"], "shots": 128}},
                {"name": "pick", "dependsOn": ["noise"], "select": {"metric": "accuracy", "mode": "max"}},
                {"name": "promote", "dependsOn": ["pick"], "promote": {}},
            ],
            **spec,
        },
    }
    return body


def pipeline_status(env: OperatorEnv, name: str = "sweep") -> dict[str, Any]:
    return dict((env.kube.read("QuantumPipeline", NAMESPACE, name) or {}).get("status") or {})


def conditions(env: OperatorEnv, name: str = "sweep") -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in pipeline_status(env, name).get("conditions", [])}


def ledger(env: OperatorEnv, model: str = "iris-tiny") -> list[dict[str, Any]]:
    """The model's ledger entries as the remote has them."""
    text = git("--git-dir", str(env.remote), "show", f"main:registry/{NAMESPACE}/{model}/ledger.jsonl")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def registered_cells(env: OperatorEnv) -> list[tuple[str, str]]:
    return [
        (e["data"]["pipeline"]["run"], e["data"]["pipeline"]["cell"])
        for e in ledger(env)
        if e["kind"] == "registered" and (e.get("data") or {}).get("pipeline")
    ]


async def model_ready(env: OperatorEnv) -> None:
    await env.until(lambda: (env.status().get("champion") or {}).get("version") == 1, 120)


async def test_a_pipeline_runs_to_succeeded_and_a_requested_rerun_is_served_from_the_cache(env: OperatorEnv) -> None:
    count = Count()
    async with env.operator(trainer=count) as runtime:
        await env.client.create(tiny_model(iterations=MODEL_ITERATIONS))
        await model_ready(env)
        model_iterations = len(count.seen)
        await env.client.create(sweep())
        # a run trains only while its status says Running: kopf holds the finalizer meanwhile
        await env.until(lambda: FINALIZER in finalizers(env.kube.read("QuantumPipeline", NAMESPACE, "sweep")), 60)
        await env.until(lambda: pipeline_status(env).get("phase") == "Succeeded", 240)
        await env.until(lambda: FINALIZER not in finalizers(env.kube.read("QuantumPipeline", NAMESPACE, "sweep")), 30)
        status = pipeline_status(env)
        assert status["observedGeneration"] == 1
        assert {c: v["status"] for c, v in conditions(env).items()} == {
            "Ready": "True",
            "Reconciling": "False",
            "Stalled": "False",
            "Validated": "True",
        }
        [run] = status["runs"]
        assert run["trigger"] == "specChange" and run["phase"] == "Succeeded" and run["finished"]
        assert len(run["revision"]) == 40
        steps = {s["name"]: s for s in run["steps"]}
        assert [s["name"] for s in run["steps"]] == ["sweep", "noise", "pick", "promote"]
        assert all(s["phase"] == "Succeeded" for s in run["steps"])
        assert {k: steps["sweep"]["outputs"][k] for k in ("cells", "cached", "trained")} == {
            "cells": "2",
            "cached": "0",
            "trained": "2",
        }
        selected = int(steps["pick"]["outputs"]["selected"])
        assert selected in (2, 3) and steps["promote"]["outputs"]["version"] == str(selected)
        assert len(count.seen) > model_iterations, "the cells trained"

        # the run promoted its selection through the model's gates: the model shows the new champion
        kinds = [e["kind"] for e in ledger(env)]
        assert kinds.count("registered") == 3 and kinds.count("run-finished") == 1
        promoted = [e for e in ledger(env) if e["kind"] == "promoted"]
        assert [p["version"] for p in promoted] == [1, selected]
        assert promoted[-1]["data"]["pipeline"]["name"] == "sweep"
        await env.until(lambda: (env.status().get("champion") or {}).get("version") == selected, 60)

        # an Event per run started, finished and promotion, on the pipeline
        await env.until(lambda: {"RunStarted", "RunFinished", "Promoted"} <= set(env.reasons("sweep")), 30)
        runs = runtime.metrics.pipeline_runs.labels(result="succeeded")._value.get()
        trained = runtime.metrics.pipeline_cells.labels(source="trained")._value.get()
        assert (runs, trained) == (1, 2)

        # a requested rerun: the annotation answered, every cell from the cache, nothing trained
        before = len(count.seen)
        await env.client.patch(
            "QuantumPipeline",
            NAMESPACE,
            "sweep",
            {"metadata": {"annotations": {"reconcile.qmlops.io/requestedAt": "2026-01-02T00:00:00Z"}}},
        )
        await env.until(lambda: pipeline_status(env).get("lastHandledReconcileAt") == "2026-01-02T00:00:00Z", 60)
        await env.until(lambda: len(pipeline_status(env)["runs"]) == 2, 60)
        await env.until(lambda: pipeline_status(env)["runs"][0]["phase"] == "Succeeded", 120)
        latest = pipeline_status(env)["runs"][0]
        assert latest["trigger"] == "request"
        rerun = {s["name"]: s for s in latest["steps"]}
        assert rerun["sweep"]["outputs"]["cached"] == "2" and rerun["sweep"]["outputs"]["trained"] == "0"
        assert len(count.seen) == before, "a cached rerun trains nothing"
        assert [e["kind"] for e in ledger(env)].count("registered") == 3
        assert runtime.metrics.pipeline_cells.labels(source="cache")._value.get() == 2
        assert runtime.metrics.pipeline_runs.labels(result="succeeded")._value.get() == 2
    assert env.kube.calls("kopf/", "qmlops-operator/") >= USED_BY_PIPELINES


async def test_an_operator_restarted_mid_run_resumes_it_without_registering_twice(env: OperatorEnv) -> None:
    hold = Hold(at=2)  # the first cell (3 iterations) is held at its second
    async with env.operator(trainer=Count()):
        await env.client.create(tiny_model(iterations=MODEL_ITERATIONS))
        await model_ready(env)
    async with env.operator(trainer=hold):
        await env.client.create(sweep())
        await env.until(lambda: hold.reached.is_set(), 120)
        await env.until(lambda: env.kube.read("ConfigMap", NAMESPACE, "qmlops-checkpoint-iris-tiny") is not None, 30)
    assert pipeline_status(env)["phase"] == "Running"
    assert registered_cells(env) == []

    count = Count()
    async with env.operator("pod-b", trainer=count):  # a new pod: its checkpoint comes from the ConfigMap
        await env.until(lambda: pipeline_status(env).get("phase") == "Succeeded", 240)
    cells = registered_cells(env)
    assert len(cells) == 2 and len(set(cells)) == 2, cells
    assert len({run for run, _ in cells}) == 1, "one run, resumed"
    assert [e["kind"] for e in ledger(env)].count("run-started") == 1
    resumed = [i for i in count.seen if i is not None]
    assert resumed and resumed[0] > 1, f"the held cell resumed from its checkpoint: {resumed}"


async def test_a_pipeline_without_its_model_or_with_a_cycle_stalls_and_trains_nothing(env: OperatorEnv) -> None:
    count = Count()
    cyclic = sweep("cyclic")
    cyclic["spec"]["steps"][0]["dependsOn"] = ["promote"]
    async with env.operator(trainer=count):
        await env.client.create(sweep("orphan", model="nowhere"))
        await env.until(lambda: pipeline_status(env, "orphan").get("phase") == "Pending", 30)
        stalled = conditions(env, "orphan")["Stalled"]
        assert stalled["status"] == "True" and stalled["reason"] == "ModelNotFound"
        await env.client.create(tiny_model(iterations=MODEL_ITERATIONS))
        await model_ready(env)
        await env.client.create(cyclic)
        await env.until(lambda: pipeline_status(env, "cyclic").get("phase") == "Failed", 30)
        stalled = conditions(env, "cyclic")["Stalled"]
        assert stalled["status"] == "True" and stalled["reason"] == "Invalid" and "cycle" in stalled["message"]
        assert pipeline_status(env, "cyclic")["runs"] == []
    trained = len([i for i in count.seen if i is not None])
    assert trained == MODEL_ITERATIONS, "only the model's own training ran"
    assert [e["kind"] for e in ledger(env)].count("run-started") == 0


def push_data_change(env: OperatorEnv, folder: Path) -> None:
    """Someone commits data/extra.csv to the GitOps repository (retried if the operator pushed first)."""
    git("clone", "--quiet", str(env.remote), str(folder))
    (folder / "data").mkdir()
    (folder / "data" / "extra.csv").write_text("x,y\n1,0\n")
    git("add", ".", cwd=folder)
    git("-c", "user.name=Bob", "-c", "user.email=bob@example.com", "commit", "--quiet", "-m", "data", cwd=folder)
    for _ in range(5):
        try:
            git("push", "--quiet", "origin", "main", cwd=folder)
            return
        except Exception:
            git("pull", "--quiet", "--rebase", "origin", "main", cwd=folder)
    raise AssertionError("could not push the data change")


async def test_a_git_change_and_a_schedule_tick_start_runs(env: OperatorEnv) -> None:
    # the operator's clock stands two seconds before the nightly pipeline's 02:00 tick until the test moves it
    now = [datetime(2026, 1, 1, 1, 59, 58, tzinfo=UTC)]
    count = Count()
    async with env.operator(trainer=count, clock=lambda: now[0], approval_poll=1.0):
        await env.client.create(tiny_model(iterations=MODEL_ITERATIONS))
        await model_ready(env)
        await env.client.create(sweep(triggers=[{"gitChange": {"paths": ["data/**"]}}]))
        await env.until(lambda: pipeline_status(env).get("phase") == "Succeeded", 240)
        nightly = sweep("nightly", triggers=[{"schedule": "0 2 * * *"}])
        nightly["spec"]["steps"].pop()  # scores and selects only: one pipeline promotes a model
        await env.client.create(nightly)
        await env.until(lambda: pipeline_status(env, "nightly").get("phase") == "Succeeded", 120)
        trained = len(count.seen)

        push_data_change(env, env.tmp / "bob")  # the operator looks at Git every second for it
        await env.until(lambda: len(pipeline_status(env)["runs"]) == 2, 60)
        await env.until(lambda: pipeline_status(env)["runs"][0]["phase"] == "Succeeded", 120)
        assert pipeline_status(env)["runs"][0]["trigger"] == "gitChange"
        assert len(pipeline_status(env, "nightly")["runs"]) == 1, "no gitChange trigger: the commit starts nothing"

        now[0] += timedelta(seconds=5)  # 02:00:03: the nightly worker, asleep until the tick, looks again
        await env.until(lambda: len(pipeline_status(env, "nightly")["runs"]) == 2, 60)
        await env.until(lambda: pipeline_status(env, "nightly")["runs"][0]["phase"] == "Succeeded", 120)
        assert pipeline_status(env, "nightly")["runs"][0]["trigger"] == "schedule"
        assert len(count.seen) == trained, "the reruns found every cell in the cache"
    assert len(pipeline_status(env)["runs"]) == 2, "no schedule trigger: the tick starts nothing"


async def test_a_remote_out_of_reach_shows_in_status_and_the_run_starts_once_it_is_back(env: OperatorEnv) -> None:
    async with env.operator():
        await env.client.create(tiny_model(iterations=MODEL_ITERATIONS))
        await model_ready(env)
        away = env.remote.with_name("gone.git")
        env.remote.rename(away)
        try:
            await env.client.create(sweep())
            await env.until(lambda: conditions(env).get("Ready", {}).get("reason") == "ReconcileFailed", 60)
            assert conditions(env)["Stalled"]["status"] == "False", "a failed reconcile is retried, not stalled"
            assert pipeline_status(env)["runs"] == []
            await env.until(lambda: "ReconcileFailed" in env.reasons("sweep"), 30)
            warned = [e for e in env.events("sweep") if e["reason"] == "ReconcileFailed"]
            assert warned[0]["type"] == "Warning" and str(env.remote) not in warned[0]["message"]
            await asyncio.sleep(2)  # the harness retries after 0.3, 0.6 and 1 s: each fails the same way
        finally:
            away.rename(env.remote)
        await env.until(lambda: pipeline_status(env).get("phase") == "Succeeded", 240)
    assert [e["kind"] for e in ledger(env)].count("run-started") == 1
    assert env.reasons("sweep").count("ReconcileFailed") == 1, "a retry failing the same way says nothing new"


async def run_until_the_first_cell_is_held(env: OperatorEnv, hold: Hold) -> None:
    """The model trained and promoted, then the sweep running with its first cell held by ``hold``."""
    await env.client.create(tiny_model(iterations=MODEL_ITERATIONS))
    await model_ready(env)
    await env.client.create(sweep())
    await env.until(lambda: hold.reached.is_set() and pipeline_status(env).get("phase") == "Running", 120)


async def test_a_model_deleted_mid_run_stops_its_pipelines_cell_and_registers_nothing(env: OperatorEnv) -> None:
    hold = Hold(at=MODEL_ITERATIONS + 1)  # the model's own training ends before; the first cell is held
    async with env.operator(trainer=hold):
        await run_until_the_first_cell_is_held(env, hold)
        await env.client.delete("QuantumModel", NAMESPACE, "iris-tiny")
        await env.until(lambda: env.kube.read("QuantumModel", NAMESPACE, "iris-tiny") is None, 60)
        await env.until(lambda: conditions(env).get("Ready", {}).get("reason") == "ModelNotFound", 60)
    assert registered_cells(env) == [], "the held cell stopped and registered nothing for a model that went"


async def test_a_pipeline_deleted_mid_run_stops_its_training_before_it_goes(env: OperatorEnv) -> None:
    hold = Hold(at=MODEL_ITERATIONS + 1)  # the model's own training ends before; the first cell is held
    async with env.operator(trainer=hold):
        await run_until_the_first_cell_is_held(env, hold)
        assert FINALIZER in finalizers(env.kube.read("QuantumPipeline", NAMESPACE, "sweep"))
        await env.client.delete("QuantumPipeline", NAMESPACE, "sweep")
        # the held cell is told to stop (the daemon's licence ends), then kopf lets the pipeline go
        await env.until(lambda: env.kube.read("QuantumPipeline", NAMESPACE, "sweep") is None, 60)
        assert registered_cells(env) == [], "the stopped cell registered nothing"
        assert env.kube.read("ConfigMap", NAMESPACE, "qmlops-checkpoint-iris-tiny") is not None, "kept for the model"
        await env.until_phase("Ready")


async def test_a_pipeline_deleted_mid_run_records_what_its_cell_spent_on_ibm(env: OperatorEnv) -> None:
    from tests.operator.operator_env import IBM_TOKEN, secret
    from tests.operator.test_end_to_end import Closing
    from tests.training.standin import installed

    await env.client.create(secret("ibm-quantum", token=IBM_TOKEN, instance="crn:v1:bluemix:public:quantum:x"))
    hold = Hold(at=MODEL_ITERATIONS + 1)  # the model's own training ends before; the cell is held
    ibm = Closing()
    ibm.seconds_per_job = 1.5  # IBM bills each of the cell's jobs
    model = tiny_model(
        iterations=MODEL_ITERATIONS,
        training={"backend": "local:statevector", "credentialsSecret": "ibm-quantum", "seed": 7,
                  "optimizer": {"kind": "COBYLA", "maxIterations": MODEL_ITERATIONS}},
        governance={"allowedBackends": ["local:*", "ibm:*"], "qpuBudgetSeconds": 600},
    )  # fmt: skip
    on_ibm = sweep()
    on_ibm["spec"]["steps"][0]["train"]["matrix"] = {
        "training.optimizer.maxIterations": [3],
        "training.backend": ["ibm:fake_manila"],
        "training.shots": [64],
    }
    with installed(ibm):
        async with env.operator(trainer=hold):
            await env.client.create(model)
            await model_ready(env)
            await env.client.create(on_ibm)
            await env.until(lambda: hold.reached.is_set() and pipeline_status(env).get("phase") == "Running", 120)
            await env.client.delete("QuantumPipeline", NAMESPACE, "sweep")
            await env.until(lambda: env.kube.read("QuantumPipeline", NAMESPACE, "sweep") is None, 60)
    assert registered_cells(env) == [], "the stopped cell registered nothing"
    [stopped] = [e for e in ledger(env) if e["kind"] == "stopped"]  # pushed before the pipeline went
    assert stopped["data"]["pipeline"]["name"] == "sweep" and stopped["data"]["pipeline"]["cell"]
    assert stopped["data"]["usage"]["qpuSeconds"] == 1.5 * stopped["data"]["usage"]["primitiveJobs"] > 0
