"""``qmlops train``: a spec file trained end to end through the command, on the exact simulator."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from controller.cli import train as train_command
from controller.engine.training import ModelArtifact
from controller.engine.training.checkpoint import summary
from tests.validation.cli import qmlops, write

pytestmark = pytest.mark.slow

ITERATIONS = 6

TINY = """\
apiVersion: qmlops.io/v1alpha1
kind: QuantumModel
metadata:
  name: {name}
  namespace: team
spec:
  owner: alice@example.com
  dataset:
{dataset}
  circuit:
    qubits: 2
    featureMap: {{kind: ZFeatureMap, reps: 1}}
    ansatz: {{kind: RealAmplitudes, reps: 1}}
  training:
    backend: {backend}
    shots: 128
    optimizer: {{kind: COBYLA, maxIterations: {iterations}}}
    seed: 7{training}
  governance:
    allowedBackends: ["local:*", "ibm:*"]
"""
IRIS = """\
    source: builtin:iris
    features: [petal_length, petal_width]
    classes: [0, 1]
    seed: 42"""


def spec(
    name: str = "tiny",
    dataset: str = IRIS,
    backend: str = "local:statevector",
    iterations: int = ITERATIONS,
    training: str = "",
) -> str:
    return TINY.format(name=name, dataset=dataset, backend=backend, iterations=iterations, training=training)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A work tree (``file:`` datasets are read from the Git work tree holding the spec, as validate does)."""
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def artifact_at(path: Path) -> ModelArtifact:
    return ModelArtifact.from_json(path.read_bytes())


def test_trains_a_spec_and_writes_its_artifact(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo, "specs/tiny.yaml", spec())
    result = qmlops(capsys, "train", "specs/tiny.yaml")
    assert result.code == 0, result.err
    path = Path("out/team/tiny/artifact.json")
    artifact = artifact_at(repo / path)
    usage = artifact.manifest["usage"]
    assert usage["iterations"] == ITERATIONS
    assert usage["primitiveJobs"] == ITERATIONS + 1  # one job per iteration, one for the test split
    assert usage["resumes"] == 0
    assert artifact.manifest["lineage"]["backend"] == "local:statevector"
    assert 0.0 <= artifact.metrics["accuracy"] <= 1.0
    assert f"team/tiny: artifact {path} ({artifact.digest})" in result.out
    assert f"accuracy {artifact.metrics['accuracy']:.4f}" in result.out
    assert f"{ITERATIONS} iterations, {ITERATIONS + 1} primitive jobs" in result.out
    # not a terminal: plain progress lines, the first and the last iteration at least
    assert f"team/tiny: iteration 1/{ITERATIONS}" in result.err
    assert f"team/tiny: iteration {ITERATIONS}/{ITERATIONS}" in result.err
    assert (repo / "out/team/tiny/checkpoint/journal.jsonl").is_file()
    assert "Traceback" not in result.err


