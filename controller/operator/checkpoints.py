"""Training checkpoints kept where a new operator pod finds them: one ConfigMap per model.

The engine trains with its checkpoint in a local folder (``<checkpoint root>/<namespace>/<name>/``, one
sub-folder per training key, see ``controller.engine.reconcile.workspace``); a pod's disk goes with the
pod, so the model folder's files (every training's, under their relative paths) are copied into the ConfigMap
``qmlops-checkpoint-<name>`` as binaryData after every iteration, and copied back before training
resumes. The ConfigMap is owned by its QuantumModel, so deleting the model garbage-collects it, and a
model re-created under the same name never resumes another model's training.

The ConfigMap's own index of file digests only catches damage: whoever can write the ConfigMap can
write the index too. So each time the operator keeps a checkpoint it also records the checkpoint's
digest (over every file's path and SHA-256, the journal's included) in an annotation of the model,
``qmlops.io/checkpoint-digest``, which only the operator writes; a checkpoint whose files do not
match the digest recorded there is not restored (a warning says so), and the training starts from
this pod's own checkpoint, or afresh.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.api import GROUP
from controller.operator.kube import Conflict, KubeClient, NotFound, merge_diff, resource_path

log = logging.getLogger(__name__)

FILES_ANNOTATION = f"{GROUP}/checkpoint-files"
DIGEST_ANNOTATION = f"{GROUP}/checkpoint-digest"  # on the model: the operator's record of what it kept
# A ConfigMap holds at most 1 MiB; binaryData is base64, a third larger than the files.
MAX_BYTES = 700 * 1024
_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


class CheckpointTooLarge(Exception):
    pass


@dataclass(frozen=True)
class ModelRef:
    """The model a checkpoint belongs to, as its owner reference names it."""

    namespace: str
    name: str
    uid: str
    api_version: str = f"{GROUP}/v1alpha1"
    kind: str = "QuantumModel"

    @property
    def configmap(self) -> str:
        return f"qmlops-checkpoint-{self.name}"

    @property
    def path(self) -> str:
        return resource_path(self.api_version, "quantummodels", self.namespace, self.name)

    def owner_reference(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": False,
        }


def _key(relative: str) -> str:
    if _KEY.fullmatch(relative) and relative not in (".", ".."):
        return relative
    return "file-" + hashlib.sha256(relative.encode()).hexdigest()[:16]


def read_folder(folder: Path) -> dict[str, bytes]:
    if not folder.is_dir():
        return {}
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def encode(files: dict[str, bytes]) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """binaryData and the index (key -> path and digest) for a folder's files."""
    total = sum(len(b) for b in files.values())
    if total > MAX_BYTES:
        raise CheckpointTooLarge(f"checkpoint of {total} bytes exceeds the {MAX_BYTES} a ConfigMap can hold")
    data: dict[str, str] = {}
    index: dict[str, dict[str, str]] = {}
    for path, content in files.items():
        key = _key(path)
        data[key] = base64.b64encode(content).decode("ascii")
        index[key] = {"path": path, "sha256": hashlib.sha256(content).hexdigest()}
    return data, index


def digest(files: dict[str, bytes]) -> str:
    """The checkpoint's digest: every file's path and SHA-256, in path order."""
    listed = sorted((path, hashlib.sha256(content).hexdigest()) for path, content in files.items())
    return "sha256:" + hashlib.sha256(json.dumps(listed).encode()).hexdigest()


def recorded_digest(model: Mapping[str, Any]) -> str | None:
    """The checkpoint digest the operator recorded on the model (its annotation), if any."""
    value = ((model.get("metadata") or {}).get("annotations") or {}).get(DIGEST_ANNOTATION)
    return value if isinstance(value, str) else None


def decode(configmap: dict[str, Any]) -> dict[str, bytes] | None:
    """The files kept in a checkpoint ConfigMap; None when they do not match their index."""
    raw = (configmap.get("metadata", {}).get("annotations") or {}).get(FILES_ANNOTATION, "{}")
    index: dict[str, dict[str, str]] = json.loads(raw)
    data = configmap.get("binaryData") or {}
    files: dict[str, bytes] = {}
    for key, entry in index.items():
        content = base64.b64decode(data.get(key, ""))
        path = entry["path"]
        if (
            hashlib.sha256(content).hexdigest() != entry["sha256"]
            or ".." in Path(path).parts
            or Path(path).is_absolute()
        ):
            return None
        files[path] = content
    return files


MODEL_LABEL = f"{GROUP}/model"


