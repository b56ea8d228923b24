"""The same classification problems trained by qiskit-machine-learning's VQC on Aer and by qmlops, side by side.

    .venv/bin/python benchmarks/train_vs_vqc.py [--quick] [--only iris|breast_cancer]

Problems (the same data, split, scaling, circuit, optimizer budget and initial point for both):

* ``iris``: classes 0/1, 4 features on 4 qubits; ZZFeatureMap reps 1 (linear), RealAmplitudes reps 2
  (linear, 12 weights); COBYLA, 150 evaluations; 1024 shots.
* ``breast_cancer``: 30 features reduced by PCA to 8 qubits; the same circuit family (24 weights);
  COBYLA, 150 evaluations; 1024 shots.

The data comes from qmlops's own preparation (``controller.engine.training.data.prepare``: stratified
split by the dataset seed, PCA and min-max scaling fitted on the training split, to [0, 1] for a
ZZFeatureMap); VQC gets those very arrays. Both read the same model: ``p(class 1) = (1 - <Z...Z>) / 2``,
the parity of all qubits (VQC's ``interpret`` is set to the full parity: its default, ``x % 2``, reads
qubit 0 only).
The initial point is qmlops's (``optimizers.initial_weights`` with the training seed) for both.

* VQC: ``qiskit_aer.primitives.SamplerV2(default_shots=1024)``, with the Aer options qmlops's ``local:aer``
  uses (``backends.AER_OPTIONS``: the samples spread over the cores), under ``VQC(..., optimizer=COBYLA(maxiter=150))``;
  its primitive jobs are counted by wrapping the sampler's ``run``; its time is ``fit`` plus ``score``.
* qmlops: ``train()`` on ``local:aer`` with the same shots (Aer's EstimatorV2 at precision 1/sqrt(shots)),
  checkpointing to a temporary folder as ``qmlops train`` does; its time is the whole ``train()`` call
  (data, circuit, transpilation, every job, the test job and the artifact).

Printed per problem: wall time, test accuracy and primitive jobs per evaluation of both, the speed-up
(VQC time / qmlops time) and the accuracy difference, and qmlops's own overhead per iteration:
(iterationSeconds - runSeconds) / runSeconds from the artifact's usage, where iterationSeconds runs from
one job's end to the next's (the optimizer's step, the parameter table, the loss, the journal write)
and runSeconds is the time inside Aer's primitive. The one-time setup (data, circuit, transpilation,
the test job, the artifact; a process's first imports) is printed beside it. Targets: speed-up >= 10x
at equal or better test accuracy, exactly 1 job per evaluation, overhead per iteration <= 20%. The
figures are printed whatever they are; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHOTS = 1024
EVALUATIONS = 150
QUICK_EVALUATIONS = 0  # --quick: the least COBYLA takes, weights + 2 (scipy raises a smaller maxiter to that)
REPS = 2  # RealAmplitudes: (REPS + 1) weights per qubit
SEED = 7
TARGET_SPEEDUP, TARGET_OVERHEAD = 10.0, 0.20


@dataclass(frozen=True)
class Problem:
    name: str
    title: str
    dataset: dict[str, Any]
    qubits: int
    evaluations: int = EVALUATIONS
    shots: int = SHOTS

    def spec(self) -> Any:
        from controller.api.quantummodel import QuantumModelSpec

        return QuantumModelSpec.model_validate(
            {
                "owner": "bench@example.com",
                "task": "classification",
                "dataset": self.dataset,
                "circuit": {
                    "qubits": self.qubits,
                    "featureMap": {"kind": "ZZFeatureMap", "reps": 1, "entanglement": "linear"},
                    "ansatz": {"kind": "RealAmplitudes", "reps": REPS, "entanglement": "linear"},
                    "observable": "parity",
                },
                "training": {
                    "backend": "local:aer",
                    "shots": self.shots,
                    "optimizer": {"kind": "COBYLA", "maxIterations": self.evaluations},
                    "seed": SEED,
                },
            }
        )


def least_evaluations(qubits: int) -> int:
    """COBYLA's smallest budget: one evaluation per weight, plus two."""
    return (REPS + 1) * qubits + 2


