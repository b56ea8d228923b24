"""A spec repository with the tiny model and a pipeline over it, and the reconcilers that drive both
(as ``qmlops run`` does: every model, then every pipeline)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controller.engine import training
from controller.engine.reconcile import Reconciler
from controller.engine.reconcile.pipeline import PipelineOutcome, PipelineReconciler
from controller.engine.registry import Registry
from controller.runner.specs import observe
from tests.registry.repos import DEFAULT_PROMOTION, Repos, tiny_spec

GOVERNANCE = """\
    allowedBackends: ["local:*", "fake:*"]
    approvers: [alice@example.com, bob@example.com]"""

PIPELINE = """\
apiVersion: qmlops.io/v1alpha1
kind: QuantumPipeline
metadata: {{name: sweep, namespace: demo}}
spec:
  model: tiny
  triggers:
    - gitChange: {{paths: ["data/**"]}}
  failFast: {fail_fast}
  steps:
    - name: sweep
      retryBackoff: 0s
      train:
        matrix: {matrix}
        parallelism: 2
    - name: noise
      dependsOn: [sweep]
      evaluate: {{backends: [{backends}], shots: 256}}
    - name: pick
      dependsOn: [noise]
      select: {{metric: accuracy, mode: max}}
    - name: promote
      dependsOn: [pick]
      promote: {{}}
"""


def pipeline_spec(
    matrix: str = '{"circuit.ansatz.reps": [1, 2]}',
    backends: str = '"local:aer", "fake:manila"',
    fail_fast: bool = True,
) -> str:
    return PIPELINE.format(matrix=matrix, backends=backends, fail_fast="true" if fail_fast else "false")


class Trainer:
    """The real trainer, counted; ``fail(spec)`` may raise for chosen cells."""

    def __init__(self, fail: Callable[[Any], None] | None = None) -> None:
        self.calls: list[int] = []  # the ansatz reps of each training that ran to the end
        self.fail = fail

    def __call__(self, spec: Any, **kwargs: Any) -> Any:
        if self.fail is not None:
            self.fail(spec)
        artifact = training.train(spec, **kwargs)
        self.calls.append(spec.circuit.ansatz.reps)
        return artifact


def seeded(repos: Repos, pipeline: str | None = None, *, promotion: str = DEFAULT_PROMOTION) -> Path:
    work = repos.clone("work")
    repos.commit_file(
        work, "specs/tiny.yaml", tiny_spec(iterations=3, governance=GOVERNANCE, promotion=promotion), "tiny"
    )
    repos.commit_file(work, "specs/sweep.yaml", pipeline or pipeline_spec(), "sweep")
    repos.push(work)
    return work


class Controller:
    """``qmlops run --once`` as the engine sees it: reconcile every model, then every pipeline."""

    def __init__(
        self, work: Path, tmp: Path, trainer: Trainer | None = None, credentials: Callable[..., Any] | None = None
    ) -> None:
        self.registry = Registry(work)
        self.trainer = trainer or Trainer()
        root = tmp / f"ckpt-{work.name}"
        found = {"credentials": credentials} if credentials else {}
        self.models = Reconciler(self.registry, trainer=self.trainer, checkpoint_root=root, **found)
        self.pipelines = PipelineReconciler(self.registry, trainer=self.trainer, checkpoint_root=root, **found)

    def observe(self, requested: dict[str, str] | None = None) -> Any:
        self.registry.sync()
        found = observe(self.registry.git, self.registry.repo / "specs", requested=requested)
        assert not found.problems, [p.format() for p in found.problems]
        return found

    def once(self, requested: dict[str, str] | None = None) -> list[PipelineOutcome]:
        for observed, _ in self.observe(requested).models:
            self.models.reconcile(observed)
        return [self.pipelines.reconcile(seen) for seen, _ in self.observe(requested).pipelines]


def ledger(work: Path) -> list[dict[str, Any]]:
    path = work / "registry" / "demo" / "tiny" / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def kinds(work: Path, pipeline: str = "sweep") -> list[str]:
    return [e["kind"] for e in ledger(work) if (e["data"].get("pipeline") or {}).get("name") == pipeline]
