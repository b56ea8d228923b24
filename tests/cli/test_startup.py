"""What a ``qmlops`` process loads: ``validate``, run on every pull request, imports no Qiskit Runtime, Qiskit,
SciPy, scikit-learn or kopf unless a spec needs them; fake devices are known from their snapshot files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from controller.api import devices
from controller.cli.main import COMMANDS, chosen_command, main

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("qiskit_ibm_runtime", "qiskit", "qiskit_aer", "scipy", "sklearn", "kopf", "kubernetes")

PROBE = """
import contextlib, io, json, sys
from controller.cli.main import main
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
    code = main(sys.argv[2:])
print(json.dumps({"code": code, "out": out.getvalue(), "loaded": [m for m in json.loads(sys.argv[1]) if m in sys.modules]}))
"""


def run_in_fresh_process(*args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(HEAVY), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_validating_the_demo_specs_imports_no_qiskit_runtime_even_for_a_fake_device() -> None:
    assert "backend: fake:manila" in (REPO / "specs" / "iris" / "iris-petals-manila.yaml").read_text()
    result = run_in_fresh_process(
        "validate", "specs/", "examples/iris-local-aer.yaml", "examples/pipeline-nightly.yaml"
    )
    assert result["code"] == 0
    assert result["loaded"] == []


def test_a_misspelt_fake_device_is_still_refused_with_a_suggestion_without_importing_qiskit(tmp_path: Path) -> None:
    spec = (REPO / "specs" / "iris" / "iris-petals-manila.yaml").read_text().replace("fake:manila", "fake:manilla")
    (tmp_path / "model.yaml").write_text(spec)
    result = run_in_fresh_process("validate", str(tmp_path / "model.yaml"))
    assert result["code"] == 1
    assert "has no device 'manilla' (did you mean fake:manhattan, fake:manila?)" in str(result["out"])
    assert result["loaded"] == []


def test_the_fake_devices_read_from_the_snapshot_files_are_the_ones_the_provider_offers() -> None:
    assert devices.snapshot_folder() is not None
    from_files = devices.fake_devices()
    assert {"manila", "kyiv", "torino"} <= set(from_files)
    assert from_files == devices._imported_fake_devices()


@pytest.mark.parametrize("device", ["manila", "kyiv", "fez"])
def test_a_fake_devices_qubit_count_is_the_backends_own(device: str) -> None:
    from qiskit_ibm_runtime import fake_provider

    backend_class = getattr(fake_provider, f"Fake{device.capitalize()}V2", None) or getattr(
        fake_provider, f"Fake{device.capitalize()}"
    )
    assert devices.fake_device_qubits(device) == backend_class().num_qubits


def test_a_device_without_a_snapshot_has_no_qubit_count() -> None:
    assert devices.fake_device_qubits("nowhere") is None
    assert devices.fake_device_qubits("fractional") is None  # a test backend of the provider, not a device


def test_only_the_command_being_run_is_loaded_and_help_still_lists_them_all(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert chosen_command(["validate", "specs/"]) == "validate"
    assert chosen_command(["--help"]) is None
    assert chosen_command(["valdate"]) is None  # argparse then names the choices
    with pytest.raises(SystemExit):
        main(["--help"])
    listed = capsys.readouterr().out
    assert all(name in listed for name in COMMANDS)
    with pytest.raises(SystemExit) as exited:
        main(["valdate"])
    assert exited.value.code == 2
    assert "invalid choice: 'valdate'" in capsys.readouterr().err