def problems(evaluations: int = EVALUATIONS) -> list[Problem]:
    """The two problems, each with ``evaluations`` COBYLA evaluations (at least :func:`least_evaluations`,
    so that VQC, whose SciPy COBYLA would raise a smaller budget, runs the same number as qmlops)."""
    return [
        Problem(
            "iris",
            "iris classes 0/1, 4 qubits",
            {"source": "builtin:iris", "classes": [0, 1], "testFraction": 0.2, "seed": 42},
            qubits=4,
            evaluations=max(evaluations, least_evaluations(4)),
        ),
        Problem(
            "breast_cancer",
            "breast_cancer, PCA to 8 qubits",
            {"source": "builtin:breast_cancer", "testFraction": 0.2, "seed": 42, "reduce": {"components": 8}},
            qubits=8,
            evaluations=max(evaluations, least_evaluations(8)),
        ),
    ]


@dataclass
class Result:
    seconds: float
    accuracy: float
    jobs: int  # every primitive job, the test split's included
    evaluations: int  # objective evaluations during training
    training_jobs: int  # jobs during training

    @property
    def jobs_per_evaluation(self) -> float:
        return self.training_jobs / self.evaluations if self.evaluations else float("nan")


@dataclass
class QmlopsResult(Result):
    wall_seconds: float = 0.0
    run_seconds: float = 0.0
    iteration_seconds: float = 0.0  # from each job's end to the next's (usage.iterationSeconds)

    @property
    def overhead(self) -> float:
        """The trainer's own time per iteration, per unit of primitive time."""
        return (self.iteration_seconds - self.run_seconds) / self.run_seconds if self.run_seconds else float("nan")

    @property
    def setup_seconds(self) -> float:
        """Once per training: data, circuit, transpilation, the test job, the artifact."""
        return self.wall_seconds - self.iteration_seconds


# --- qmlops ------------------------------------------------------------------------------------------


def run_qmlops(problem: Problem, checkpoint: bool = True) -> QmlopsResult:
    from controller.engine.training import train

    spec = problem.spec()
    with tempfile.TemporaryDirectory(prefix="qmlops-bench-") as folder:
        started = time.perf_counter()
        artifact = train(spec, checkpoint_dir=Path(folder) / "checkpoint" if checkpoint else None)
        seconds = time.perf_counter() - started
    usage = artifact.manifest["usage"]
    iterations = int(usage["iterations"])
    return QmlopsResult(
        seconds=seconds,
        accuracy=float(artifact.metrics["accuracy"]),
        jobs=int(usage["primitiveJobs"]),
        evaluations=iterations,
        training_jobs=int(usage["primitiveJobs"]) - 1,  # the last job scores the test split
        wall_seconds=float(usage["wallSeconds"]),
        run_seconds=float(usage["runSeconds"]),
        iteration_seconds=float(usage["iterationSeconds"]),
    )


# --- qiskit-machine-learning's VQC -----------------------------------------------------------------------


def prepared_data(problem: Problem) -> Any:
    from controller.engine.training import data

    spec = problem.spec()
    return data.prepare(spec.dataset, None, spec.circuit.qubits, spec.circuit.feature_map.kind.value)


def initial_point(problem: Problem, weights: int) -> Any:
    from controller.engine.training import optimizers

    return optimizers.initial_weights(weights, problem.spec().training.seed)


def parity(bits: int) -> int:
    """The class a measured bitstring votes for: the parity of all its qubits, as qmlops reads Z...Z."""
    return bin(bits).count("1") % 2


def run_vqc(problem: Problem) -> Result:
    from qiskit.circuit.library import real_amplitudes, zz_feature_map
    from qiskit_aer.primitives import SamplerV2
    from qiskit_machine_learning.algorithms import VQC
    from qiskit_machine_learning.optimizers import COBYLA
    from qiskit_machine_learning.utils import algorithm_globals

    from controller.engine.training.backends import AER_OPTIONS

    class CountingSampler(SamplerV2):  # type: ignore[misc]
        jobs = 0

        def run(self, pubs: Any, *, shots: int | None = None) -> Any:
            CountingSampler.jobs += 1
            return super().run(pubs, shots=shots)

    algorithm_globals.random_seed = SEED
    prepared = prepared_data(problem)
    features = prepared.x_train.shape[1]
    feature_map = zz_feature_map(features, reps=1, entanglement="linear")
    ansatz = real_amplitudes(problem.qubits, reps=REPS, entanglement="linear")
    # the same Aer settings as qmlops's local:aer (samples spread over the cores): the comparison is of
    # the trainers, not of Aer's configuration
    sampler = CountingSampler(default_shots=problem.shots, seed=SEED, options={"backend_options": dict(AER_OPTIONS)})
    vqc = VQC(
        feature_map=feature_map,
        ansatz=ansatz,
        optimizer=COBYLA(maxiter=problem.evaluations),
        initial_point=initial_point(problem, ansatz.num_parameters),
        sampler=sampler,
        interpret=parity,
        output_shape=2,
    )
    started = time.perf_counter()
    vqc.fit(prepared.x_train, prepared.split.y_train)
    training_jobs = CountingSampler.jobs
    accuracy = float(vqc.score(prepared.x_test, prepared.split.y_test))
    seconds = time.perf_counter() - started
    return Result(
        seconds=seconds,
        accuracy=accuracy,
        jobs=CountingSampler.jobs,
        evaluations=int(vqc.fit_result.nfev),
        training_jobs=training_jobs,
    )