class CheckpointStore:
    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self._saved: dict[str, dict[str, str]] = {}  # model uid -> binaryData last written
        self._recorded: dict[str, str] = {}  # model uid -> the digest last recorded on the model
        # (namespace, ConfigMap name) of the checkpoints there were when the operator started; None
        # when unknown. A model without one there has nothing to restore: no GET, no DELETE per model.
        self._found: set[tuple[str, str]] | None = None

    def _path(self, model: ModelRef, name: str | None = None) -> str:
        return resource_path("v1", "configmaps", model.namespace, name)

    async def index(self, namespaces: tuple[str, ...] = ()) -> int:
        """List the checkpoint ConfigMaps once, at startup (every namespace, or those watched); a
        failed list leaves the index unknown, and each model looks its own up."""
        found: set[tuple[str, str]] = set()
        for namespace in namespaces or (None,):
            path = resource_path("v1", "configmaps", namespace) + f"?labelSelector={MODEL_LABEL}"
            listed = await self.client.get(path)
            found |= {(i["metadata"]["namespace"], i["metadata"]["name"]) for i in listed.get("items") or ()}
        self._found = found
        return len(found)

    def _none_kept(self, model: ModelRef) -> bool:
        return self._found is not None and (model.namespace, model.configmap) not in self._found

    async def save(self, model: ModelRef, folder: Path) -> bool:
        """Copy the folder into the model's ConfigMap (removing it when the folder is empty); False when
        nothing had to be written."""
        files = read_folder(folder)
        if not files:
            return await self.discard(model)
        data, index = encode(files)
        if self._saved.get(model.uid) == data:
            return False
        meta = {"annotations": {FILES_ANNOTATION: json.dumps(index, sort_keys=True)}}
        before = self._saved.get(model.uid)
        try:
            if before is None:
                await self._create(model, data, meta)
            else:
                patch = {"metadata": meta, "binaryData": merge_diff(before, data)}
                await self.client.merge_patch(self._path(model, model.configmap), patch)
        except NotFound:
            await self._create(model, data, meta)
        self._saved[model.uid] = data
        await self._record(model, digest(files))
        return True

    async def _record(self, model: ModelRef, value: str) -> None:
        """The digest of what was kept, on the model (after the ConfigMap: a pod stopped in between
        leaves a ConfigMap that does not match, which is ignored, never one trusted unchecked)."""
        if self._recorded.get(model.uid) == value:
            return
        await self.client.merge_patch(model.path, {"metadata": {"annotations": {DIGEST_ANNOTATION: value}}})
        self._recorded[model.uid] = value

    async def _create(self, model: ModelRef, data: dict[str, str], meta: dict[str, Any]) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": model.configmap,
                "namespace": model.namespace,
                "labels": {"app.kubernetes.io/managed-by": "qmlops", MODEL_LABEL: model.name},
                "ownerReferences": [model.owner_reference()],
                **meta,
            },
            "binaryData": data,
        }
        try:
            await self.client.create(self._path(model), body)
        except Conflict:  # left by an earlier pod: take it over with this checkpoint
            await self.client.merge_patch(self._path(model, model.configmap), {"metadata": meta, "binaryData": data})

    async def restore(self, model: ModelRef, folder: Path, recorded: str | None) -> int:
        """Replace the local folder with the kept checkpoint, when its files match ``recorded``, the
        digest the operator recorded on the model; the number of files restored."""
        if self._none_kept(model) and model.uid not in self._saved:
            return 0
        try:
            configmap = await self.client.get(self._path(model, model.configmap))
        except NotFound:
            return 0
        owners = {ref.get("uid") for ref in configmap.get("metadata", {}).get("ownerReferences") or ()}
        files = decode(configmap) if model.uid in owners else None
        if not files:
            log.warning(
                "checkpoint %s/%s is not this model's or is damaged: not restored", model.namespace, model.configmap
            )
            return 0
        if recorded is None or digest(files) != recorded:
            log.warning(
                "checkpoint %s/%s does not match the digest the operator recorded on its model: ignored",
                model.namespace,
                model.configmap,
            )
            return 0
        if folder.exists():
            shutil.rmtree(folder)
        for path, content in files.items():
            target = folder / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        self._saved[model.uid] = encode(files)[0]
        self._recorded[model.uid] = recorded
        return len(files)

    async def discard(self, model: ModelRef) -> bool:
        if self._saved.get(model.uid) == {} or (self._none_kept(model) and model.uid not in self._saved):
            self._saved[model.uid] = {}
            return False
        with contextlib.suppress(NotFound):
            await self.client.delete(self._path(model, model.configmap))
        self._saved[model.uid] = {}
        return True

    def forget(self, model: ModelRef) -> None:
        self._saved.pop(model.uid, None)
        self._recorded.pop(model.uid, None)
