"""``qmlops evaluate-job``: one evaluation of a pipeline's ``evaluate`` step inside the Job the
operator's jobs executor created.

The operator created the ConfigMap named on the command line (the resolved spec in ``spec.json``, the
version's artifact in ``version.json``, the version's digest, the backend and the shots in
``evaluation.json``, a ``fake:`` backend's repository calibrations; labelled with the model and the
evaluation key) and the Job running this command. It scores the version there, with the engine's
``evaluate``, and puts the result JSON (with the version it scored) there with its SHA-256; the
operator verifies it and records it. It writes nothing else: no Git, no status. Its service account
may get and patch ConfigMaps in its namespace (``train-job``'s Role); credentials come from the
mounted Secret (``QMLOPS_CREDENTIALS_DIR``). The journal and the exit codes are
``controller/cli/in_job.py``'s, shared with ``train-job``.

Exit 0 evaluated; 3 the evaluation failed for good (its message is on the ConfigMap; the Job's pod
failure policy fails the Job rather than retrying); 1 anything else (the Job retries in a new pod).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controller.cli.in_job import EXIT_FAILED, EXIT_OK, Journal, Layout, run_in_job

log = logging.getLogger("qmlops.evaluate-job")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "evaluate-job",
        help="run one evaluation of a pipeline inside a Kubernetes Job the operator created (its jobs executor)",
        description=(
            "Score the version held in ConfigMap NAME (namespace NS) for EVALUATION-KEY on the backend it names, "
            "and leave the result there for the operator to record. Exit 0 evaluated, 3 failed for good, "
            "1 retry in a new pod."
        ),
    )
    parser.add_argument("--namespace", required=True, metavar="NS")
    parser.add_argument("--configmap", required=True, metavar="NAME")
    parser.add_argument("--evaluation-key", required=True, metavar="EVALUATION-KEY")
    parser.set_defaults(handler=run)


def lay_out_calibrations(data: dict[str, str], folder: Path) -> Path | None:
    """The repository's calibrations the ConfigMap carries, as ``folder/calibrations/<file>``: the
    repository root a ``fake:`` backend reads them from (None: none carried)."""
    from controller.engine.containment import inside_work_tree
    from controller.operator import jobs

    carried = {k[len(jobs.CALIBRATION_PREFIX) :]: v for k, v in data.items() if k.startswith(jobs.CALIBRATION_PREFIX)}
    if not carried:
        return None
    for name, text in carried.items():
        target = inside_work_tree(folder, f"calibrations/{name}", symlinks=False)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return folder


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from controller.operator import jobs

    layout = Layout(jobs.EVALUATION_KEY_LABEL, jobs.RESULT_KEY, jobs.RESULT_DIGEST, jobs.EVALUATION_FAILURE)
    return run_in_job(args.namespace, args.configmap, layout, args.evaluation_key, _evaluate(args), log, "evaluation")


def _evaluate(args: argparse.Namespace) -> Callable[[Journal, dict[str, Any]], int]:
    def work(journal: Journal, configmap: dict[str, Any]) -> int:
        from controller.api.quantummodel import QuantumModelSpec
        from controller.engine import training
        from controller.engine.registry.canonical import canonical_bytes
        from controller.engine.status import describe_failure
        from controller.engine.text import scrub
        from controller.operator import jobs

        data: dict[str, str] = configmap.get("data") or {}
        try:
            spec = QuantumModelSpec.model_validate(json.loads(data[jobs.SPEC_KEY]))
            wanted: dict[str, Any] = json.loads(data[jobs.WANTED_KEY])
            artifact: dict[str, Any] = json.loads(data[jobs.VERSION_KEY])
            backend, shots = str(wanted["backend"]), wanted.get("shots")
        except (KeyError, ValueError) as err:  # pydantic's ValidationError is a ValueError
            journal.fail(f"ConfigMap {args.configmap} does not say what to evaluate: {type(err).__name__}")
            log.error("ConfigMap %s does not say what to evaluate", args.configmap)
            return EXIT_FAILED
        folder = Path(tempfile.gettempdir()) / "qmlops" / args.evaluation_key
        repo_root = lay_out_calibrations(data, folder / "repository")
        secret = spec.training.credentials_secret
        credentials = (lambda: training.local_credentials(args.namespace, secret)) if secret else None
        try:
            result = training.evaluate(
                artifact,
                spec,
                backend,
                shots=shots,
                repo_root=repo_root,
                credentials=credentials,
                budget_used_seconds=float(wanted.get("budgetUsedSeconds") or 0.0),
            )
        except (training.TrainingError, training.ArtifactError) as err:
            journal.fail(scrub(describe_failure(err)))
            log.error("evaluation failed: %s", scrub(describe_failure(err)))
            return EXIT_FAILED
        journal.deliver(canonical_bytes({**result.to_json(), "versionDigest": wanted.get("versionDigest")}))
        log.info("evaluated version %s on %s", wanted.get("version"), backend)
        return EXIT_OK

    return work