# --- side by side ----------------------------------------------------------------------------------------


@dataclass
class Comparison:
    problem: Problem
    train_rows: int
    test_rows: int
    vqc: Result
    qmlops: QmlopsResult

    @property
    def speedup(self) -> float:
        return self.vqc.seconds / self.qmlops.seconds

    @property
    def accuracy_gain(self) -> float:
        return self.qmlops.accuracy - self.vqc.accuracy

    def targets(self) -> dict[str, bool]:
        return {
            f"speed-up >= {TARGET_SPEEDUP:g}x": self.speedup >= TARGET_SPEEDUP,
            "accuracy >= VQC's": self.accuracy_gain >= 0,
            "1 job per evaluation": self.qmlops.jobs_per_evaluation == 1.0,
            f"overhead per iteration <= {TARGET_OVERHEAD:.0%}": self.qmlops.overhead <= TARGET_OVERHEAD,
        }


def compare(problem: Problem) -> Comparison:
    prepared = prepared_data(problem)
    vqc = run_vqc(problem)
    qmlops = run_qmlops(problem)
    return Comparison(problem, len(prepared.split.y_train), len(prepared.split.y_test), vqc, qmlops)


def format_comparison(c: Comparison) -> str:
    p = c.problem
    lines = [
        f"{p.title}: {c.train_rows} train / {c.test_rows} test rows, ZZFeatureMap(reps 1) + RealAmplitudes(reps 2), "
        f"COBYLA {p.evaluations} evaluations, {p.shots} shots, Aer",
        f"  {'':<22}{'wall s':>9}{'test acc':>10}{'jobs':>7}{'evals':>7}{'jobs/eval':>11}",
    ]
    for label, r in (("qiskit-ml VQC (Sampler)", c.vqc), ("qmlops (local:aer)", c.qmlops)):
        lines.append(
            f"  {label:<22}{r.seconds:>9.2f}{r.accuracy:>10.3f}{r.jobs:>7}{r.evaluations:>7}{r.jobs_per_evaluation:>11.2f}"
        )
    q = c.qmlops
    lines.append(
        f"  speed-up {c.speedup:.1f}x (VQC time / qmlops time); accuracy {c.accuracy_gain:+.3f}; "
        f"qmlops overhead per iteration {q.overhead:.1%} of primitive time (iterationSeconds "
        f"{q.iteration_seconds:.3f}, runSeconds {q.run_seconds:.3f}: "
        f"{(q.iteration_seconds - q.run_seconds) / max(q.evaluations, 1) * 1000:.2f} ms per iteration outside Aer)"
    )
    lines.append(
        f"  qmlops one-time setup {q.setup_seconds:.2f} s (data, circuit, transpilation, test job, artifact, "
        "first imports); included in its wall time above"
    )
    met = c.targets()
    lines.append("  targets: " + "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in met.items()))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: the least COBYLA budget per problem (weights + 2: 14 and 26 evaluations); a few minutes, "
        "nearly all of it VQC's",
    )
    parser.add_argument("--only", choices=[p.name for p in problems()], help="run one problem")
    args = parser.parse_args(argv)
    evaluations = QUICK_EVALUATIONS if args.quick else EVALUATIONS
    chosen = [p for p in problems(evaluations) if args.only in (None, p.name)]
    import qiskit
    import qiskit_aer
    import qiskit_machine_learning

    print(
        f"qiskit {qiskit.__version__}, qiskit-aer {qiskit_aer.__version__}, "
        f"qiskit-machine-learning {qiskit_machine_learning.__version__}" + (" (--quick)" if args.quick else "")
    )
    for problem in chosen:
        print()
        print(format_comparison(compare(problem)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
