"""A spec repository with one tiny model on fake:manila and a file dataset, watched by monitoring."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.engine.reconcile import Observed, Reconciler
from controller.engine.registry import Registry
from controller.runner.specs import observe
from tests.registry.repos import Repos, git
from tests.training import calibrations
from tests.training.specs import write_iris_csv

SPEC_PATH = "specs/watched.yaml"

SPEC = """\
apiVersion: qmlops.io/v1alpha1
kind: QuantumModel
metadata: {{name: watched, namespace: demo}}
spec:
  owner: alice@example.com
  dataset:
    source: file:data/iris01.csv
    target: species
    features: [petal_length, petal_width]
    classes: [setosa, versicolor]
    testFraction: 0.5
  circuit:
    qubits: 2
    featureMap: {{kind: ZFeatureMap, reps: 1}}
    ansatz: {{kind: RealAmplitudes, reps: 1}}
  training:
    backend: fake:manila
    executionMode: job
    shots: 256
    optimizer: {{kind: COBYLA, maxIterations: 2}}
  promotion:
    gates:
      - {{metric: accuracy, min: 0.0}}
  governance:
    allowedBackends: ["fake:*"]
  monitoring:
    every: 6h
    calibration: {{maxEspDrop: 0.10}}
    replay: {{maxAccuracyDrop: 0.05}}
    data: {{pValue: 0.01, minEffect: 0.1}}
    onDrift: [{actions}]
"""


@dataclass
class World:
    repos: Repos
    work: Path
    checkpoints: Path

    @classmethod
    def create(cls, base: Path, actions: str = "retrain, alert") -> World:
        repos = Repos(base)
        work = repos.clone("work")
        write_iris_csv(work / "data" / "iris01.csv", per_class=8)
        git(work, "add", "data")
        repos.commit_file(work, SPEC_PATH, SPEC.format(actions=actions), "A watched model")
        repos.push(work)
        return cls(repos, work, base / "checkpoints")

    def reconciler(self) -> Reconciler:
        return Reconciler(Registry(self.work), checkpoint_root=self.checkpoints)

    def observed(self, reconciler: Reconciler) -> Observed:
        reconciler.registry.sync()
        found = observe(reconciler.registry.git, self.work / "specs")
        assert not found.problems, [p.format() for p in found.problems]
        return found.models[0][0]

    def reconcile(self, reconciler: Reconciler | None = None) -> Any:
        reconciler = reconciler or self.reconciler()
        return reconciler.reconcile(self.observed(reconciler))

    def ledger(self) -> list[Any]:
        return list(Registry(self.work).ledger("demo", "watched").entries)

    def version(self, number: int) -> dict[str, Any]:
        return json.loads((self.work / f"registry/demo/watched/versions/{number}.json").read_text())

    def commit_calibration(self, data: dict[str, Any], message: str = "fake_manila recalibrated") -> None:
        calibrations.write(self.work, data)
        git(self.work, "add", "calibrations")
        git(self.work, "commit", "--quiet", "-m", message)
        self.repos.push(self.work)
