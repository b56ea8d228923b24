"""What a pipeline's machinery costs beside the trainings it runs, and what a fully cached rerun costs.

    .venv/bin/python benchmarks/pipeline_sweep.py [--iterations 30] [--parallelism 2]

A spec repository (a bare remote and a clone, in a temporary folder) holds one model (iris, 4 qubits,
ZZFeatureMap, RealAmplitudes on Aer) and a pipeline that sweeps six cells
(``circuit.ansatz.reps`` x ``training.optimizer.maxIterations``), selects on the cells' own test
figures and promotes. Printed side by side, each a whole wall-clock in this one process:

1. the reference: the same six trainings run one after the other by ``qmlops train`` (``main(["train",
   FILE])``, one spec file per cell), in this process;
2. the pipeline's first run with ``parallelism`` 1: the same six trainings, one after the other, plus
   everything a run does around them (validation of each cell, digests, the cache look-up, the
   workspaces, a commit per decision, the push). Its ratio to (1) is the machinery's cost; target:
   at most 1.10;
3. the same sweep in a fresh repository with ``parallelism`` (default 2) cells at a time, for scale;
4. a requested rerun of (2): every cell from the cache, nothing trained; target: under 2 s.

The model's own version is trained before each pipeline run and not counted; its cell (equal to the
model's spec) is left out of the matrix so that all six cells train. A short sweep warms Qiskit, Aer
and the transpiler first. The machine's load moves every figure: quote medians of several runs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = """\
apiVersion: qmlops.io/v1alpha1
kind: QuantumModel
metadata: {{name: iris, namespace: bench}}
spec:
  owner: alice@example.com
  dataset: {{source: "builtin:iris", classes: [0, 1], seed: 42}}
  circuit:
    qubits: 4
    featureMap: {{kind: ZZFeatureMap, reps: 1, entanglement: linear}}
    ansatz: {{kind: RealAmplitudes, reps: {reps}}}
  training:
    backend: local:aer
    shots: 1024
    optimizer: {{kind: COBYLA, maxIterations: {iterations}}}
    seed: 7
  promotion:
    policy: auto
    gates: [{{metric: accuracy, min: 0.5}}]
  governance: {{allowedBackends: ["local:*"]}}
"""

PIPELINE = """\
apiVersion: qmlops.io/v1alpha1
kind: QuantumPipeline
metadata: {{name: sweep, namespace: bench}}
spec:
  model: iris
  steps:
    - name: sweep
      train:
        matrix: {{circuit.ansatz.reps: [1, 2, 3], training.optimizer.maxIterations: [{short}, {long}]}}
        parallelism: {parallelism}
    - name: pick
      dependsOn: [sweep]
      select: {{metric: accuracy, mode: max}}
    - name: promote
      dependsOn: [pick]
      promote: {{}}
"""


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def repository(base: Path, iterations: int, parallelism: int) -> Path:
    """A bare remote and a clone holding the model (reps 4: none of the cells) and the pipeline."""
    remote, work = base / "remote.git", base / "work"
    git(base, "init", "--quiet", "--bare", "-b", "main", str(remote))
    git(base, "clone", "--quiet", str(remote), str(work))
    (work / "specs").mkdir()
    (work / "specs/model.yaml").write_text(MODEL.format(reps=4, iterations=iterations))
    pipeline = PIPELINE.format(short=iterations // 2, long=iterations, parallelism=parallelism)
    (work / "specs/pipeline.yaml").write_text(pipeline)
    git(work, "add", "specs")
    git(work, "-c", "user.name=bench", "-c", "user.email=bench@example.com", "commit", "--quiet", "-m", "specs")
    git(work, "push", "--quiet", "origin", "HEAD:main")
    return work


def sequential_train(base: Path, iterations: int) -> float:
    """The six cells' trainings one after the other, each by ``qmlops train FILE``, in this process."""
    from controller.cli.main import main

    files = []
    for reps in (1, 2, 3):
        for its in (iterations // 2, iterations):
            path = base / f"cell-{reps}-{its}.yaml"
            path.write_text(MODEL.format(reps=reps, iterations=its))
            files.append(path)
    started = time.perf_counter()
    for path in files:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = main(["train", str(path), "--output", str(base / "out"), "--fresh"])
        if code != 0:
            raise SystemExit(f"qmlops train {path.name} exited {code}")
    return time.perf_counter() - started


def pipeline_runs(base: Path, iterations: int, parallelism: int) -> tuple[float, float, int]:
    """(the first run's wall-clock, the cached rerun's, versions the rerun registered)."""
    from controller.engine.reconcile import Reconciler
    from controller.engine.reconcile.pipeline import PipelineReconciler
    from controller.engine.registry import Registry
    from controller.runner.specs import observe

    work = repository(base, iterations, parallelism)
    registry = Registry(work)
    root = base / "checkpoints"
    models = Reconciler(registry, checkpoint_root=root)
    pipelines = PipelineReconciler(registry, checkpoint_root=root)
    ((observed, _),) = observe(registry.git, work / "specs").models
    models.reconcile(observed)  # the model's own version: not part of the measure

    def run(requested: dict[str, str] | None = None) -> tuple[float, int]:
        ((seen, _),) = observe(registry.git, work / "specs", requested=requested).pipelines
        before = len(registry.versions("bench", "iris"))
        started = time.perf_counter()
        outcome = pipelines.reconcile(seen)
        elapsed = time.perf_counter() - started
        if outcome.runs[-1].phase.value != "Succeeded":
            raise SystemExit(f"the run did not succeed: {outcome.message}")
        return elapsed, len(registry.versions("bench", "iris")) - before

    first, registered = run()
    if registered != 6:
        raise SystemExit(f"the first run registered {registered} versions, not 6")
    cached, again = run({"bench/sweep": "2026-01-01T00:00:00Z"})
    return first, cached, again


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=30, help="COBYLA iterations of the long cells")
    parser.add_argument("--parallelism", type=int, default=2, help="cells at a time in the parallel run")
    args = parser.parse_args()
    os.environ.setdefault("GIT_CONFIG_NOSYSTEM", "1")
    with tempfile.TemporaryDirectory(prefix="qmlops-bench-") as folder:
        base = Path(folder)
        for name in ("seq", "p1", "pn"):
            (base / name).mkdir()
        (base / "warm").mkdir()
        sequential_train(base / "warm", 2)  # Qiskit, Aer and the transpiler warmed before any clock starts
        reference = sequential_train(base / "seq", args.iterations)
        serial, cached, again = pipeline_runs(base / "p1", args.iterations, 1)
        parallel, _, _ = pipeline_runs(base / "pn", args.iterations, args.parallelism)
    print(
        f"6 cells, iris on 4 qubits, Aer, COBYLA {args.iterations // 2}/{args.iterations} iterations, {os.cpu_count()} cores"
    )
    print(f"  qmlops train, one after the other (reference)   {reference:8.2f} s")
    print(
        f"  pipeline run, parallelism 1                      {serial:8.2f} s   {serial / reference:5.2f}x the reference"
        f" (target <= 1.10x: the machinery adds {100 * (serial / reference - 1):+.1f}%)"
    )
    print(
        f"  pipeline run, parallelism {args.parallelism}                      {parallel:8.2f} s   "
        f"{parallel / reference:5.2f}x the reference"
    )
    print(
        f"  requested rerun, every cell from the cache      {cached:8.2f} s   (target < 2 s; "
        f"{again} versions registered, target 0)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
