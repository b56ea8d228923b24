"""``qmlops train-job``: one training inside the Job the operator's jobs executor created.

The operator created the ConfigMap named on the command line (the resolved spec in ``spec.json``,
labelled with the model and the training key) and the Job running this command. It reads the spec
from there, restores the checkpoint an earlier pod of the same Job kept there, trains (keeping the
checkpoint there after every iteration), and puts the artifact there with its SHA-256; the operator
verifies it and registers it. It writes nothing else: no Git, no status. Its service account may get
and patch ConfigMaps in its namespace, nothing more; credentials come from the mounted Secret
(``QMLOPS_CREDENTIALS_DIR``). The journal and the exit codes are ``controller/cli/in_job.py``'s,
shared with ``evaluate-job``.

Exit 0 trained; 3 the training failed for good (its message is on the ConfigMap; the Job's pod failure
policy fails the Job rather than retrying); 1 anything else (the Job retries in a new pod, from the
checkpoint, up to its backoffLimit).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controller.cli.in_job import EXIT_FAILED, EXIT_OK, Journal, Layout, run_in_job

log = logging.getLogger("qmlops.train-job")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "train-job",
        help="run one training inside a Kubernetes Job the operator created (its jobs executor)",
        description=(
            "Train the spec held in ConfigMap NAME (namespace NS) for TRAINING-KEY, resuming from and keeping "
            "the checkpoint in that ConfigMap, and leave the artifact there for the operator to register. "
            "Exit 0 trained, 3 failed for good, 1 retry in a new pod."
        ),
    )
    parser.add_argument("--namespace", required=True, metavar="NS")
    parser.add_argument("--configmap", required=True, metavar="NAME")
    parser.add_argument("--training-key", required=True, metavar="TRAINING-KEY")
    parser.set_defaults(handler=run)


def restore(configmap: dict[str, Any], folder: Path) -> tuple[int, dict[str, str]]:
    """The checkpoint files an earlier pod kept, written under ``folder`` (damaged ones: none)."""
    from controller.operator import checkpoints

    files = checkpoints.decode(configmap) or {}
    for path, content in files.items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return len(files), checkpoints.encode(files)[0] if files else {}


def lay_out_dataset(configmap: dict[str, Any], spec: Any, repo_root: Path) -> str | None:
    """A ``file:`` dataset from the ConfigMap, written at its path under ``repo_root`` and checked
    against the dataset digest the operator computed; the problem, naming the file, when it is not."""
    from controller.engine import training
    from controller.engine.containment import OutsideWorkTree, inside_work_tree
    from controller.operator import jobs

    source = spec.dataset.source
    data = configmap.get("data") or {}
    encoded = (configmap.get("binaryData") or {}).get(jobs.DATASET_KEY)
    if not encoded or data.get(jobs.DATASET_PATH_KEY) != source.removeprefix("file:"):
        return f"dataset.source: {source} is not in ConfigMap {configmap.get('metadata', {}).get('name')}"
    if len(encoded) > (jobs.MAX_JOB_DATASET_BYTES * 4) // 3 + 4:
        return f"dataset.source: {source} is over {jobs.MAX_JOB_DATASET_BYTES // 1024} KiB"
    try:
        target = inside_work_tree(repo_root, source.removeprefix("file:"), symlinks=False)
    except OutsideWorkTree as err:
        return f"dataset.source: {source} {err.reason}"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(base64.b64decode(encoded))
    try:
        digest = training.dataset_digest(spec, repo_root)
    except training.TrainingError as err:
        return str(err)
    if digest != data.get(jobs.DATASET_DIGEST_KEY):
        return f"dataset.source: {source} in the ConfigMap does not match the training's dataset digest"
    return None


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from controller.operator import jobs

    layout = Layout(jobs.KEY_LABEL, jobs.ARTIFACT_KEY, jobs.ARTIFACT_DIGEST, jobs.FAILURE)
    return run_in_job(args.namespace, args.configmap, layout, args.training_key, _train(args), log, "training")


def _train(args: argparse.Namespace) -> Callable[[Journal, dict[str, Any]], int]:
    def work(journal: Journal, configmap: dict[str, Any]) -> int:
        from controller.api.quantummodel import QuantumModelSpec
        from controller.engine import training
        from controller.engine.status import describe_failure
        from controller.engine.text import scrub
        from controller.operator import checkpoints, jobs

        try:
            spec = QuantumModelSpec.model_validate(json.loads((configmap.get("data") or {})[jobs.SPEC_KEY]))
        except (KeyError, ValueError) as err:  # pydantic's ValidationError is a ValueError
            journal.fail(f"ConfigMap {args.configmap} does not say what to train: {type(err).__name__}")
            log.error("ConfigMap %s does not say what to train", args.configmap)
            return EXIT_FAILED  # another pod would read the same ConfigMap
        folder = Path(tempfile.gettempdir()) / "qmlops" / args.training_key
        repo_root = None
        if spec.dataset.source.startswith("file:"):
            repo_root = folder.parent / f"{args.training_key}-data"
            problem = lay_out_dataset(configmap, spec, repo_root)
            if problem:
                journal.fail(problem)
                log.error("training failed: %s", problem)
                return EXIT_FAILED
        restored, journal.kept = restore(configmap, folder)
        if restored:
            log.info("resuming from the checkpoint kept in ConfigMap %s (%d files)", args.configmap, restored)
        secret = spec.training.credentials_secret
        credentials = (lambda: training.local_credentials(args.namespace, secret)) if secret else None

        def progress(step: Any) -> None:
            try:
                journal.keep(folder)
            except Exception as err:  # the training goes on; a later iteration keeps it
                log.warning("checkpoint not kept: %s", type(err).__name__)
            log.info("iteration %s of %s", step.iteration, step.max_iterations)

        try:
            artifact = training.train(
                spec, repo_root=repo_root, checkpoint_dir=folder, credentials=credentials, on_progress=progress
            )
        except training.TrainingError as err:
            journal.fail(scrub(describe_failure(err)))
            log.error("training failed: %s", scrub(describe_failure(err)))
            return EXIT_FAILED
        try:
            journal.keep(folder)  # a checkpoint too large for a ConfigMap is not kept; the artifact is
        except checkpoints.CheckpointTooLarge as err:
            log.warning("checkpoint not kept: %s", err)
        journal.deliver(artifact.to_json())
        log.info("trained: artifact %s", artifact.digest)
        return EXIT_OK

    return work
