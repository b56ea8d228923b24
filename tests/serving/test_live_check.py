"""Monitoring's ``live`` check end to end: ``qmlops serve`` answers requests and takes labelled feedback,
the monitor reads the champion's live accuracy from the server's ``/live`` over HTTP (the shells'
``ServingEndpoint``) and compares it with the champion's registered test accuracy; a drop beyond
``maxAccuracyDrop`` is a ``drift-detected`` entry with check ``live`` that retrains (``onDrift``), too
few labelled rows is "not enough samples", and a server that cannot be read is "not run", never "ok"."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from controller.engine.decisions import LedgerKind
from controller.engine.monitoring import CalibrationSource, CheckKind, Verdict, monitor_model
from controller.engine.reconcile import Reconciler
from controller.engine.registry import Registry
from controller.runner.specs import observe
from controller.serving.server import ServeConfig, Server
from controller.shells.live import ServingEndpoint
from tests.registry.repos import git, tiny_spec
from tests.serving.conftest import MODEL, SPEC
from tests.serving.test_server import INFER, ROWS, artifact, tensor

pytestmark = pytest.mark.slow

FEEDBACK = "/v2/models/demo.tiny/feedback"


def watched(work: Path, *, min_samples: int = 4, on_drift: str = "[retrain, alert]") -> Any:
    """The tiny model's spec (as version 2 was trained) with ``monitoring.live``, committed; the model."""
    live = f"    live: {{maxAccuracyDrop: 0.2, minSamples: {min_samples}, window: 50}}\n    onDrift: {on_drift}\n"
    (work / SPEC).write_text(tiny_spec(iterations=5, monitoring=live))
    git(work, "commit", "--quiet", "-am", "Watch the live accuracy")
    found = observe(Registry(work, remote=None).git, work / "specs")
    assert not found.problems
    return found.models[0][0]


@pytest.fixture
async def client(work: Path) -> AsyncIterator[TestClient[Any, Any]]:
    server = Server(ServeConfig(repo=str(work), prediction_log=None))
    async with TestClient(TestServer(server.app(), host="127.0.0.1")) as test_client:
        yield test_client


def base_url(client: TestClient[Any, Any]) -> str:
    return str(client.server.make_url("")).rstrip("/")


async def label(client: TestClient[Any, Any], work: Path, request: str, rows: list[list[float]], right: int) -> None:
    """Predict ``rows`` as request ``request`` and send true labels of which the first ``right`` agree."""
    predicted = [str(x) for x in artifact(work, 2).predict(np.array(rows))]
    assert (await client.post(INFER, json=tensor(rows, id=request))).status == 200
    flipped = {"0": "1", "1": "0"}
    truth = predicted[:right] + [flipped[p] for p in predicted[right:]]
    response = await client.post(FEEDBACK, json={"feedback": [{"id": request, "labels": truth}]})
    assert response.status == 200, await response.text()


async def test_a_live_accuracy_drop_is_a_drift_that_is_recorded_once_and_retrains(
    client: TestClient[Any, Any], work: Path
) -> None:
    observed = watched(work)
    await label(client, work, "a", ROWS, right=1)  # 1 of 5 right: 0.2 against a test accuracy near 1
    registry = Registry(work, remote=None)
    source = ServingEndpoint.at(base_url(client))
    reconciler = Reconciler(registry, checkpoint_root=work.parent / "checkpoints", live=source)
    outcome = await asyncio.to_thread(reconciler.reconcile, observed)

    ledger = registry.ledger(*MODEL)
    drifts = ledger.of_kind(LedgerKind.DRIFT_DETECTED)
    assert len(drifts) == 1 and drifts[0].version == 2
    data = drifts[0].data
    champion = registry.version(*MODEL, 2)
    assert champion is not None
    tested = float(champion.metrics["accuracy"])
    assert data["check"] == "live" and data["actions"] == ["retrain", "alert"]
    figures = data["figures"]
    assert figures["accuracy"] == {"before": round(tested, 6), "after": 0.2}
    assert (figures["labelled"], figures["correct"], figures["minSamples"], figures["window"]) == (5, 1, 4, 50)
    assert figures["drop"] == pytest.approx(tested - 0.2) and figures["threshold"] == 0.2
    assert "live accuracy 0.200 on 5 labelled rows" in drifts[0].message
    # the drift retrained: a version 3 whose recorded reason is the live drift
    assert ledger.versions()[-1] == 3
    registered = ledger.of_kind(LedgerKind.REGISTERED)[-1]
    assert registered.version == 3 and "a drift was detected (live" in registered.message
    monitoring = outcome.status.monitoring
    assert monitoring is not None and monitoring.live_accuracy == 0.2 and monitoring.live_samples == 5
    assert monitoring.drifted == ["live"]
    # the same drift is not acted on again
    again = await asyncio.to_thread(
        Reconciler(registry, checkpoint_root=work.parent / "checkpoints", live=source).reconcile, observed
    )
    assert len(Registry(work, remote=None).ledger(*MODEL).of_kind(LedgerKind.DRIFT_DETECTED)) == 1, again


