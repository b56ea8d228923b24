"""Checkpoints: a training process killed at an iteration the test picks resumes in a new process
without paying again for what it had done and ends on the very weights of an uninterrupted run;
``should_stop`` stops it the same way, and ``train`` resumes it."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controller.engine import training
from controller.engine.training import backends
from controller.engine.training.checkpoint import summary
from tests.training.conftest import Calls
from tests.training.specs import optimizer, spec

pytestmark = pytest.mark.slow

Spy = Callable[[Any, str], Calls]
ROOT = Path(__file__).resolve().parents[2]
ITERATIONS = 30
SECTIONS = {"dataset": {"testFraction": 0.8}, "training": optimizer("SPSA", ITERATIONS)}

CHILD = """\
import json, sys
from pathlib import Path

from controller.engine.training import backends, train
from tests.training.specs import spec

sections, jobs, checkpoint, out = json.loads(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
real = backends.StatevectorTarget.run


def run(self, *args, **kwargs):
    with jobs.open("a") as log:  # counted from outside, before the job starts
        log.write("job\\n")
    return real(self, *args, **kwargs)


backends.StatevectorTarget.run = run
out.write_bytes(train(spec(**sections), checkpoint_dir=checkpoint).to_json())
"""


def child(tmp_path: Path, jobs: Path, checkpoint: Path, out: Path) -> subprocess.Popen[bytes]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, str(script), json.dumps(SECTIONS), str(jobs), str(checkpoint), str(out)]
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def iteration(checkpoint: Path) -> int:
    found = summary(checkpoint)  # a line the kill tore is dropped, as a resume drops it
    return int(found["iteration"]) if found else 0


def test_a_killed_training_process_resumes_without_paying_twice(tmp_path: Path, spy: Spy) -> None:
    runs = spy(backends.StatevectorTarget, "run")
    uninterrupted = training.train(spec(**SECTIONS))
    assert len(runs) == ITERATIONS + 1

    kill_at = random.randint(2, ITERATIONS // 2)
    jobs, checkpoint, out = tmp_path / "jobs.log", tmp_path / "checkpoint", tmp_path / "artifact.json"
    first = child(tmp_path, jobs, checkpoint, out)
    deadline = time.monotonic() + 120
    while iteration(checkpoint) < kill_at and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    assert first.poll() is None, f"the training ended before iteration {kill_at}: {first.communicate()[0].decode()}"
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = iteration(checkpoint)
    assert first.returncode == -signal.SIGKILL and not out.exists()
    assert kill_at <= killed_at < ITERATIONS, (kill_at, killed_at)

    second = child(tmp_path, jobs, checkpoint, out)
    output = second.communicate(timeout=120)[0].decode()
    assert second.returncode == 0, output
    resumed = training.ModelArtifact.from_json(out.read_bytes())

    executed = len(jobs.read_text().splitlines())
    assert executed <= len(runs) + 1, (kill_at, killed_at, executed)  # at most the job in flight is paid twice
    assert resumed.weights == uninterrupted.weights, (kill_at, killed_at)
    assert resumed.manifest["lossCurve"] == uninterrupted.manifest["lossCurve"]
    assert resumed.metrics == uninterrupted.metrics
    usage = resumed.manifest["usage"]
    assert usage["resumes"] == 1 and usage["primitiveJobs"] == ITERATIONS + 1


@pytest.mark.parametrize("kind", ["COBYLA", "SPSA", "NelderMead", "L_BFGS_B", "Adam"])
def test_should_stop_keeps_the_checkpoint_and_train_resumes(kind: str, tmp_path: Path, spy: Spy) -> None:
    s = spec(dataset={"testFraction": 0.8}, training=optimizer(kind, 6))
    runs = spy(backends.StatevectorTarget, "run")
    uninterrupted = training.train(s)
    assert len(runs) == 7
    runs.clear()

    folder = tmp_path / "checkpoint"
    seen: list[training.Progress] = []
    stop_after = 1 + len(kind) % 4  # some iteration in 1..4, per optimizer
    with pytest.raises(
        training.TrainingStopped, match=rf"^stopped before iteration {stop_after + 1}; the checkpoint is kept"
    ):
        training.train(s, checkpoint_dir=folder, on_progress=seen.append, should_stop=lambda: len(seen) >= stop_after)
    assert len(runs) == stop_after and (summary(folder) or {}).get("iteration") == stop_after
    assert not isinstance(training.TrainingStopped(), training.TrainingError)  # shells do not record it as failed

    resumed = training.train(s, checkpoint_dir=folder, on_progress=seen.append)
    assert len(runs) == 7  # nothing paid twice
    assert [p.iteration for p in seen] == list(range(1, 7))  # replayed iterations are not reported again
    assert resumed.weights == uninterrupted.weights
    assert resumed.manifest["lossCurve"] == uninterrupted.manifest["lossCurve"]
    assert resumed.manifest["lineage"]["run"] == (summary(folder) or {}).get("run")
    assert resumed.manifest["usage"]["resumes"] == 1


def test_a_checkpoint_of_another_training_is_not_resumed(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoint"
    first = training.train(spec(training=optimizer("COBYLA", 2)), checkpoint_dir=folder)
    again = training.train(spec(training=optimizer("COBYLA", 2)), checkpoint_dir=folder)
    assert again.manifest["lineage"]["run"] == first.manifest["lineage"]["run"]  # the same training: replayed
    assert again.manifest["usage"]["resumes"] == 1

    other = training.train(spec(training={**optimizer("COBYLA", 2), "seed": 9}), checkpoint_dir=folder)
    assert other.manifest["lineage"]["run"] != first.manifest["lineage"]["run"]
    assert other.manifest["usage"]["resumes"] == 0
    (folder / "journal.jsonl").write_text('{"format": "qmlops.io/checkpoint/v1", "entr')  # torn, of another version
    fresh = training.train(spec(training=optimizer("COBYLA", 2)), checkpoint_dir=folder)
    assert fresh.manifest["usage"]["resumes"] == 0 and fresh.weights == first.weights


def test_a_torn_last_line_costs_only_its_job(tmp_path: Path) -> None:
    """A crash in the middle of a journal write leaves a torn last line: the resume drops it (and
    pays once more for that one job), keeps everything before it, and appends after a clean file."""
    folder = tmp_path / "checkpoint"
    s = spec(training=optimizer("COBYLA", 6))
    uninterrupted = training.train(s)
    seen: list[training.Progress] = []
    with pytest.raises(training.TrainingStopped):
        training.train(s, checkpoint_dir=folder, on_progress=seen.append, should_stop=lambda: len(seen) >= 3)
    journal = folder / "journal.jsonl"
    journal.write_text(journal.read_text()[:-25])  # the third job's line, half written
    assert (summary(folder) or {}).get("iteration") == 2
    runs: list[int] = []
    resumed = training.train(s, checkpoint_dir=folder, on_progress=lambda p: runs.append(p.iteration))
    assert runs == [3, 4, 5, 6] and resumed.weights == uninterrupted.weights
    assert (summary(folder) or {}).get("iteration") == 6  # appended to a whole file: every line reads


def test_the_running_totals_follow_the_journal_through_truncation_and_a_resume(tmp_path: Path) -> None:
    from controller.engine.training.checkpoint import Checkpoint, Entry

    def entry(kind: str, qpu: float, shots: int) -> Entry:
        return Entry(kind, [[0.0]], [1.0], qpu_seconds=qpu, shots=shots, run_seconds=qpu / 2, wall_seconds=qpu)

    checkpoint = Checkpoint.open(tmp_path, "f")
    for k in range(5):
        checkpoint.record(entry("loss", 1.0 + k, 100), None)
    assert checkpoint.usage() == {"primitiveJobs": 5, "shots": 500, "qpuSeconds": 15.0}
    checkpoint.truncate(2)  # the optimizer went another way: the journal from the third job is gone
    checkpoint.record(entry("test", 9.0, 10), None)
    totals = checkpoint.totals
    assert (checkpoint.iteration, totals.shots, totals.qpu_seconds) == (2, 210, 12.0)
    assert (totals.dearest_qpu_seconds, totals.run_seconds, totals.wall_seconds) == (9.0, 6.0, 12.0)

    resumed = Checkpoint.open(tmp_path, "f")  # read back from the journal file
    assert resumed.usage() == checkpoint.usage() and resumed.iteration == 2
