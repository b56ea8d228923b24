"""The operator's Prometheus metrics, served at ``/metrics`` on ``--metrics-port``.

One registry per operator (not the process-wide default), so that an operator stopped and started
again in one process, as the tests do, counts afresh.
"""

from __future__ import annotations

import aiohttp.web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.reconciles = Counter(
            "qmlops_reconciles", "Reconciles of a resource, by kind and result", ["kind", "result"], registry=r
        )
        self.iterations = Counter("qmlops_training_iterations", "Training iterations completed", registry=r)
        self.qpu_seconds = Counter("qmlops_qpu_seconds", "QPU seconds used by training, as reported", registry=r)
        self.decisions = Counter("qmlops_decisions", "Decisions written to the ledger, by kind", ["kind"], registry=r)
        self.promotions = Counter("qmlops_promotions", "Versions promoted to champion", registry=r)
        self.failures = Counter("qmlops_failures", "Reconciles that failed, by reason", ["reason"], registry=r)
        self.drifts = Counter(
            "qmlops_drift_detected",
            "Drifts detected on a champion and alerted (monitoring.onDrift: alert), by model",
            ["namespace", "model"],
            registry=r,
        )
        per_model = ["namespace", "model"]
        self.esp = Gauge("qmlops_model_esp", "The champion's ESP under today's calibration", per_model, registry=r)
        self.esp_at_training = Gauge(
            "qmlops_model_esp_at_training", "The champion's ESP under its training calibration", per_model, registry=r
        )
        self.replay_accuracy = Gauge(
            "qmlops_model_replay_accuracy",
            "The champion's accuracy replayed under today's noise",
            per_model,
            registry=r,
        )
        self.live_accuracy = Gauge(
            "qmlops_model_live_accuracy",
            "The champion's accuracy on the labelled feedback of its server (monitoring.live)",
            per_model,
            registry=r,
        )
        self.champion_accuracy = Gauge(
            "qmlops_model_champion_accuracy", "The champion's test accuracy as registered", per_model, registry=r
        )
        self.champion_version = Gauge("qmlops_model_champion_version", "The champion's version", per_model, registry=r)
        self.jobs_started = Counter("qmlops_training_jobs_started", "Training Jobs created", registry=r)
        self.jobs_retried = Counter(
            "qmlops_training_jobs_retried",
            "Training Job pods that ended and were replaced, by reason",
            ["reason"],
            registry=r,
        )
        self.jobs_failed = Counter(
            "qmlops_training_jobs_failed", "Training Jobs that failed, by reason", ["reason"], registry=r
        )
        self.evaluation_jobs_started = Counter(
            "qmlops_evaluation_jobs_started", "Evaluation Jobs created (a pipeline's evaluate step)", registry=r
        )
        self.pipeline_runs = Counter(
            "qmlops_pipeline_runs", "QuantumPipeline runs finished, by result", ["result"], registry=r
        )
        self.pipeline_cells = Counter(
            "qmlops_pipeline_cells",
            "Cells of pipeline train steps, by source: from the cache or trained",
            ["source"],
            registry=r,
        )
        self.queue_depth = Gauge("qmlops_queue_depth", "Reconciles waiting for a worker", registry=r)
        self.running = Gauge("qmlops_reconciles_running", "Reconciles running on the worker pool", registry=r)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


async def serve(metrics: Metrics, port: int, host: str = "0.0.0.0") -> aiohttp.web.AppRunner:
    """Start the ``/metrics`` endpoint in this event loop; the caller cleans the runner up."""

    async def handle(_: aiohttp.web.Request) -> aiohttp.web.Response:
        body = metrics.exposition()
        return aiohttp.web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = aiohttp.web.Application()
    app.router.add_get("/metrics", handle)
    runner = aiohttp.web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await aiohttp.web.TCPSite(runner, host, port).start()
    return runner