async def test_too_few_labelled_rows_is_not_enough_samples_and_a_good_champion_is_ok(
    client: TestClient[Any, Any], work: Path
) -> None:
    observed = watched(work, min_samples=8)
    registry = Registry(work, remote=None)
    source = ServingEndpoint.at(base_url(client))

    def check() -> Any:
        report = monitor_model(
            registry, observed.model, source=CalibrationSource(work), now=datetime.now(UTC), live=source
        )
        found = report.check(CheckKind.LIVE)
        assert found is not None and [c.kind for c in report.checks] == [CheckKind.LIVE], "only the check named runs"
        return found

    await label(client, work, "a", ROWS, right=5)
    few = await asyncio.to_thread(check)
    assert few.verdict is Verdict.NOT_RUN
    assert few.reason == "not enough samples: 5 labelled rows of version 2, at least 8 needed"
    assert few.figures["labelled"] == 5 and "accuracy" not in few.figures
    await label(client, work, "b", ROWS[:3], right=3)
    enough = await asyncio.to_thread(check)
    assert enough.verdict is Verdict.OK and enough.figures["accuracy"]["after"] == 1.0
    assert enough.figures["labelled"] == 8


async def test_a_server_that_cannot_be_read_is_not_run_never_ok(work: Path, unused_tcp_port: int) -> None:
    observed = watched(work)
    registry = Registry(work, remote=None)

    def live_check(source: Any) -> Any:
        report = monitor_model(
            registry, observed.model, source=CalibrationSource(work), now=datetime.now(UTC), live=source
        )
        return report.check(CheckKind.LIVE)

    nothing = await asyncio.to_thread(live_check, None)
    assert nothing.verdict is Verdict.NOT_RUN and "--serving-url" in nothing.reason
    down = await asyncio.to_thread(live_check, ServingEndpoint.at(f"http://127.0.0.1:{unused_tcp_port}"))
    assert down.verdict is Verdict.NOT_RUN and down.reason.startswith(
        f"the server at 127.0.0.1:{unused_tcp_port} did not answer"
    )

    secret = "tok-" + "x" * 20
    answers: list[web.Response] = [
        web.Response(text=f"<html>{secret}</html>", status=500),
        web.Response(text=f"not json {secret}"),
        web.json_response({"model": "demo/tiny", "version": 2, "labelled": 9, "correct": 10, "window": 50}),
        web.json_response({"model": "demo/other", "version": 2, "labelled": 9, "correct": 9, "window": 50}),
        web.json_response({"model": "demo/tiny", "version": 1, "labelled": 9, "correct": 9, "window": 50}),
        web.Response(body=b'{"pad": "' + b"x" * (70 * 1024) + b'"}', content_type="application/json"),
    ]
    asked: list[str] = []

    async def hostile(request: web.Request) -> web.Response:
        asked.append(request.path_qs)
        return answers.pop(0)

    app = web.Application()
    app.router.add_get("/v2/models/{model}/live", hostile)
    async with TestServer(app, host="127.0.0.1") as fake:
        where = f"{fake.host}:{fake.port}"
        source = ServingEndpoint.at(str(fake.make_url("")))
        reasons = [(await asyncio.to_thread(live_check, source)) for _ in range(6)]
    assert asked[0] == "/v2/models/demo.tiny/live?window=50"
    assert all(r.verdict is Verdict.NOT_RUN for r in reasons)
    assert [r.reason for r in reasons[:2]] == [
        f"the server at {where} answered HTTP 500 for demo/tiny",
        f"the server at {where} answered no live accuracy (not JSON)",
    ]
    assert "correct <= labelled" in reasons[2].reason
    assert reasons[3].reason == "the server answered for another model"
    assert reasons[4].reason == "the server serves version 1, the champion is version 2 (not swapped in yet)"
    assert "more than 65536 bytes" in reasons[5].reason
    assert not any(secret in r.reason for r in reasons), "what a server sends is never quoted"