def test_a_rerun_of_a_finished_training_replays_it_and_fresh_trains_again(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(repo, "tiny.yaml", spec(iterations=3))
    first = qmlops(capsys, "train", "tiny.yaml", "--output", "models")
    assert first.code == 0, first.err
    weights = artifact_at(repo / "models/team/tiny/artifact.json").weights
    again = qmlops(capsys, "train", "tiny.yaml", "--output", "models")
    assert again.code == 0, again.err
    assert "every job replayed from models/team/tiny/checkpoint, none run" in again.out
    replayed = artifact_at(repo / "models/team/tiny/artifact.json")
    assert replayed.weights == weights and replayed.manifest["usage"]["resumes"] == 1
    fresh = qmlops(capsys, "train", "tiny.yaml", "--output", "models", "--fresh")
    assert fresh.code == 0, fresh.err
    retrained = artifact_at(repo / "models/team/tiny/artifact.json")
    assert retrained.manifest["usage"]["resumes"] == 0 and retrained.weights == weights


def test_a_bad_spec_gets_the_problems_validate_reports(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo, "bad.yaml", spec(iterations=0).replace("shots: 128", "shots: 128\n    shots_per_job: 5"))
    validated = qmlops(capsys, "validate", "bad.yaml")
    result = qmlops(capsys, "train", "bad.yaml")
    assert result.code == validated.code == 1
    problems = [line for line in result.err.splitlines() if line.startswith("bad.yaml:")]
    assert problems == validated.lines
    assert any("spec.training.optimizer.maxIterations: must be at least 1" in p for p in problems)
    assert any("unknown field 'shots_per_job'" in p for p in problems)
    assert "nothing was trained" in result.err
    assert not (repo / "out").exists()
    assert "Traceback" not in result.err


def test_unusable_input_exits_2(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo, "tabs.yaml", "apiVersion: qmlops.io/v1alpha1\nkind: QuantumModel\nspec:\n\towner: a\n")
    result = qmlops(capsys, "train", "tabs.yaml")
    assert result.code == 2
    assert result.err.startswith("tabs.yaml:4:1: tab character used for indentation")
    missing = qmlops(capsys, "train", "nowhere.yaml")
    assert missing.code == 2 and "nowhere.yaml:1:1: no such file or directory" in missing.err


def test_governance_blocks_like_validate(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo, "blocked.yaml", spec().replace('["local:*", "ibm:*"]', '["fake:*"]'))
    result = qmlops(capsys, "train", "blocked.yaml")
    assert result.code == 1
    assert "blocked.yaml:" in result.err and "blocked by governance rule" in result.err
    assert not (repo / "out").exists()


def test_a_missing_target_column_is_a_spec_problem(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo, "data/readings.csv", "a,b,label\n1,2,0\n")
    dataset = "    source: file:data/readings.csv\n    target: fault"
    write(repo, "model.yaml", spec(dataset=dataset))
    result = qmlops(capsys, "train", "model.yaml")
    assert result.code == 1
    assert "model.yaml:10:13: spec.dataset.target: data/readings.csv has no column 'fault'" in result.err


def test_a_training_error_is_one_line(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = "".join(f"{i % 7},{(i * 3) % 5},{i % 2}\n" for i in range(20))
    write(repo, "data/readings.csv", "a,b,fault\n" + rows + "4,n/a,1\n")
    dataset = "    source: file:data/readings.csv\n    target: fault"
    write(repo, "model.yaml", spec(dataset=dataset))
    result = qmlops(capsys, "train", "model.yaml")
    assert result.code == 1
    failure = [line for line in result.err.splitlines() if line.startswith("qmlops train:")]
    assert failure == [
        "qmlops train: team/tiny: dataset.features: file:data/readings.csv:22: column 'b' is not numeric"
    ]
    assert "Traceback" not in result.err
    assert not (repo / "out/team/tiny/artifact.json").exists()


def test_ibm_credentials_missing_is_one_line(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QMLOPS_CREDENTIALS_DIR", str(repo / "secrets"))
    monkeypatch.delenv("QMLOPS_IBM_TOKEN", raising=False)
    text = spec(backend="ibm:least-busy", training="\n    credentialsSecret: ibm-quantum")
    write(repo, "ibm.yaml", text + "    qpuBudgetSeconds: 60\n")
    result = qmlops(capsys, "train", "ibm.yaml")
    assert result.code == 1
    failure = [line for line in result.err.splitlines() if line.startswith("qmlops train:")]
    assert len(failure) == 1
    assert failure[0].startswith("qmlops train: team/tiny: credentials team/ibm-quantum: not found in ")


def test_stop_after_an_iteration_then_resume(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real SIGINT through the command's handler, sent when iteration 2 is shown: the training stops
    before iteration 3 (exit 130, checkpoint kept); the same command resumes and ends where an
    uninterrupted training ends."""
    write(repo, "tiny.yaml", spec())
    update = train_command.Bar.update
    handler = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite runs as a background job

    def interrupted(bar: train_command.Bar, progress: object) -> None:
        update(bar, progress)  # type: ignore[arg-type]
        if getattr(progress, "iteration", 0) == 2:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(train_command.Bar, "update", interrupted)
    stopped = qmlops(capsys, "train", "tiny.yaml", "--checkpoint", "ck")
    monkeypatch.setattr(train_command.Bar, "update", update)
    assert stopped.code == 130, stopped.err
    assert "stopping after the current iteration" in stopped.err
    assert "team/tiny: stopped before iteration 3; the checkpoint is kept" in stopped.err
    assert "checkpoint kept in ck/team/tiny; run the same command again to resume" in stopped.err
    assert not (repo / "out/team/tiny/artifact.json").exists()
    journal = summary(repo / "ck/team/tiny") or {}
    assert journal["iteration"] == 2
    assert signal.getsignal(signal.SIGINT) is handler  # the handler is put back

    resumed = qmlops(capsys, "train", "tiny.yaml", "--checkpoint", "ck")
    assert resumed.code == 0, resumed.err
    assert "team/tiny: resumed from the checkpoint at iteration 2" in resumed.err
    artifact = artifact_at(repo / "out/team/tiny/artifact.json")
    assert artifact.manifest["usage"]["resumes"] == 1
    assert artifact.manifest["lineage"]["run"] == journal["run"]

    whole = qmlops(capsys, "train", "tiny.yaml", "--output", "whole")
    assert whole.code == 0, whole.err
    uninterrupted = artifact_at(repo / "whole/team/tiny/artifact.json")
    assert artifact.weights == uninterrupted.weights
    assert artifact.metrics == uninterrupted.metrics
    assert artifact.manifest["usage"]["primitiveJobs"] == uninterrupted.manifest["usage"]["primitiveJobs"]


def test_every_model_of_a_file_is_trained(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pipeline = """\
apiVersion: qmlops.io/v1alpha1
kind: QuantumPipeline
metadata: {name: nightly, namespace: team}
spec:
  model: one
  steps:
    - name: sweep
      train: {}
"""
    text = "\n---\n".join([spec("one", iterations=2), spec("two", iterations=2), pipeline])
    write(repo, "all.yaml", text)
    result = qmlops(capsys, "train", "all.yaml")
    assert result.code == 0, result.err
    assert "1 QuantumPipeline(s) skipped" in result.err
    for name in ("one", "two"):
        assert artifact_at(repo / f"out/team/{name}/artifact.json").manifest["usage"]["iterations"] == 2


def test_a_file_with_no_model(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo, "other.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    result = qmlops(capsys, "train", "other.yaml")
    assert result.code == 2
    assert "qmlops train: other.yaml: no QuantumModel to train" in result.err
