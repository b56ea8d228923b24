"""Model versions: monotonic numbers and immutable manifests under a content digest.

``registry/<namespace>/<model>/versions/<N>.json`` holds the training artifact as the training engine
wrote it (circuit, weights, preprocessing, metrics, loss curve, lineage) together with where the spec
came from. The file's ``digest`` is taken over everything else in it; the ledger's ``registered``
entry repeats it, so a rewritten version shows up twice.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from controller.engine.errors import StallingError
from controller.engine.registry.canonical import digest_of, pretty_bytes

API_VERSION = "registry.qmlops.io/v1alpha1"
VERSION_KIND = "ModelVersion"
VERSIONS_DIR = "versions"
_VERSION_FILE = re.compile(r"^([1-9][0-9]*)\.json$")


class VersionError(ValueError, StallingError):
    """A version file that cannot be read or whose digest does not match."""


@dataclass(frozen=True)
class Provenance:
    """Where the spec that trained a version came from."""

    repository: str | None
    revision: str | None  # main@sha1:<sha>
    path: str | None
    author: str | None

    def to_json(self) -> dict[str, Any]:
        return {"repository": self.repository, "revision": self.revision, "path": self.path, "author": self.author}


@dataclass(frozen=True)
class Version:
    """One registered version, as read back from its manifest."""

    number: int
    manifest: dict[str, Any]

    @property
    def digest(self) -> str:
        return str(self.manifest["digest"])

    @property
    def artifact(self) -> dict[str, Any]:
        return dict(self.manifest.get("artifact") or {})

    @property
    def artifact_digest(self) -> str:
        return str(self.manifest.get("artifactDigest", ""))

    @property
    def spec_digest(self) -> str:
        return str(self.manifest.get("specDigest", ""))

    @property
    def dataset_digest(self) -> str:
        return str(self.manifest.get("datasetDigest", ""))

    @property
    def registered_at(self) -> str:
        return str(self.manifest.get("registeredAt", ""))

    @property
    def source(self) -> dict[str, Any]:
        return dict(self.manifest.get("source") or {})

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.artifact.get("metrics") or {})

    def scalar_metrics(self) -> dict[str, float]:
        """The metrics that are single numbers (the confusion matrix is not)."""
        return {k: float(v) for k, v in self.metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}

    @property
    def lineage(self) -> dict[str, Any]:
        return dict(self.artifact.get("lineage") or {})

    @property
    def backend(self) -> str | None:
        backend = self.lineage.get("backend") or self.artifact.get("backend")
        return str(backend) if backend else None

    @property
    def usage(self) -> dict[str, Any]:
        return dict(self.artifact.get("usage") or self.lineage.get("usage") or {})

    @property
    def pipeline(self) -> dict[str, Any] | None:
        """``{name, run, step, cell}`` of the pipeline run that trained it; None: the model's own spec did."""
        value = self.manifest.get("pipeline")
        return dict(value) if isinstance(value, dict) else None

    @property
    def loss_curve(self) -> list[float]:
        curve = self.artifact.get("lossCurve") or self.artifact.get("loss_curve") or []
        return [float(x) for x in curve if isinstance(x, int | float)]


def manifest(
    *,
    namespace: str,
    name: str,
    number: int,
    registered_at: str,
    source: Provenance,
    spec_digest: str,
    dataset_digest: str,
    artifact: dict[str, Any],
    artifact_digest: str,
    pipeline: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A version's manifest with its digest; ``pipeline``: the run, step and cell that trained it."""
    body: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": VERSION_KIND,
        "model": {"namespace": namespace, "name": name},
        "version": number,
        "registeredAt": registered_at,
        "source": source.to_json(),
        "specDigest": spec_digest,
        "datasetDigest": dataset_digest,
        "artifactDigest": artifact_digest,
        "artifact": artifact,
    }
    if pipeline is not None:
        body["pipeline"] = pipeline
    return {**body, "digest": digest_of(body)}


def computed_digest(data: dict[str, Any]) -> str:
    return digest_of({k: v for k, v in data.items() if k != "digest"})


def encode(data: dict[str, Any]) -> bytes:
    return pretty_bytes(data)


def decode(raw: bytes, where: str, *, strict: bool = True) -> Version:
    """A version read from its file, its digest checked (unless ``strict`` is False: the audit shows
    a rewritten version, and ``--verify`` says that it was rewritten)."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise VersionError(f"{where}: not a JSON version manifest ({err})") from None
    if not isinstance(data, dict) or data.get("kind") != VERSION_KIND or not isinstance(data.get("version"), int):
        raise VersionError(f"{where}: not a {VERSION_KIND} manifest")
    if strict and data.get("digest") != computed_digest(data):
        raise VersionError(f"{where}: content does not match its digest {str(data.get('digest'))[:19]}… (rewritten)")
    return Version(int(data["version"]), data)


def file_name(number: int) -> str:
    return f"{VERSIONS_DIR}/{number}.json"


def number_of(file: str) -> int | None:
    match = _VERSION_FILE.match(file.rsplit("/", 1)[-1])
    return int(match[1]) if match else None


def next_number(existing: list[int], registered: list[int]) -> int:
    """One above every version ever seen in the folder or the ledger: numbers are never reused."""
    return max([0, *existing, *registered]) + 1