async def test_feedback_labels_must_be_classes_and_the_live_window_is_bounded(
    client: TestClient[Any, Any], work: Path
) -> None:
    assert (await client.post(INFER, json=tensor(ROWS[:2], id="a"))).status == 200
    hostile = "<script>" + "z" * 50
    response = await client.post(FEEDBACK, json={"feedback": [{"id": "a", "labels": ["0", hostile]}]})
    body = await response.json()
    assert response.status == 400
    assert body["error"] == "feedback[0].labels[1]: not a class of version 2 (classes: 0, 1)"
    too_long = await client.post(FEEDBACK, json={"feedback": [{"id": "i" * 200, "labels": ["0"]}]})
    assert (too_long.status, (await too_long.json())["error"]) == (400, "feedback[0].id: over 128 characters")
    fine = await client.post(FEEDBACK, json={"feedback": [{"id": "a", "labels": ["0", "1"]}]})
    assert fine.status == 200, "refused feedback leaves the request to be labelled"
    for bad in ("0", "-1", "100001", "x", "1" * 20):
        answer = await client.get(f"/v2/models/demo.tiny/live?window={bad}")
        assert answer.status == 400, bad
        assert json.loads(await answer.text())["error"] == "window: expected a number of rows from 1 to 100000"
    last = await (await client.get("/v2/models/demo.tiny/live?window=1")).json()
    assert (last["labelled"], last["window"]) == (1, 1)


async def test_qmlops_monitor_reads_the_server_given_by_serving_url(
    client: TestClient[Any, Any], work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from controller.cli.main import main

    watched(work, min_samples=5)
    await label(client, work, "a", ROWS, right=0)
    code = await asyncio.to_thread(
        main, ["monitor", "--repo", str(work), "--serving-url", base_url(client), "--format", "json"]
    )
    report = json.loads(capsys.readouterr().out)["models"][0]
    assert code == 1 and report["verdict"] == "drift"
    assert report["checks"][0]["check"] == "live" and report["checks"][0]["figures"]["accuracy"]["after"] == 0.0
    assert await asyncio.to_thread(main, ["monitor", "--repo", str(work), "--serving-url", "ftp://x"]) == 2
    assert "--serving-url: expected http://HOST[:PORT]" in capsys.readouterr().err
    assert await asyncio.to_thread(main, ["monitor", "--repo", str(work)]) == 2, "no server: not run, never ok"
    assert "no server to read live accuracy from" in capsys.readouterr().out


async def test_qmlops_run_installs_the_server_given_by_serving_url(client: TestClient[Any, Any], work: Path) -> None:
    from controller.cli.main import main

    watched(work, min_samples=5, on_drift="[alert]")
    await label(client, work, "a", ROWS, right=1)
    args = ["run", "--repo", str(work), "--once", "--no-push", "--serving-url", base_url(client)]
    assert await asyncio.to_thread(main, args) == 0
    [drift] = Registry(work, remote=None).ledger(*MODEL).of_kind(LedgerKind.DRIFT_DETECTED)
    assert drift.data["check"] == "live" and drift.data["actions"] == ["alert"]
    assert drift.data["figures"]["accuracy"]["after"] == 0.2
    bad = ["run", "--repo", str(work), "--once", "--no-push", "--serving-url", "http://user:pw@host"]
    assert await asyncio.to_thread(main, bad) == 2
