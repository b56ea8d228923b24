"""The checks one by one: data drift against the training summary, faults reported as not run (never
as no drift), an ibm: device's calibration fetched at most once per period."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from controller.cli.main import main
from controller.engine.monitoring import CalibrationSource, CheckKind, SourceUnavailable, Verdict
from controller.engine.monitoring.checks import Context, run_checks
from controller.engine.registry import Registry
from controller.engine.registry.versions import Version
from controller.engine.training import summary
from tests.monitoring.world import World
from tests.registry.repos import git
from tests.training.specs import tiny
from tests.training.standin import StandInFactory, credentials_source, installed

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def test_a_large_file_resampled_does_not_alarm_and_a_shifted_feature_does() -> None:
    rng = np.random.default_rng(3)
    trained = rng.normal(0.0, 1.0, size=(20_000, 2))
    recorded = summary.summarize(trained, ["a", "b"])
    same = rng.normal(0.0, 1.0, size=(20_000, 2))
    quiet = summary.compare(recorded, same, ["a", "b"], p_value=0.01, min_effect=0.1)
    assert not any(d.moved for d in quiet)
    assert all(d.statistic < 0.1 for d in quiet)  # what the floor is for: a gap this size is noise at 20 000 rows
    shifted = np.column_stack([same[:, 0] + 0.6, same[:, 1]])
    moved = summary.compare(recorded, shifted, ["a", "b"], p_value=0.01, min_effect=0.1)
    assert [d.feature for d in moved if d.moved] == ["a"]
    assert moved[0].p_value < 1e-10 and moved[0].statistic > 0.2
    assert moved[0].median_after - moved[0].median_before == pytest.approx(0.6, abs=0.05)
    # the same figures without the floor: noise at this size would alarm on p alone
    assert min(d.p_value for d in quiet) < 0.5


def trained_world(tmp_path: Path) -> World:
    world = World.create(tmp_path)
    world.reconcile()
    return world


def test_changed_data_names_the_features_that_moved_and_faults_are_not_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = trained_world(tmp_path)
    csv = world.work / "data/iris01.csv"
    lines = csv.read_text().splitlines()
    shifted = [lines[0]]
    for line in lines[1:]:
        ident, length, width, species = line.split(",")
        shifted.append(f"{ident},{float(length) + 3.0},{width},{species}")
    csv.write_text("\n".join(shifted) + "\n")
    git(world.work, "commit", "--quiet", "-am", "new measurements")
    code = main(["monitor", "--repo", str(world.work), "watched", "--format", "json"])
    report = json.loads(capsys.readouterr().out)["models"][0]
    assert code == 1
    data = next(c for c in report["checks"] if c["check"] == "data")
    assert data["verdict"] == "drift" and data["figures"]["moved"] == ["petal_length"]
    assert data["figures"]["datasetDigest"]["before"] != data["figures"]["datasetDigest"]["after"]
    assert "3." not in json.dumps(data["figures"]["features"][0]["rows"])  # counts, no rows
    assert main(["monitor", "--repo", str(world.work)]) == 1  # the table: every check, its figures, the verdict
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["MODEL", "VERSION", "CHECK", "VERDICT", "FIGURES", "CALIBRATION"]
    rows = {line.split()[2]: line for line in table[1:-1]}
    assert "ESP " in rows["calibration"] and " -> " in rows["calibration"] and rows["calibration"].split()[3] == "ok"
    assert "moved: petal_length" in rows["data"] and rows["data"].split()[3] == "drift"
    assert table[-1] == "1 model(s) checked, 1 drifted"
    # a malformed calibration file: the hardware checks are not run, with the located reason; exit 2
    (world.work / "calibrations").mkdir()
    (world.work / "calibrations/fake_manila.json").write_text('{"backend_name": "fake_manila"}')
    git(world.work, "checkout", "--quiet", "HEAD~1", "--", "data/iris01.csv")
    code = main(["monitor", "--repo", str(world.work), "watched"])
    assert code == 2  # the spec is refused with it, as qmlops validate refuses it
    assert "calibrations/fake_manila.json: last_update_date" in capsys.readouterr().err
    # checked on its own (an operator reading the file after the spec was admitted): not run, located
    from controller.engine.monitoring import monitor
    from controller.runner.specs import observe

    (world.work / "calibrations/fake_manila.json").unlink()
    model = observe(Registry(world.work).git, world.work / "specs").models[0][0].model
    (world.work / "calibrations/fake_manila.json").write_text('{"backend_name": "fake_manila"}')
    report = monitor(Registry(world.work), [model], now=NOW)[0]
    assert report.verdict is Verdict.NOT_RUN
    hardware = [c for c in report.checks if c.kind in (CheckKind.CALIBRATION, CheckKind.REPLAY)]
    assert all(c.verdict is Verdict.NOT_RUN for c in hardware) and len(hardware) == 2
    assert "calibrations/fake_manila.json: last_update_date" in hardware[0].reason


def test_an_unreachable_service_is_not_run_never_no_drift(tmp_path: Path) -> None:
    world = trained_world(tmp_path)
    registry = Registry(world.work)
    champion = registry.champion("demo", "watched")
    assert champion is not None
    manifest = json.loads(json.dumps(champion.manifest))
    manifest["artifact"]["lineage"]["backend"] = "ibm:fake_manila"  # as if it had been trained on IBM
    on_ibm = Version(champion.number, manifest)
    spec = tiny(
        training={"backend": "ibm:fake_manila", "credentialsSecret": "ibm"},
        monitoring={"calibration": {}, "replay": {}},
    )
    read, _ = credentials_source()

    class Unreachable(StandInFactory):
        def service(self, credentials: Any) -> Any:
            raise ConnectionError("Failed to establish a new connection: [Errno 111] Connection refused")

    context = Context("demo", "watched", spec, on_ibm, world.work, NOW, CalibrationSource(world.work), registry, read)
    with installed(Unreachable()):
        checks = run_checks(context)
    assert [(c.kind, c.verdict) for c in checks] == [
        (CheckKind.CALIBRATION, Verdict.NOT_RUN),
        (CheckKind.REPLAY, Verdict.NOT_RUN),
    ]
    assert (
        "ibm:fake_manila: the service did not answer: " in checks[0].reason and "Connection refused" in checks[0].reason
    )
    # with the service back, the same champion is checked on the service's calibration
    with installed() as factory:
        checks = run_checks(context)
    assert [c.verdict for c in checks] == [Verdict.OK, Verdict.OK], [c.reason for c in checks]
    assert checks[0].figures["calibration"]["after"]["source"] == "service"
    assert checks[1].figures["backend"] == "fake:manila"  # replayed locally: no QPU time
    assert len(factory.services) == 1 and factory.sessions == [] and factory.batches == []  # one properties fetch


def test_an_ibm_calibration_is_fetched_at_most_once_per_period(tmp_path: Path) -> None:
    source = CalibrationSource(tmp_path)
    read, calls = credentials_source()
    hour = timedelta(hours=1)
    with installed() as factory:
        first = source.today("ibm:fake_manila", now=NOW, period=hour, credentials=read)
        again = source.today("ibm:fake_manila", now=NOW + timedelta(minutes=59), period=hour, credentials=read)
        assert len(factory.services) == 1 and again is first
        source.today("ibm:fake_manila", now=NOW + hour, period=hour, credentials=read)
        assert len(factory.services) == 2 and len(calls) == 2
    with pytest.raises(SourceUnavailable, match="no IBM Quantum credentials"):
        CalibrationSource(tmp_path).today("ibm:fake_lima", now=NOW, period=hour)


def test_qmlops_validate_refuses_a_calibration_file_with_impossible_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.monitoring.world import SPEC, SPEC_PATH
    from tests.training import calibrations

    repo = tmp_path / "repo"
    git(tmp_path, "init", "--quiet", str(repo))
    (repo / "specs").mkdir()
    (repo / SPEC_PATH).write_text(SPEC.format(actions="alert"))
    (repo / "data").mkdir()
    (repo / "data/iris01.csv").write_text("petal_length,petal_width,species\n1.4,0.2,setosa\n")
    assert main(["validate", str(repo / SPEC_PATH)]) == 0
    data = calibrations.packaged()
    data["qubits"][2][0]["value"] = -12.0  # a negative T1
    calibrations.write(repo, data)
    assert main(["validate", str(repo / SPEC_PATH)]) == 1
    out = capsys.readouterr().out
    assert "spec.training.backend: the calibration it runs under is refused: " in out
    assert "calibrations/fake_manila.json: qubits[2].T1: a duration cannot be negative" in out
    del data["qubits"][4]  # a missing qubit
    data["qubits"][2][0]["value"] = 50.0
    calibrations.write(repo, data)
    assert main(["validate", str(repo / SPEC_PATH)]) == 1
    assert "qubits: fake_manila has 5 qubits, the file lists 4" in capsys.readouterr().out


def test_a_repository_without_monitored_models_says_so_rather_than_an_empty_table() -> None:
    from controller.cli.monitor import table

    assert table([]) == "no model declares spec.monitoring: nothing to check (docs/monitoring.md)"


def test_qmlops_validate_checks_the_calibration_of_every_device_a_pipeline_uses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.training import calibrations

    repo = tmp_path / "repo"
    git(tmp_path, "init", "--quiet", str(repo))
    (repo / "specs").mkdir()
    example = (Path(__file__).resolve().parents[2] / "examples" / "pipeline-nightly.yaml").read_text()
    pipeline = repo / "specs" / "pipeline.yaml"
    pipeline.write_text(example)
    swept = repo / "specs" / "swept.yaml"
    edits = {
        "name: iris-nightly": "name: iris-swept",
        'backend: "fake:manila"': 'backend: "local:aer"',
        '{backends: ["fake:manila", "fake:lima"]}': '{backends: ["local:aer"]}',
        "kind: [COBYLA, SPSA]}": 'kind: [COBYLA, SPSA], training.backend: ["local:aer", "fake:quito"]}',
    }
    text = example
    for old, new in edits.items():
        assert old in text
        text = text.replace(old, new)
    swept.write_text(text)
    assert main(["validate", str(pipeline)]) == 0 and main(["validate", str(swept)]) == 0
    data = calibrations.packaged("fake_lima")
    data["qubits"][1][0]["value"] = -3.0  # a negative T1 on the second evaluate backend's device
    calibrations.write(repo, data, "fake_lima")
    assert main(["validate", str(pipeline)]) == 1
    out = capsys.readouterr().out
    assert (
        "spec.steps[1].evaluate.backends[1]: the calibration it runs under is refused: "
        "calibrations/fake_lima.json: qubits[1].T1: a duration cannot be negative"
    ) in out
    quito = calibrations.packaged("fake_quito")
    quito["gates"][0]["parameters"][0]["value"] = 1.5  # an error rate above 1, on a device only the matrix names
    calibrations.write(repo, quito, "fake_quito")
    assert main(["validate", str(swept)]) == 1
    out = capsys.readouterr().out
    assert "spec.steps[0].train.matrix[training.backend][1]: the calibration it runs under is refused: " in out
    assert "calibrations/fake_quito.json: gates[0]" in out
    assert "fake_lima" not in out, "a device no spec in the file uses is not its problem"
