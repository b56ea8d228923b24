"""What watching champions costs: the calibration check and the noisy replay for 100 models on fake
backends, beside the cost of one training of the same model for scale.

    .venv/bin/python benchmarks/monitor_cost.py [--models 100] [--replays 100] [--iterations 3]

Setup: one 4-qubit champion is trained on fake:manila (breast_cancer reduced to 4 components, a
100-row test split) with the engine's own ``train``; that is the training timed for scale. The 100
models are that champion under 100 names (each check is per model: its own context, nothing shared
between models but today's calibration, loaded once per device as a monitoring source does).

Measured, per model:
* the calibration check (ESP of the champion's layout under today's calibration, and the search for a
  better layout) once the snapshot is loaded;
* the noisy replay: the champion scored on its test split under today's noise (evaluation.evaluate on
  fake:manila, one primitive job of 100 circuits), ``--replays`` of them.
And the verdicts: an untouched calibration (never a drift) and a degraded one (readout and gate
errors tripled on the layout's qubits: a drift on the first check, for every model).

Targets: calibration check under 50 ms per model; replay of the 4-qubit champion on 100 rows under
2 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from controller.api.quantummodel import QuantumModelSpec  # noqa: E402
from controller.engine.monitoring import CalibrationSource, Verdict  # noqa: E402
from controller.engine.monitoring.checks import Context, calibration_check, replay_check  # noqa: E402
from controller.engine.registry.versions import Version  # noqa: E402

SPEC: dict[str, Any] = {
    "owner": "bench@example.com",
    "dataset": {
        "source": "builtin:breast_cancer",
        "testFraction": 100 / 569,
        "seed": 42,
        "reduce": {"method": "pca", "components": 4},
    },
    "circuit": {
        "qubits": 4,
        "featureMap": {"kind": "ZFeatureMap", "reps": 1},
        "ansatz": {"kind": "RealAmplitudes", "reps": 1},
    },
    "training": {"backend": "fake:manila", "executionMode": "job", "shots": 256, "seed": 7},
    "monitoring": {"calibration": {"maxEspDrop": 0.10}, "replay": {"maxAccuracyDrop": 0.05}},
}


def degraded(snapshot: dict[str, Any], qubits: list[int]) -> dict[str, Any]:
    data = json.loads(json.dumps(snapshot))
    data["last_update_date"] = "2026-12-01T06:00:00+00:00"
    for q, entries in enumerate(data["qubits"]):
        for entry in entries:
            if entry["name"] == "readout_error" and q in qubits:
                entry["value"] = min(1.0, entry["value"] * 3)
    for gate in data["gates"]:
        if set(gate["qubits"]) & set(qubits):
            for entry in gate["parameters"]:
                if entry["name"] == "gate_error":
                    entry["value"] = min(1.0, entry["value"] * 3)
    return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--replays", type=int, default=100, help="models whose replay is timed")
    parser.add_argument("--iterations", type=int, default=3, help="COBYLA iterations of the training")
    args = parser.parse_args()

    from controller.engine.training import train

    spec = QuantumModelSpec.model_validate(
        {**SPEC, "training": {**SPEC["training"], "optimizer": {"kind": "COBYLA", "maxIterations": args.iterations}}}
    )
    started = time.perf_counter()
    artifact = train(spec)
    training_seconds = time.perf_counter() - started
    lineage = artifact.manifest["lineage"]
    print(
        f"one training: {training_seconds:.2f} s ({args.iterations} COBYLA iterations, "
        f"{lineage['dataset']['trainRows']} train rows, {lineage['dataset']['testRows']} test rows, fake:manila)"
    )
    manifest = {"digest": artifact.digest, "artifact": artifact.manifest}
    champions = [Version(1, manifest) for _ in range(args.models)]
    now = datetime.now(UTC)

    with tempfile.TemporaryDirectory() as folder:
        repo = Path(folder)
        source = CalibrationSource(repo)
        started = time.perf_counter()
        today = source.today("fake:manila", now=now, period=__import__("datetime").timedelta(hours=6))
        load_seconds = time.perf_counter() - started

        def context(i: int, champion: Version) -> Context:
            return Context("bench", f"model-{i}", spec, champion, repo, now, source)

        timings, verdicts = [], []
        for i, champion in enumerate(champions):
            started = time.perf_counter()
            check = calibration_check(context(i, champion), today)
            timings.append(time.perf_counter() - started)
            verdicts.append(check.verdict)
        untouched_drifts = sum(v is Verdict.DRIFT for v in verdicts)
        print(
            f"calibration check, untouched calibration: {args.models} models, "
            f"median {statistics.median(timings) * 1000:.2f} ms, max {max(timings) * 1000:.2f} ms per model "
            f"(snapshot loaded once in {load_seconds * 1000:.1f} ms); drifts reported: {untouched_drifts}"
        )

        layout = lineage["calibration"]["layout"]["qubits"]
        (repo / "calibrations").mkdir()
        (repo / "calibrations/fake_manila.json").write_text(json.dumps(degraded(today.snapshot, layout)))
        worse = source.today("fake:manila", now=now, period=__import__("datetime").timedelta(hours=6))
        timings, detected = [], 0
        for i, champion in enumerate(champions):
            started = time.perf_counter()
            check = calibration_check(context(i, champion), worse)
            timings.append(time.perf_counter() - started)
            detected += check.verdict is Verdict.DRIFT
        esp = check.figures["esp"]
        print(
            f"calibration check, errors tripled on qubits {layout}: median {statistics.median(timings) * 1000:.2f} ms "
            f"per model; detected on the first check for {detected} of {args.models} models "
            f"(ESP {esp['before']:.4f} -> {esp['after']:.4f})"
        )

        replays, cpu, outcomes = [], [], []
        for i, champion in enumerate(champions[: args.replays]):
            started, cpu_started = time.perf_counter(), time.process_time()
            check = replay_check(context(i, champion), worse)
            replays.append(time.perf_counter() - started)
            cpu.append(time.process_time() - cpu_started)
            outcomes.append(check)
        # the first replay of a champion is two evaluations (under the training's calibration, then
        # remembered, and under today's); every later one is one
        figures = outcomes[-1].figures
        print(
            f"noisy replay under the degraded calibration, first model (two evaluations): {replays[0]:.2f} s, "
            f"CPU {cpu[0]:.2f} s"
        )
        later, later_cpu = replays[1:] or replays, cpu[1:] or cpu
        print(
            f"noisy replay under the degraded calibration, {len(later)} more models (one evaluation each of "
            f"{figures['rows']} rows at {figures['shots']} shots): median {statistics.median(later):.2f} s, "
            f"max {max(later):.2f} s, CPU median {statistics.median(later_cpu):.2f} s per model; "
            f"accuracy {figures['accuracy']['before']:.3f} -> {figures['accuracy']['after']:.3f}, "
            f"verdict {outcomes[-1].verdict.value}"
        )
        (repo / "calibrations/fake_manila.json").unlink()
        started, cpu_started = time.perf_counter(), time.process_time()
        same = replay_check(context(0, champions[0]), today)
        print(
            f"noisy replay under an untouched calibration: {time.perf_counter() - started:.2f} s, "
            f"CPU {time.process_time() - cpu_started:.2f} s (today = the training calibration: its remembered baseline, "
            f"no evaluation), verdict {same.verdict.value}, "
            f"drop {same.figures['drop']}"
        )
        print(f"load average while measuring: {', '.join(f'{v:.1f}' for v in __import__('os').getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
