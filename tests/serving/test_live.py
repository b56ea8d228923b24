"""Live accuracy's window and document (what monitoring reads), and the prediction log's rotation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from controller.engine.live import LabelledWindow, LiveAccuracy, LiveAccuracyError
from controller.serving.feedback import PredictionLog, inputs_digest


def test_the_window_keeps_the_latest_rows_and_counts_the_served_version_only() -> None:
    window = LabelledWindow("demo/tiny", size=4)
    window.add(1, ["a", "a"], ["a", "b"])
    window.add(2, ["a", "b", "b"], ["a", "b", "a"])
    assert window.live(2) == LiveAccuracy("demo/tiny", 2, 3, 2, 4)
    assert window.live(1).labelled == 1, "the window holds 4 rows: one of version 1 is left"
    window.add(2, [1, 0], ["1", "0"])  # labels compare as text
    live = window.live(2)
    assert (live.labelled, live.correct) == (4, 3)
    assert live.accuracy == 0.75
    assert live.drop_from(0.95) == pytest.approx(0.2)
    assert LabelledWindow("demo/tiny").live(3).accuracy is None


def test_the_live_document_round_trips_and_bad_ones_are_refused() -> None:
    live = LiveAccuracy("demo/tiny", 2, 10, 7, 1000)
    assert LiveAccuracy.from_json(json.loads(json.dumps(live.to_json()))) == live
    assert live.to_json()["accuracy"] == 0.7
    for bad, field in [
        ({**live.to_json(), "correct": 11}, "correct <= labelled"),
        ({**live.to_json(), "labelled": -1}, "labelled"),
        ({**live.to_json(), "version": "2"}, "version"),
        ({**live.to_json(), "model": None}, "model"),
        ([], "expected an object"),
    ]:
        with pytest.raises(LiveAccuracyError, match=field):
            LiveAccuracy.from_json(bad)


def test_the_prediction_log_rotates_and_keeps_a_bounded_number_of_files(tmp_path: Path) -> None:
    path = tmp_path / "predictions.jsonl"
    log = PredictionLog(path, max_bytes=600, backups=2)
    rows = np.array([[1.5, 0.25]])
    for n in range(20):
        log.write(request=f"r{n}", model="demo/tiny", version=1, rows=rows, labels=["0"])
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["predictions.jsonl", "predictions.jsonl.1", "predictions.jsonl.2"]
    assert all(p.stat().st_size <= 600 for p in tmp_path.iterdir())
    last = json.loads(path.read_text().splitlines()[-1])
    assert last["id"] == "r19" and last["inputsDigest"] == inputs_digest(rows) and "inputs" not in last
    assert "1.5" not in path.read_text()
    PredictionLog(path, inputs=True).write(request="x", model="demo/tiny", version=1, rows=rows, labels=["0"])
    assert json.loads(path.read_text().splitlines()[-1])["inputs"] == [[1.5, 0.25]], "raw inputs only when asked"
