"""``registry/<namespace>/<model>/model.yaml``: the readable summary of a model's registry.

Derived from the ledger and the version manifests (the sources of truth) after every decision, and
edited round-trip: comments and order that people add survive, only the values change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from controller.engine.decisions import LedgerKind
from controller.engine.registry import yamlio
from controller.engine.registry.ledger import Ledger
from controller.engine.registry.versions import API_VERSION, Version

INDEX_FILE = "model.yaml"
INDEX_KIND = "ModelIndex"


def header(namespace: str, name: str) -> str:
    return (
        f"# The registry of {namespace}/{name}, kept by qmlops from ledger.jsonl and versions/ (the sources of\n"
        "# truth, checked by `qmlops audit --verify`). Comments you add here are kept; values are rewritten.\n"
    )


def summary(namespace: str, name: str, ledger: Ledger, versions: list[Version]) -> dict[str, Any]:
    champion_entry = ledger.champion_entry()
    by_number = {v.number: v for v in versions}
    champion: dict[str, Any] | None = None
    if champion_entry is not None and champion_entry.version in by_number:
        version = by_number[champion_entry.version]
        champion = {
            "version": version.number,
            "digest": version.digest,
            "since": champion_entry.at,
            "decision": champion_entry.kind,
            "metrics": version.scalar_metrics(),
        }
    return {
        "apiVersion": API_VERSION,
        "kind": INDEX_KIND,
        "model": {"namespace": namespace, "name": name},
        "champion": champion,
        "latestVersion": max(by_number) if by_number else None,
        "ledger": {"entries": len(ledger.entries), "head": ledger.last.digest if ledger.last else None},
        "versions": [_version_row(v, ledger) for v in sorted(versions, key=lambda v: v.number)],
    }


def _version_row(version: Version, ledger: Ledger) -> dict[str, Any]:
    gate = ledger.gate_entry(version.number)
    gates = None if gate is None else ("passed" if gate.kind == LedgerKind.GATE_PASSED else "failed")
    approvers = sorted({str(e.data.get("approver")) for e in ledger.for_version(version.number, LedgerKind.APPROVED)})
    row: dict[str, Any] = {
        "version": version.number,
        "digest": version.digest,
        "registeredAt": version.registered_at,
        "backend": version.backend,
        "revision": version.source.get("revision"),
        "metrics": version.scalar_metrics(),
        "gates": gates,
        "approvedBy": approvers or None,
    }
    return row


def write(path: Path, namespace: str, name: str, data: dict[str, Any]) -> bool:
    """Bring ``path`` up to date with ``data`` round-trip; returns whether the file changed."""

    def change(documents: list[Any]) -> None:
        if not documents or not isinstance(documents[0], CommentedMap):
            documents[:] = [CommentedMap()]
        root = documents[0]
        rows = data["versions"]
        yamlio.update(root, {k: v for k, v in data.items() if k not in ("versions", "champion")})
        _set_or_clear(root, "champion", data["champion"])
        _update_rows(root, rows)

    return yamlio.edit_file(path, change, header=header(namespace, name))


def _set_or_clear(root: CommentedMap, key: str, value: dict[str, Any] | None) -> None:
    if value is None:
        root[key] = None
        return
    if not isinstance(root.get(key), CommentedMap):
        root[key] = CommentedMap()
    yamlio.update(root[key], value)
    for stale in [k for k in root[key] if k not in value]:
        del root[key][stale]


def _update_rows(root: CommentedMap, rows: list[dict[str, Any]]) -> None:
    """Update each version's row where it is; append rows for new versions (comments on old rows stay)."""
    if not isinstance(root.get("versions"), CommentedSeq):
        root["versions"] = CommentedSeq()
    existing = {item.get("version"): item for item in root["versions"] if isinstance(item, CommentedMap)}
    for row in rows:
        target = existing.get(row["version"])
        if target is None:
            target = CommentedMap()
            root["versions"].append(target)
        yamlio.update(target, row)
