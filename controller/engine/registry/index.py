"""``registry/<namespace>/<model>/model.yaml``: the readable summary of a model's registry.

Derived from the ledger and the version manifests (the sources of truth) after every decision, and
edited round-trip: comments and order that people add survive, only the values change.

A file nobody added anything to is exactly its canonical form (the header and the summary in one
fixed style); it is then written again in canonical form with libyaml, without the pure-Python
round-trip parse (most of a decision's cost on a model with many versions). A file people changed is
not canonical and is edited round-trip, as always. A file that holds exactly what this process wrote
there last is known to be canonical without being parsed at all, and a version's row, which rarely
changes once written, is rendered once per content (a decision on a model with many versions renders
the row that changed).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from controller.engine.decisions import LedgerKind
from controller.engine.memo import Memo
from controller.engine.registry import yamlio
from controller.engine.registry.ledger import Ledger
from controller.engine.registry.versions import API_VERSION, Version
from controller.engine.registry.yamlio import write_atomic

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
    out: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": INDEX_KIND,
        "model": {"namespace": namespace, "name": name},
        "champion": champion,
        "latestVersion": max(by_number) if by_number else None,
        "ledger": {"entries": len(ledger.entries), "head": ledger.last.digest if ledger.last else None},
        "versions": [_version_row(v, ledger) for v in sorted(versions, key=lambda v: v.number)],
    }
    retired = ledger.retired()
    if retired:  # retention.maxVersions: their files left HEAD, the ledger and history keep them
        out["retiredVersions"] = sorted(retired)
    return out


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


CANONICAL_LIMIT = 4 * 1024 * 1024  # a larger model.yaml is edited round-trip, never parsed twice
WRITTEN_LIMIT = 10_000  # model.yaml files whose last canonical text this process remembers
ROWS_LIMIT = 100_000  # version rows whose rendering this process remembers


class _Written:
    """The canonical text this process last wrote (or found) at each path: a file that still holds
    exactly it is canonical without a parse. Bounded; shared by the threads (each writes its own work
    tree's files)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._texts: dict[str, str] = {}
        self._lock = threading.Lock()

    def holds(self, path: Path, text: str) -> bool:
        with self._lock:
            return self._texts.get(str(path)) == text

    def note(self, path: Path, text: str | None) -> None:
        with self._lock:
            if text is None:
                self._texts.pop(str(path), None)
                return
            if len(self._texts) >= self.limit:
                self._texts.clear()
            self._texts[str(path)] = text


_WRITTEN = _Written(WRITTEN_LIMIT)
_ROWS: Memo[str] = Memo(ROWS_LIMIT)  # a plain row -> its text
_DATA_ROWS: Memo[str] = Memo(ROWS_LIMIT)  # a summary's row -> the text of what the edit makes of it


def write(path: Path, namespace: str, name: str, data: dict[str, Any]) -> bool:
    """Bring ``path`` up to date with ``data``: in canonical form when the file is missing or nobody
    changed it, round-trip otherwise; returns whether the file changed."""

    def change(documents: list[Any]) -> None:
        if not documents or not isinstance(documents[0], CommentedMap):
            documents[:] = [CommentedMap()]
        root = documents[0]
        rows = data["versions"]
        yamlio.update(root, {k: v for k, v in data.items() if k not in ("versions", "champion")})
        _set_or_clear(root, "champion", data["champion"])
        _update_rows(root, rows)

    before = path.read_text(encoding="utf-8") if path.exists() else ""
    if not before.strip() or _WRITTEN.holds(path, before) or is_canonical(before, namespace, name):
        text = _canonical(namespace, name, data)  # the very edit, applied to an empty file
        if text != before:
            write_atomic(path, text.encode("utf-8"))
        _WRITTEN.note(path, text)
        return text != before
    _WRITTEN.note(path, None)
    return yamlio.edit_file(path, change, header=header(namespace, name))


def _canonical(namespace: str, name: str, data: dict[str, Any]) -> str:
    """``render`` of what ``write``'s edit makes of an empty file: the summary's keys, then the champion,
    then the version rows (a key whose value is None left out, in the summary and in each row, as the
    round-trip edit leaves it out); each row made and rendered once per content."""
    root = CommentedMap()
    yamlio.update(root, {k: v for k, v in data.items() if k not in ("versions", "champion")})
    _set_or_clear(root, "champion", data["champion"])
    head = _plain(root)
    rows = [_fresh_row(row) for row in data["versions"]]
    if not rows or not all(rows):
        fresh = [CommentedMap()]
        yamlio.update(fresh[0], {k: v for k, v in data.items() if k not in ("versions", "champion")})
        _set_or_clear(fresh[0], "champion", data["champion"])
        _update_rows(fresh[0], data["versions"])
        return render(namespace, name, _plain(fresh[0]))
    return header(namespace, name) + _dump(head) + "versions:\n" + "".join(rows)


def _fresh_row(row: dict[str, Any]) -> str:
    """A version's row as the round-trip edit writes it into an empty file (None values left out),
    rendered as an item of the ``versions`` sequence; "" for a row with nothing to write."""

    def make() -> str:
        target = CommentedMap()
        yamlio.update(target, row)
        plain = _plain(target)
        return _dump([plain]) if plain else ""

    try:
        key = json.dumps(row)
    except (TypeError, ValueError):  # not plain data: made every time
        return make()
    return _DATA_ROWS.get(key, make)


def render(namespace: str, name: str, summary: dict[str, Any]) -> str:
    """The canonical model.yaml of ``summary`` (plain values): the header, then block style, keys in
    their order, nothing wrapped. The ``versions`` rows are rendered one by one (each as an item of
    a block sequence, which is how the whole document writes it) and remembered by content."""
    rows = summary.get("versions")
    if not isinstance(rows, list) or not rows or not all(isinstance(row, dict) and row for row in rows):
        return header(namespace, name) + _dump(summary)
    keys = list(summary)
    at = keys.index("versions")
    before = {k: summary[k] for k in keys[:at]}
    after = {k: summary[k] for k in keys[at + 1 :]}
    parts = [header(namespace, name), _dump(before) if before else "", "versions:\n"]
    parts += [_row(row) for row in rows]
    parts.append(_dump(after) if after else "")
    return "".join(parts)


def _row(row: dict[str, Any]) -> str:
    return _ROWS.get(json.dumps(row), lambda: _dump([row]))


def _dump(value: Any) -> str:
    return yaml.dump(value, Dumper=_DUMPER, sort_keys=False, default_flow_style=False, width=4096, allow_unicode=True)


def is_canonical(text: str, namespace: str, name: str) -> bool:
    """Whether ``text`` is exactly the canonical form of what it says (nobody added a comment, moved a
    key or changed a quote). Anchors and aliases never are (nothing is expanded to find out)."""
    if len(text) > CANONICAL_LIMIT or "&" in text or "*" in text or not text.startswith(header(namespace, name)):
        return False
    try:
        summary = yaml.load(text, Loader=_LOADER)  # a safe loader (libyaml's when built)
    except yaml.YAMLError:
        return False
    return isinstance(summary, dict) and render(namespace, name, summary) == text


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """libyaml's safe dumper writing None as the round-trip editor does: nothing (``champion:``)."""


_Dumper.add_representer(type(None), lambda dumper, _: dumper.represent_scalar("tag:yaml.org,2002:null", ""))
_DUMPER = _Dumper
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _plain(value: Any) -> Any:
    """Round-trip objects as plain values (a ruamel scalar subclass as its base type)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return value


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
