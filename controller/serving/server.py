"""``qmlops serve``: the champions of a repository behind the Open Inference Protocol v2, on aiohttp.

Routes (a model is named ``<namespace>.<name>``):

- ``GET /v2/health/live``, ``GET /v2/health/ready`` (ready: every served model has a champion loaded)
- ``GET /v2``: server metadata; ``GET /v2/models/{model}[/versions/{n}]``: model metadata
- ``GET /v2/models/{model}/ready``
- ``POST /v2/models/{model}/infer`` and ``/v2/models/{model}/versions/{n}/infer``: the rows of one
  request go to the primitive as one job, run off the event loop
- ``POST /v2/models/{model}/feedback``: true labels of earlier requests; ``GET /v2/models/{model}/live``:
  the live accuracy of the champion (:class:`controller.engine.live.LiveAccuracy`)
- ``GET /metrics``: Prometheus

Every refusal is a 4xx with the protocol's error body ``{"error": "..."}``; the server keeps serving.
The champions are refreshed every ``interval`` seconds and at once on ``SIGHUP``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from controller import __version__
from controller.engine import prediction
from controller.engine.live import MAX_WINDOW, LiveAccuracy
from controller.engine.prediction import LoadedModel, ModelUnavailable
from controller.engine.registry import RegistryError
from controller.serving import protocol
from controller.serving.catalog import Catalog, CatalogError, Swap
from controller.serving.feedback import FeedbackError, Outcomes, PredictionLog
from controller.serving.protocol import ProtocolError

log = logging.getLogger(__name__)

DEFAULT_PORT = 8080
DEFAULT_INTERVAL = 30.0
MAX_BODY_BYTES = 8 * 1024 * 1024
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


@dataclass(frozen=True)
class ServeConfig:
    repo: str
    models: list[tuple[str, str]] | None = None
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    interval: float = DEFAULT_INTERVAL
    branch: str | None = None
    workdir: Path | None = None
    prediction_log: Path | None = None
    log_inputs: bool = False
    window: int = 1000
    max_body_bytes: int = MAX_BODY_BYTES
    workers: int = 2
    git_secret_dir: Path | None = None  # a Secret mounted as files: Git credentials for a URL


class Metrics:
    """The server's Prometheus metrics, in a registry of its own (two servers in one process count apart)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "qmlops_serving_requests", "Inference requests by model and HTTP status", ["model", "code"], registry=r
        )
        self.latency = Histogram(
            "qmlops_serving_request_seconds",
            "Inference request latency",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rows = Counter("qmlops_serving_rows", "Rows predicted by model", ["model"], registry=r)
        self.version = Gauge(
            "qmlops_serving_version", "The version served as champion, by model", ["model"], registry=r
        )
        self.live_accuracy = Gauge(
            "qmlops_serving_live_accuracy",
            "Accuracy of the champion on the labelled rows of the feedback window",
            ["model"],
            registry=r,
        )
        self.labelled = Gauge(
            "qmlops_serving_live_labelled_rows",
            "Labelled rows of the champion in the feedback window",
            ["model"],
            registry=r,
        )
        self.swaps = Counter("qmlops_serving_swaps", "Champions swapped in, by model", ["model"], registry=r)


class Server:
    def __init__(self, config: ServeConfig, catalog: Catalog | None = None) -> None:
        self.config = config
        if catalog is None:
            credentials = None
            if config.git_secret_dir is not None:
                from controller.shells.gitsource import GitCredentials

                credentials = GitCredentials.from_folder(config.git_secret_dir)
            catalog = Catalog(
                config.repo, config.models, workdir=config.workdir, branch=config.branch, credentials=credentials
            )
        self.catalog = catalog
        self.metrics = Metrics()
        self.outcomes = Outcomes(config.window)
        self.log = PredictionLog(config.prediction_log, inputs=config.log_inputs) if config.prediction_log else None
        self._predicting = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="qmlops-predict")
        self._refreshing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qmlops-refresh")
        self._wake = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None

    # --- the application --------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body_bytes, middlewares=[self._errors])
        get, post = app.router.add_get, app.router.add_post
        get("/v2/health/live", self._live)
        get("/v2/health/ready", self._ready)
        get("/v2", self._server_metadata)
        get("/v2/models/{model}", self._metadata)
        get("/v2/models/{model}/ready", self._model_ready)
        get("/v2/models/{model}/versions/{version}", self._metadata)
        post("/v2/models/{model}/infer", self._infer)
        post("/v2/models/{model}/versions/{version}/infer", self._infer)
        post("/v2/models/{model}/feedback", self._feedback)
        get("/v2/models/{model}/live", self._live_accuracy)
        get("/metrics", self._metrics)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except ProtocolError as err:
            return _error(err.status, err.message)
        except FeedbackError as err:
            return _error(err.status, str(err))
        except ModelUnavailable as err:
            return _error(404, str(err))
        except web.HTTPException as err:
            if err.status < 400:
                raise
            return _error(
                err.status, err.reason if err.status != 413 else f"the body is over {self.config.max_body_bytes} bytes"
            )
        except Exception as err:  # a bug or a backend failure: one line in the log, a 500 to the client
            log.exception("%s %s failed", request.method, request.path)
            return _error(500, f"internal error: {type(err).__name__}")

    # --- health and metadata ----------------------------------------------------------------------

    async def _live(self, _: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def _ready(self, _: web.Request) -> web.Response:
        ready = self.catalog.ready()
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def _server_metadata(self, _: web.Request) -> web.Response:
        models = [key.replace("/", ".", 1) for key in self.catalog.served()]
        return web.json_response({"name": "qmlops", "version": __version__, "extensions": [], "models": models})

    async def _metadata(self, request: web.Request) -> web.Response:
        key = _key(request)
        model = await self._model(request, key)
        entry = self.catalog.entry(key)
        return web.json_response(protocol.metadata(model, entry.versions if entry else [model.version]))

    async def _model_ready(self, request: web.Request) -> web.Response:
        key = _key(request)
        ready = self.catalog.champion(key) is not None
        if self.catalog.entry(key) is None:
            raise ModelUnavailable(f"{key} is not served here")
        return web.json_response({"name": request.match_info["model"], "ready": ready}, status=200 if ready else 503)

    async def _model(self, request: web.Request, key: str) -> LoadedModel:
        """The champion, or the version the path names (loaded and checked off the event loop)."""
        entry = self.catalog.entry(key)
        if entry is None:
            raise ModelUnavailable(
                f"model {request.match_info['model']}: not served here (served: {', '.join(self.catalog.served()) or 'none'})"
            )
        text = request.match_info.get("version")
        if text is not None:
            if not text.isdigit() or len(text) > 9 or int(text) < 1:
                raise ProtocolError(400, "version: expected a version number")
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._predicting, self.catalog.version, key, int(text))
        if entry.champion is None:
            raise ProtocolError(503, f"{key} has no champion to serve: {entry.problem or 'not loaded yet'}")
        return entry.champion

    # --- inference --------------------------------------------------------------------------------

    async def _infer(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        key = _key(request)
        label = key if self.catalog.entry(key) is not None else "unknown"
        status = 500
        try:
            response = await self._predict(request, key)
            status = 200
            return response
        except ProtocolError as err:
            status = err.status
            raise
        except (ModelUnavailable, FeedbackError):
            status = 404
            raise
        except web.HTTPException as err:
            status = err.status
            raise
        finally:
            self.metrics.requests.labels(label, str(status)).inc()
            if status == 200:
                self.metrics.latency.labels(label).observe(time.perf_counter() - started)

    async def _predict(self, request: web.Request, key: str) -> web.Response:
        model = await self._model(request, key)
        body = await _json(request)
        rid = protocol.request_id(body) if isinstance(body, dict) else None
        rows = protocol.read_inputs(body, model.features)
        rid = rid or uuid.uuid4().hex
        loop = asyncio.get_running_loop()
        predictions = await loop.run_in_executor(self._predicting, prediction.predict, model, rows)
        labels = predictions.labels
        self.outcomes.remember(key, rid, model.version, labels, model.classes)
        self.metrics.rows.labels(key).inc(len(labels))
        written = self.log
        if written is not None:
            await loop.run_in_executor(
                self._predicting,
                lambda: written.write(request=rid, model=key, version=model.version, rows=rows, labels=labels),
            )
        return web.json_response(protocol.infer_response(model, predictions, rid))

    # --- feedback ---------------------------------------------------------------------------------

    async def _feedback(self, request: web.Request) -> web.Response:
        key = _key(request)
        if self.catalog.entry(key) is None:
            raise ModelUnavailable(f"model {request.match_info['model']}: not served here")
        rows = self.outcomes.feedback(key, await _json(request))
        live = self.live_accuracy(key)
        return web.json_response({"labelled": rows, "live": live})

    async def _live_accuracy(self, request: web.Request) -> web.Response:
        key = _key(request)
        if self.catalog.entry(key) is None:
            raise ModelUnavailable(f"model {request.match_info['model']}: not served here")
        text = request.query.get("window")
        last = None
        if text is not None:
            if not text.isdigit() or len(text) > 6 or not 1 <= int(text) <= MAX_WINDOW:
                raise ProtocolError(400, f"window: expected a number of rows from 1 to {MAX_WINDOW}")
            last = int(text)
        return web.json_response(self.live_accuracy(key, last))

    def live_accuracy(self, key: str, last: int | None = None) -> dict[str, Any]:
        """The champion's live accuracy (``LiveAccuracy.to_json``) over its latest ``last`` labelled rows
        (the whole window: None); the gauges, over the whole window, brought up to date."""
        champion = self.catalog.champion(key)
        version = champion.version if champion else None
        live = self.outcomes.live(key, version)
        self._gauge(key, live)
        return (live if last is None else self.outcomes.live(key, version, last)).to_json()

    def _gauge(self, key: str, live: LiveAccuracy) -> None:
        if live.accuracy is not None:
            self.metrics.live_accuracy.labels(key).set(live.accuracy)
        self.metrics.labelled.labels(key).set(live.labelled)

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    # --- following the champions -----------------------------------------------------------------

    async def refresh(self) -> list[Swap]:
        """Refresh the catalog off the event loop; the metrics follow."""
        loop = asyncio.get_running_loop()
        try:
            swaps = await loop.run_in_executor(self._refreshing, self.catalog.refresh)
        except Exception as err:
            shown = str(err) if isinstance(err, CatalogError | RegistryError) else type(err).__name__  # safe to show
            log.warning("refreshing the champions failed; serving what was loaded: %s", shown)
            return []
        for swap in swaps:
            self.metrics.swaps.labels(swap.model).inc()
        for key in self.catalog.served():
            champion = self.catalog.champion(key)
            if champion is not None:
                self.metrics.version.labels(key).set(champion.version)
            self.live_accuracy(key)
        return swaps

    def wake(self) -> None:
        """Refresh now (``SIGHUP``)."""
        self._wake.set()

    async def _poll(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.config.interval)
            self._wake.clear()
            await self.refresh()

    async def _start(self, _: web.Application) -> None:
        self._wake = asyncio.Event()
        if not self.catalog.refreshed:
            await self.refresh()
        self._poller = asyncio.create_task(self._poll())
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.wake)

    async def _stop(self, _: web.Application) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        self._predicting.shutdown(wait=False, cancel_futures=True)
        self._refreshing.shutdown(wait=False, cancel_futures=True)


def _key(request: web.Request) -> str:
    """``namespace.name`` in the URL as the registry's ``namespace/name`` (namespaces hold no dots)."""
    namespace, dot, name = request.match_info["model"].partition(".")
    if not dot or not namespace or not name:
        raise ModelUnavailable(f"model {protocol.shown(request.match_info['model'])}: expected <namespace>.<name>")
    return f"{namespace}/{name}"


async def _json(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise ProtocolError(400, f"the body is not JSON ({type(err).__name__})") from None


def _no_constant(name: str) -> Any:
    raise ProtocolError(400, f"the body holds {name}: rows must be finite numbers")


def _error(status: int, message: str) -> web.Response:
    return web.json_response(protocol.error_body(message), status=status)
