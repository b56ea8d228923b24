"""Limits from the machine, refused at validation with a located error: a simulation's memory and a
device's qubits, a dataset file's rows and bytes, the shots of a whole training, a training's timeout
and its estimated QPU time against the budget. The webhook runs the same validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.api import devices, limits
from controller.engine.validation import validate_object
from tests.api.specs import DELETE, changed, model, pipeline, to_yaml
from tests.validation.cli import qmlops, write

BASE = model()  # DESIGN's example: local:aer, 4 qubits, builtin:iris classes [0, 1], COBYLA 100 iterations


def with_(*changes: tuple[str, Any]) -> dict[str, Any]:
    obj = BASE
    for path, value in changes:
        obj = changed(obj, path, value)
    return obj


def line_of(text: str, needle: str) -> int:
    return 1 + text.splitlines().index(needle)


def messages(obj: dict[str, Any]) -> list[str]:
    """What the webhook answers: ``field.path: message`` for each problem of the object."""
    return [f"{p.path}: {p.message}" for p in validate_object(obj, "team-quantum/iris-vqc")]


# --- qubits: the simulator's memory, the device's own count -----------------------------------------------


def test_26_qubits_on_the_statevector_simulator_are_refused_at_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = to_yaml(with_(("spec.circuit.qubits", 26), ("spec.training.backend", "local:statevector")))
    spec = write(tmp_path, "m.yaml", text)
    result = qmlops(capsys, "validate", str(spec))
    assert result.code == 1
    assert result.lines == [
        f"{spec}:{line_of(text, '    qubits: 26')}:13: spec.circuit.qubits: 26 qubits need 4.0 GiB on "
        "local:statevector (2^26 amplitudes x 16 bytes x 4 copies), over the memory limit of 2.0 GiB "
        "($QMLOPS_MEMORY_LIMIT): at most 25 qubits"
    ]
    fits = to_yaml(with_(("spec.circuit.qubits", 25), ("spec.training.backend", "local:statevector")))
    assert qmlops(capsys, "validate", str(write(tmp_path, "ok.yaml", fits))).code == 0


def test_aer_and_the_fake_backends_it_simulates_have_their_own_ceiling() -> None:
    assert messages(with_(("spec.circuit.qubits", 26))) == []
    assert messages(with_(("spec.circuit.qubits", 27))) == [
        "spec.circuit.qubits: 27 qubits need 4.0 GiB on Aer's statevector method (2^27 amplitudes x 16 bytes "
        "x 2 copies), over the memory limit of 2.0 GiB ($QMLOPS_MEMORY_LIMIT): at most 26 qubits"
    ]
    kyiv = with_(("spec.circuit.qubits", 30), ("spec.training.backend", "fake:kyiv"))
    assert messages(kyiv) == [
        "spec.circuit.qubits: fake:kyiv is simulated by Aer: 30 qubits need 32.0 GiB on Aer's statevector "
        "method (2^30 amplitudes x 16 bytes x 2 copies), over the memory limit of 2.0 GiB "
        "($QMLOPS_MEMORY_LIMIT): at most 26 qubits"
    ]


def test_the_memory_limit_is_the_machines_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(limits.MEMORY_LIMIT_ENV, "512Mi")
    on_statevector = ("spec.training.backend", "local:statevector")
    assert messages(with_(("spec.circuit.qubits", 23), on_statevector)) == []
    [refused] = messages(with_(("spec.circuit.qubits", 24), on_statevector))
    assert refused.endswith("over the memory limit of 512.0 MiB ($QMLOPS_MEMORY_LIMIT): at most 23 qubits")
    monkeypatch.setenv(limits.MEMORY_LIMIT_ENV, "64Gi")
    assert messages(with_(("spec.circuit.qubits", 26), on_statevector)) == []
    monkeypatch.setenv(limits.MEMORY_LIMIT_ENV, "plenty")  # not a quantity: the default applies
    assert limits.memory_limit() == limits.DEFAULT_MEMORY_LIMIT


def test_a_fake_device_runs_no_more_qubits_than_it_has(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = to_yaml(with_(("spec.circuit.qubits", 6), ("spec.training.backend", "fake:manila")))
    spec = write(tmp_path, "m.yaml", text)
    result = qmlops(capsys, "validate", str(spec))
    assert result.lines == [
        f"{spec}:{line_of(text, '    qubits: 6')}:13: spec.circuit.qubits: fake:manila has 5 qubits; circuit.qubits is 6"
    ]
    assert messages(with_(("spec.circuit.qubits", 5), ("spec.training.backend", "fake:manila"))) == []


@pytest.mark.parametrize("device", ["manila", "lima", "kyiv", "torino", "fez", "melbourne", "armonk"])
def test_the_snapshot_read_agrees_with_the_fake_provider(device: str) -> None:
    from controller.engine.training.backends import RuntimeFactory

    backend = RuntimeFactory().fake_backend(device)  # the device a fake: training runs on
    assert devices.fake_device_qubits(device) == backend.num_qubits


def test_ibm_devices_are_not_known_offline() -> None:
    spec = with_(
        ("spec.circuit.qubits", 150),
        ("spec.training.backend", "ibm:ibm_kyiv"),
        ("spec.training.credentialsSecret", "ibm-quantum"),
        ("spec.governance.allowedBackends", ["ibm:*"]),
        ("spec.dataset.reduce", {"components": 4}),
    )
    assert not [m for m in messages(spec) if m.startswith("spec.circuit.qubits")]


# --- the shots of a whole training ----------------------------------------------------------------------------


def test_100000_iterations_of_10_million_shots_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    huge = with_(
        ("spec.training.optimizer", {"kind": "COBYLA", "maxIterations": 100000}),
        ("spec.training.shots", 10_000_000),
        ("spec.governance.maxShots", DELETE),
    )
    text = to_yaml(huge)
    spec = write(tmp_path, "m.yaml", text)
    result = qmlops(capsys, "validate", str(spec))
    assert result.code == 1
    assert result.lines == [
        f"{spec}:{line_of(text, '  training:')}:3: spec.training: the training would take 80,000,200,000,000 "
        "shots (100,000 points in 100,000 iterations x 80 training samples + 20 test samples) x 10,000,000 shots, "
        "over the 10,000,000,000 one training may take: lower training.optimizer.maxIterations or training.shots"
    ]
    assert messages(huge) == [line.split(": ", 1)[1] for line in result.lines]


def test_the_exact_simulator_takes_no_shots_to_bound() -> None:
    exact = with_(
        ("spec.training.backend", "local:statevector"),
        ("spec.training.optimizer", {"kind": "COBYLA", "maxIterations": 100000}),
        ("spec.training.shots", 10_000_000),
        ("spec.governance.maxShots", DELETE),
    )
    assert messages(exact) == []


# --- the QPU budget ----------------------------------------------------------------------------------------------

IBM = (
    ("spec.training.backend", "ibm:ibm_kyiv"),
    ("spec.training.credentialsSecret", "ibm-quantum"),
    ("spec.governance.allowedBackends", ["local:*", "ibm:*"]),
)


def test_a_training_estimated_over_the_qpu_budget_is_refused_with_its_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = to_yaml(with_(*IBM))  # qpuBudgetSeconds: 600
    spec = write(tmp_path, "m.yaml", text)
    result = qmlops(capsys, "validate", str(spec))
    assert result.code == 1
    assert result.lines == [
        f"{spec}:{line_of(text, '  training:')}:3: spec.training: blocked by governance rule qpu-estimate: "
        "governance.qpuBudgetSeconds: 600 s per 30 days; the training is estimated at 2,053.1 s of QPU time: "
        "8,212,480 shots (100 points in 100 iterations x 80 training samples + 20 test samples) x 1,024 shots "
        "at 250 µs a shot"
    ]
    audited = to_yaml(with_(*IBM, ("spec.governance.enforcement", "audit")))
    result = qmlops(capsys, "validate", str(write(tmp_path, "audit.yaml", audited)))
    assert result.code == 0 and "warning: governance rule qpu-estimate (audit)" in result.out
    # 20 iterations: (20 x 80 + 20) x 1024 shots x 250 µs = 414.7 s, within 600
    fits = with_(*IBM, ("spec.training.optimizer", {"kind": "COBYLA", "maxIterations": 20}))
    assert messages(fits) == []


def test_the_estimate_counts_each_optimizers_points() -> None:
    from controller.api import QuantumModel

    def points(optimizer: dict[str, Any]) -> int:
        spec = QuantumModel.model_validate(with_(("spec.training.optimizer", optimizer))).spec
        return limits.estimate(spec).points

    assert points({"kind": "COBYLA", "maxIterations": 10}) == 10
    assert points({"kind": "NelderMead", "maxIterations": 10}) == 10
    assert points({"kind": "SPSA", "maxIterations": 10}) == 9 * 3 + 11  # the first job calibrates
    assert points({"kind": "SPSA", "maxIterations": 10, "learningRate": 0.1}) == 30
    # RealAmplitudes, 4 qubits, reps 2: 12 weights, so 25 points a gradient
    assert points({"kind": "Adam", "maxIterations": 10}) == 250
    assert points({"kind": "L_BFGS_B", "maxIterations": 10}) == 250


# --- the dataset file ---------------------------------------------------------------------------------------------


def file_model(tmp_path: Path, rows: int, columns: int = 2, tail: bytes = b"") -> tuple[Path, str]:
    """A spec whose dataset is ``data/big.csv`` in a repository at ``tmp_path``: ``rows`` data rows of
    ``columns`` columns (the last the label), each row carrying a value that must never be quoted."""
    (tmp_path / ".git").mkdir(exist_ok=True)
    header = ",".join(f"f{i}" for i in range(columns - 1)) + ",label\n"
    row = ",".join(["7"] * (columns - 2) + ["SECRETVALUE"]) + ",1\n"
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "big.csv").write_bytes((header + row * rows).encode() + tail)
    obj = with_(
        ("spec.dataset", {"source": "file:data/big.csv", "target": "label", "features": ["f0"]}),
        ("spec.circuit.qubits", 2),
    )
    text = to_yaml(obj)
    return write(tmp_path, "specs/m.yaml", text), text


def test_two_million_rows_are_refused_at_the_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec, text = file_model(tmp_path, 2_000_000)
    result = qmlops(capsys, "validate", str(spec))
    assert result.code == 1
    assert result.lines == [
        f"{spec}:{line_of(text, '    source: file:data/big.csv')}:13: spec.dataset.source: "
        "file:data/big.csv has more than 100,000 data rows, the limit"
    ]
    assert "SECRETVALUE" not in result.out + result.err


def test_the_reader_stops_at_the_bound_before_the_rest_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # bytes that are not UTF-8 after the bound: a reader that read the whole file first would report those
    spec, _ = file_model(tmp_path, limits.MAX_DATASET_ROWS + 10_000, tail=b"\xff\xfe,\xff\n")
    assert (
        qmlops(capsys, "validate", str(spec))
        .lines[0]
        .endswith("spec.dataset.source: file:data/big.csv has more than 100,000 data rows, the limit")
    )
    spec, _ = file_model(tmp_path, limits.MAX_DATASET_ROWS)
    assert qmlops(capsys, "validate", str(spec)).code == 0


def test_wide_rows_are_bounded_by_their_memory_estimate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 200 columns: 256 MiB / (200 x 8 bytes x 32) = 5,242 rows
    spec, _ = file_model(tmp_path, 6_000, columns=200)
    result = qmlops(capsys, "validate", str(spec))
    assert result.lines[0].endswith(
        "spec.dataset.source: file:data/big.csv has more than 5,242 data rows of 200 columns: loading them needs "
        "more than 256.0 MiB (rows x columns x 8 bytes x 32), the limit"
    )
    spec, _ = file_model(tmp_path, 5_242, columns=200)
    assert qmlops(capsys, "validate", str(spec)).code == 0


def test_a_file_is_read_no_further_than_its_byte_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "MAX_DATASET_BYTES", 4096)
    spec, _ = file_model(tmp_path, 1_000)
    assert (
        qmlops(capsys, "validate", str(spec))
        .lines[0]
        .endswith("spec.dataset.source: file:data/big.csv is larger than 4.0 KiB, the limit for a dataset file")
    )


# --- the timeout --------------------------------------------------------------------------------------------------


def test_a_timeout_has_a_default_and_bounds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from controller.api import QuantumModel

    assert QuantumModel.model_validate(BASE).spec.training.timeout == "6h"
    text = to_yaml(with_(("spec.training.timeout", "200h")))
    spec = write(tmp_path, "m.yaml", text)
    assert qmlops(capsys, "validate", str(spec)).lines == [
        f"{spec}:{line_of(text, '    timeout: 200h')}:14: spec.training.timeout: 200h is not between 1s and "
        "168h (7 days)"
    ]
    assert messages(with_(("spec.training.timeout", "0s"))) == [
        "spec.training.timeout: 0s is not between 1s and 168h (7 days)"
    ]
    assert messages(with_(("spec.training.timeout", "soon"))) == [
        "spec.training.timeout: 'soon' is not a valid duration (like 30m, 6h, 1h30m)"
    ]
    assert messages(with_(("spec.training.timeout", "1h30m"))) == []


# --- pipelines: their model elsewhere and otherwise ---------------------------------------------------------------


def test_a_pipeline_runs_its_model_only_where_it_fits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, "m.yaml", to_yaml(with_(("spec.circuit.qubits", 6), ("spec.dataset.features", ["a"]))))
    pipe = changed(pipeline(), "spec.steps.0.train.matrix", {"circuit.qubits": [6, 27], "training.shots": [1024]})
    text = to_yaml(pipe)
    spec = write(tmp_path, "p.yaml", text)
    result = qmlops(capsys, "validate", str(tmp_path))
    assert result.code == 1
    lines = text.splitlines()
    manila = [n + 1 for n, line in enumerate(lines) if line.strip() in ("- fake:manila", "backend: fake:manila")]
    assert result.lines == [
        f"{spec}:{1 + lines.index('        - 27')}:11: spec.steps[0].train.matrix[circuit.qubits][1]: 27 qubits "
        "need 4.0 GiB on Aer's statevector method (2^27 amplitudes x 16 bytes x 2 copies), over the memory limit "
        "of 2.0 GiB ($QMLOPS_MEMORY_LIMIT): at most 26 qubits",
        f"{spec}:{manila[0]}:9: spec.steps[1].evaluate.backends[0]: the model's circuit.qubits on fake:manila: "
        "fake:manila has 5 qubits; circuit.qubits is 6",
        f"{spec}:{manila[1]}:16: spec.triggers[2].drift.backend: the model's circuit.qubits on fake:manila: "
        "fake:manila has 5 qubits; circuit.qubits is 6",
    ]
