"""What ``qmlops train-job`` and ``qmlops evaluate-job`` share: the ConfigMap journal the operator
created for the work, read from inside the Job, and the one way either command runs there.

The operator created the ConfigMap (labelled with the work's key) and the Job; the command reads the
ConfigMap once, checks it is the work it was started for, does the work and leaves its result there
with the result's SHA-256 (or why it failed for good); the operator verifies the result and records
it. Nothing else is written: no Git, no status. The pod's service account may get and patch
ConfigMaps in its namespace, nothing more.

Exit codes, which the Job's pod failure policy reads: 0 done; 3 failed for good (the message is on
the ConfigMap; the Job fails rather than retrying); 1 anything else (the API or the node: the Job
retries in a new pod, from the checkpoint when the work keeps one).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_RETRY, EXIT_FAILED = 0, 1, 3


@dataclass(frozen=True)
class Layout:
    """Where one kind of work keeps its key, its result and its failure on the ConfigMap."""

    key_label: str
    result_key: str
    result_digest: str
    failure: str


class Journal:
    """The work's ConfigMap, from inside the Job: read once, then patched (checkpoint files as
    binaryData with their index, the result with its SHA-256, a failure)."""

    def __init__(self, namespace: str, name: str, layout: Layout) -> None:
        from controller import __version__
        from controller.operator.kube import KubeClient, load_access

        self.loop = asyncio.new_event_loop()
        self.client = KubeClient(load_access(), agent=f"qmlops-training/{__version__}")
        self.namespace, self.name, self.layout = namespace, name, layout
        self.kept: dict[str, str] = {}

    @property
    def path(self) -> str:
        from controller.operator.kube import resource_path

        return resource_path("v1", "configmaps", self.namespace, self.name)

    def call(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def read(self) -> dict[str, Any]:
        found: dict[str, Any] = self.call(self.client.get(self.path))
        return found

    def keep(self, folder: Path) -> None:
        """The checkpoint files under ``folder``, as far as they changed since last kept."""
        from controller.operator import checkpoints
        from controller.operator.kube import merge_diff

        data, index = checkpoints.encode(checkpoints.read_folder(folder))
        if data == self.kept:
            return
        patch = {
            "metadata": {"annotations": {checkpoints.FILES_ANNOTATION: json.dumps(index, sort_keys=True)}},
            "binaryData": merge_diff(self.kept, data),
        }
        self.call(self.client.merge_patch(self.path, patch))
        self.kept = data

    def deliver(self, raw: bytes) -> None:
        """The result, with its SHA-256 for the operator to check."""
        layout = self.layout
        patch = {
            "metadata": {"annotations": {layout.result_digest: hashlib.sha256(raw).hexdigest()}},
            "binaryData": {layout.result_key: base64.b64encode(raw).decode("ascii")},
        }
        self.call(self.client.merge_patch(self.path, patch))

    def fail(self, message: str) -> None:
        """Why the work failed for good (already scrubbed by the caller)."""
        self.call(self.client.merge_patch(self.path, {"metadata": {"annotations": {self.layout.failure: message}}}))

    def close(self) -> None:
        self.call(self.client.close())
        self.loop.close()


def run_in_job(
    namespace: str,
    configmap: str,
    layout: Layout,
    key: str,
    work: Callable[[Journal, dict[str, Any]], int],
    log: logging.Logger,
    what: str,
) -> int:
    """Open the journal, check it holds the work ``key`` names, and run ``work`` on it. An exception
    the work did not turn into a failure is the API's or the node's: exit 1 (retry in a new pod),
    logged by its class only, never a traceback or a message that could quote data."""
    journal: Journal | None = None
    try:
        journal = Journal(namespace, configmap, layout)
        found = journal.read()
        labels = (found.get("metadata") or {}).get("labels") or {}
        if labels.get(layout.key_label) != key:
            log.error("ConfigMap %s is not %s %s", configmap, what, key)
            return EXIT_FAILED
        return work(journal, found)
    except Exception as err:  # the API or the node: a new pod may do better
        log.error("%s not finished: %s", what, type(err).__name__)
        return EXIT_RETRY
    finally:
        if journal is not None:
            journal.close()
