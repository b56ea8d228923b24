"""``qmlops serve`` on the Open Inference Protocol v2: health, metadata, inference in one job per
request, refusals as 4xx error bodies while the server keeps serving, metrics, feedback and live
accuracy, the prediction log. The server binds 127.0.0.1 on a free port (aiohttp's test server)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from controller.engine.live import LiveAccuracy
from controller.engine.registry import Registry
from controller.engine.training.artifact import ModelArtifact
from controller.serving.server import ServeConfig, Server
from tests.serving.conftest import MODEL

pytestmark = pytest.mark.slow

ROWS = [[1.4, 0.2], [4.5, 1.5], [1.3, 0.3], [4.0, 1.2], [1.5, 0.1]]
INFER = "/v2/models/demo.tiny/infer"


def tensor(rows: list[list[Any]], datatype: str = "FP64", **extra: Any) -> dict[str, Any]:
    flat = [v for row in rows for v in row]
    return {
        "inputs": [{"name": "input", "shape": [len(rows), len(rows[0])], "datatype": datatype, "data": flat}],
        **extra,
    }


def artifact(work: Path, version: int) -> ModelArtifact:
    found = Registry(work, remote=None).version(*MODEL, version)
    assert found is not None
    return ModelArtifact(found.artifact)


@pytest.fixture
async def client(work: Path, tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    config = ServeConfig(repo=str(work), prediction_log=tmp_path / "predictions.jsonl", max_body_bytes=64 * 1024)
    server = Server(config)
    async with TestClient(TestServer(server.app(), host="127.0.0.1")) as test_client:
        yield test_client


async def test_health_and_metadata_name_the_champion_its_inputs_and_outputs(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/v2/health/live")).status == 200
    ready = await client.get("/v2/health/ready")
    assert (ready.status, await ready.json()) == (200, {"ready": True})
    assert (await client.get("/v2/models/demo.tiny/ready")).status == 200
    meta = await (await client.get("/v2/models/demo.tiny")).json()
    assert meta["name"] == "demo.tiny" and meta["versions"] == ["1", "2"] and meta["platform"] == "qmlops-qiskit"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 2]}]
    assert [(o["name"], o["shape"]) for o in meta["outputs"]] == [("label", [-1]), ("probabilities", [-1, 2])]
    assert meta["parameters"]["version"] == 2 and meta["parameters"]["features"] == ["petal_length", "petal_width"]
    old = await (await client.get("/v2/models/demo.tiny/versions/1")).json()
    assert old["parameters"]["version"] == 1
    server = await (await client.get("/v2")).json()
    assert server["name"] == "qmlops" and server["models"] == ["demo.tiny"]


async def test_infer_answers_the_champions_predictions_from_one_job(
    client: TestClient[Any, Any], work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qiskit.primitives import StatevectorEstimator

    jobs: list[int] = []
    real = StatevectorEstimator.run

    def counted(self: StatevectorEstimator, pubs: list[Any], **kwargs: Any) -> Any:
        jobs.append(len(pubs))
        return real(self, pubs, **kwargs)

    monkeypatch.setattr(StatevectorEstimator, "run", counted)
    response = await client.post(INFER, json=tensor(ROWS, id="req-1"))
    assert response.status == 200, await response.text()
    body = await response.json()
    assert jobs == [1], "the five rows of a request go to the primitive as one job"
    assert (body["model_name"], body["model_version"], body["id"]) == ("demo.tiny", "2", "req-1")
    label, probabilities = body["outputs"]
    expected = artifact(work, 2)
    assert label == {
        "name": "label",
        "datatype": "BYTES",
        "shape": [5],
        "data": [str(x) for x in expected.predict(np.array(ROWS))],
    }
    assert probabilities["shape"] == [5, 2]
    np.testing.assert_allclose(
        np.reshape(probabilities["data"], (5, 2)), expected.probabilities(np.array(ROWS)), atol=1e-12
    )


async def test_a_version_by_number_and_one_tensor_per_feature(client: TestClient[Any, Any], work: Path) -> None:
    columns = {
        "inputs": [
            {"name": "petal_width", "shape": [2], "datatype": "FP32", "data": [0.2, 1.5]},
            {"name": "petal_length", "shape": [2], "datatype": "FP32", "data": [1.4, 4.5]},
        ]
    }
    response = await client.post("/v2/models/demo.tiny/versions/1/infer", json=columns)
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["model_version"] == "1" and len(body["id"]) == 32
    assert body["outputs"][0]["data"] == [str(x) for x in artifact(work, 1).predict(np.array(ROWS[:2]))]


BAD: list[tuple[str, str, bytes | dict[str, Any], int, str]] = [
    ("malformed JSON", INFER, b'{"inputs": [', 400, "the body is not JSON"),
    ("not an object", INFER, b"[1, 2]", 400, "the request body must be a JSON object with inputs"),
    ("no inputs", INFER, {"id": "x"}, 400, "inputs: expected a non-empty list of tensors"),
    (
        "text datatype",
        INFER,
        tensor([["a", "b"]], "BYTES"),
        400,
        "inputs[0].datatype: 'BYTES': the model takes numbers",
    ),
    ("strings in FP64", INFER, tensor([["1", "2"]]), 400, "inputs[0].data: holds a str, expected numbers"),
    (
        "three features",
        INFER,
        tensor([[1.0, 2.0, 3.0]]),
        400,
        "inputs[0].shape: expected [rows, 2] (one column per feature), got [1, 3]",
    ),
    (
        "data short of the shape",
        INFER,
        {"inputs": [{"name": "input", "shape": [2, 2], "datatype": "FP64", "data": [1.0, 2.0, 3.0]}]},
        400,
        "inputs[0].data: 3 values do not fill the shape [2, 2]",
    ),
    (
        "NaN",
        INFER,
        b'{"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP64", "data": [NaN, 1.0]}]}',
        400,
        "the body holds NaN",
    ),
    (
        "huge number",
        INFER,
        b'{"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP64", "data": [1e400, 1.0]}]}',
        400,
        "inputs: row 0: petal_length is not a finite number",
    ),
    (
        "fraction in INT64",
        INFER,
        tensor([[1.5, 2]], "INT64"),
        400,
        "inputs[0].data: holds a fraction in an integer tensor",
    ),
    (
        "unknown feature tensor",
        INFER,
        {
            "inputs": [
                {"name": "a", "shape": [1], "datatype": "FP64", "data": [1]},
                {"name": "b", "shape": [1], "datatype": "FP64", "data": [1]},
            ]
        },
        400,
        "inputs[0].name: 'a' is not a feature",
    ),
    ("bad id", INFER, tensor([[1.0, 2.0]], id="a b\n"), 400, "id: expected up to 128 characters"),
    (
        "unknown model",
        "/v2/models/demo.nope/infer",
        tensor([[1.0, 2.0]]),
        404,
        "model demo.nope: not served here (served: demo/tiny)",
    ),
    (
        "model without namespace",
        "/v2/models/tiny/infer",
        tensor([[1.0, 2.0]]),
        404,
        "model 'tiny': expected <namespace>.<name>",
    ),
    (
        "unknown version",
        "/v2/models/demo.tiny/versions/7/infer",
        tensor([[1.0, 2.0]]),
        404,
        "demo/tiny has no version 7",
    ),
    (
        "version not a number",
        "/v2/models/demo.tiny/versions/x/infer",
        tensor([[1.0, 2.0]]),
        400,
        "version: expected a version number",
    ),
    ("body over the limit", INFER, b"[" + b"1," * 40_000 + b"1]", 413, "the body is over 65536 bytes"),
]


@pytest.mark.parametrize(("path", "body", "status", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
async def test_bad_input_is_a_4xx_error_body_and_the_server_keeps_serving(
    client: TestClient[Any, Any], path: str, body: bytes | dict[str, Any], status: int, message: str
) -> None:
    if isinstance(body, bytes):
        response = await client.post(path, data=body, headers={"Content-Type": "application/json"})
    else:
        response = await client.post(path, json=body)
    assert response.status == status
    error = await response.json()
    assert list(error) == ["error"] and error["error"].startswith(message), error
    assert (await client.post(INFER, json=tensor(ROWS[:1]))).status == 200


async def test_metrics_count_requests_rows_latency_and_the_served_version(client: TestClient[Any, Any]) -> None:
    assert (await client.post(INFER, json=tensor(ROWS))).status == 200
    assert (await client.post(INFER, json=tensor(ROWS[:2]))).status == 200
    assert (await client.post(INFER, json=tensor([[1.0, 2.0, 3.0]]))).status == 400
    text = await (await client.get("/metrics")).text()
    assert 'qmlops_serving_requests_total{code="200",model="demo/tiny"} 2.0' in text
    assert 'qmlops_serving_requests_total{code="400",model="demo/tiny"} 1.0' in text
    assert 'qmlops_serving_rows_total{model="demo/tiny"} 7.0' in text
    assert 'qmlops_serving_request_seconds_count{model="demo/tiny"} 2.0' in text
    assert 'qmlops_serving_version{model="demo/tiny"} 2.0' in text


async def test_feedback_makes_live_accuracy_of_the_champion(client: TestClient[Any, Any], work: Path) -> None:
    predicted = [str(x) for x in artifact(work, 2).predict(np.array(ROWS[:4]))]
    assert (await client.post(INFER, json=tensor(ROWS[:4], id="a"))).status == 200
    assert (await client.post(INFER, json=tensor(ROWS[:2], id="b"))).status == 200
    flipped = {"0": "1", "1": "0"}
    truth = predicted[:2] + [flipped[x] for x in predicted[2:]]  # two of four right
    response = await client.post("/v2/models/demo.tiny/feedback", json={"feedback": [{"id": "a", "labels": truth}]})
    assert response.status == 200, await response.text()
    assert (await response.json())["labelled"] == 4
    live = LiveAccuracy.from_json(await (await client.get("/v2/models/demo.tiny/live")).json())
    assert (live.model, live.version, live.labelled, live.correct, live.accuracy) == ("demo/tiny", 2, 4, 2, 0.5)
    assert 'qmlops_serving_live_accuracy{model="demo/tiny"} 0.5' in await (await client.get("/metrics")).text()
    again = await client.post("/v2/models/demo.tiny/feedback", json={"feedback": [{"id": "a", "labels": truth}]})
    assert again.status == 404, "a request is labelled once"
    short = await client.post("/v2/models/demo.tiny/feedback", json={"feedback": [{"id": "b", "labels": ["0"]}]})
    assert (short.status, (await short.json())["error"]) == (
        400,
        "feedback[0].labels: 1 labels for a request of 2 rows",
    )
    unknown = await client.post("/v2/models/demo.tiny/feedback", json={"feedback": [{"id": "zzz", "labels": ["0"]}]})
    assert unknown.status == 404


async def test_the_prediction_log_keeps_a_digest_of_the_inputs_not_the_inputs(
    client: TestClient[Any, Any], tmp_path: Path
) -> None:
    assert (await client.post(INFER, json=tensor([[1.2345678, 0.2]], id="logged"))).status == 200
    [line] = (tmp_path / "predictions.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert (record["id"], record["model"], record["version"], record["rows"]) == ("logged", "demo/tiny", 2, 1)
    assert record["inputsDigest"].startswith("sha256:") and "inputs" not in record
    assert "1.2345678" not in line


async def test_a_named_model_without_champion_keeps_the_server_unready_and_answers_503(work: Path) -> None:
    server = Server(ServeConfig(repo=str(work), models=[("demo", "tiny"), ("demo", "later")], prediction_log=None))
    async with TestClient(TestServer(server.app(), host="127.0.0.1")) as client:
        ready = await client.get("/v2/health/ready")
        assert (ready.status, await ready.json()) == (503, {"ready": False})
        assert (await client.get("/v2/models/demo.later/ready")).status == 503
        missing = await client.post("/v2/models/demo.later/infer", json=tensor(ROWS[:1]))
        assert (missing.status, await missing.json()) == (
            503,
            {"error": "demo/later has no champion to serve: demo/later is not in the registry"},
        )
        assert (await client.post(INFER, json=tensor(ROWS[:1]))).status == 200, "the other model is served"
