"""Round-trip YAML: the controller's edits change values and nothing else people wrote."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controller.engine.registry import index, yamlio
from controller.engine.registry.ledger import Ledger, draft

SAMPLES = {
    "comments and blank lines": """\
# head comment

a: 1  # trailing comment

# a comment before b
b: two
""",
    "block scalars": """\
literal: |
  line one
    indented line
  line three
folded: >-
  folded text
  continues here
keep: |+
  kept

after: 1
""",
    "anchors and aliases": """\
base: &base
  x: 1
  y: [1, 2]
copy: *base
merged:
  <<: *base
  z: 3
""",
    "document markers": """\
---
# first document
a: 1
---
b: 2
""",
    "document end markers": """\
---
a: 1
...
---
b: 2
...
""",
    "indented sequences and quotes": """\
items:
  - name: 'single'
    value: "double"
  - plain
wide:
    nested:
        deeper: true
""",
    "flow style": """\
flow: {a: 1, b: [x, y]}
empty: []
none:
""",
}


@pytest.mark.parametrize("text", SAMPLES.values(), ids=SAMPLES.keys())
def test_unchanged_documents_come_back_byte_for_byte(text: str) -> None:
    assert yamlio.roundtrip(text) == text


def _changed_lines(before: str, after: str) -> list[str]:
    return [
        line
        for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def test_an_edit_changes_only_the_value_it_sets() -> None:
    text = """\
# kept by hand
champion:
  version: 1   # pinned after incident 42
  digest: sha256:abc

# history
notes: |
  first line
  second line
anchor: &a {x: 1}
alias: *a
"""

    def change(documents: list[object]) -> None:
        yamlio.update(documents[0], {"champion": {"version": 2}})  # type: ignore[arg-type]

    after = yamlio.edit_text(text, change)
    assert _changed_lines(text, after) == [
        "-  version: 1   # pinned after incident 42",
        "+  version: 2   # pinned after incident 42",
    ]


def test_edit_of_a_later_document_keeps_the_others() -> None:
    text = SAMPLES["document markers"]

    def change(documents: list[object]) -> None:
        yamlio.update(documents[1], {"b": 3, "c": "new"})  # type: ignore[arg-type]

    after = yamlio.edit_text(text, change)
    assert after == "---\n# first document\na: 1\n---\nb: 3\nc: new\n"


def test_a_no_op_edit_leaves_the_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text(SAMPLES["comments and blank lines"])
    stamp = path.stat().st_mtime_ns
    assert not yamlio.edit_file(path, lambda docs: yamlio.update(docs[0], {"a": 1}))  # type: ignore[arg-type]
    assert path.stat().st_mtime_ns == stamp


def test_model_index_keeps_comments_people_added(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    ledger = Ledger()
    first = index.summary("demo", "m", ledger, [])
    index.write(path, "demo", "m", first)
    text = path.read_text()
    assert text.startswith("# The registry of demo/m")
    annotated = text.replace("kind: ModelIndex\n", "kind: ModelIndex\n\n# Reviewed by the audit team, 2025-Q1.\n")
    path.write_text(annotated)
    entry = draft(None, at="2025-01-01T00:00:00Z", kind="blocked", model="demo/m", version=None, message="x")
    index.write(path, "demo", "m", index.summary("demo", "m", Ledger((entry,)), []))
    after = path.read_text()
    assert "# Reviewed by the audit team, 2025-Q1.\n" in after
    changed = _changed_lines(annotated, after)
    assert all("entries" in line or "head" in line for line in changed), changed


def test_an_untouched_model_index_is_rewritten_in_canonical_form_without_the_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model.yaml"
    entries: list[Any] = []
    for at in ("2025-01-01T00:00:00Z", "2025-01-01T00:00:01Z"):
        entries.append(
            draft(entries[-1] if entries else None, at=at, kind="blocked", model="demo/m", version=None, message="x")
        )
        index.write(path, "demo", "m", index.summary("demo", "m", Ledger(tuple(entries)), []))
        assert index.is_canonical(path.read_text(), "demo", "m")

    def no_round_trip(*_: Any, **__: Any) -> bool:
        raise AssertionError("an untouched model.yaml was parsed round-trip")

    monkeypatch.setattr(yamlio, "edit_file", no_round_trip)
    entries.append(
        draft(entries[-1], at="2025-01-01T00:00:02Z", kind="blocked", model="demo/m", version=None, message="y")
    )
    assert index.write(path, "demo", "m", index.summary("demo", "m", Ledger(tuple(entries)), []))
    assert not index.write(path, "demo", "m", index.summary("demo", "m", Ledger(tuple(entries)), [])), "nothing new"
    text = path.read_text()
    assert "entries: 3" in text and text.startswith(index.header("demo", "m"))


@pytest.mark.parametrize(
    "change",
    [
        lambda text: text.replace("kind: ModelIndex\n", "kind: ModelIndex  # ours\n"),  # a comment
        lambda text: text.replace("kind: ModelIndex\n", "kind: 'ModelIndex'\n"),  # a quote
        lambda text: text + "extra: &a [1]\nmore: *a\n",  # an alias: never expanded to find out
    ],
)
def test_a_model_index_people_changed_is_not_canonical(tmp_path: Path, change: Callable[[str], str]) -> None:
    path = tmp_path / "model.yaml"
    index.write(path, "demo", "m", index.summary("demo", "m", Ledger(), []))
    assert index.is_canonical(path.read_text(), "demo", "m")
    assert not index.is_canonical(change(path.read_text()), "demo", "m")


def _summary_with_rows(count: int) -> dict[str, Any]:
    rows = [
        {
            "version": n,
            "digest": f"sha256:{n:064x}",
            "registeredAt": f"2025-01-01T00:00:{n:02d}Z",
            "backend": "local:statevector",
            "revision": None if n % 2 else f"main@sha1:{n:040x}",
            "metrics": {"accuracy": 0.5 + n / 100, "loss": 1.0 / n},
            "gates": "passed" if n % 3 == 0 else None,
            "approvedBy": ["alice@example.com", "bob: the 'reviewer'"] if n == 2 else None,
        }
        for n in range(1, count + 1)
    ]
    summary = index.summary("demo", "m", Ledger(), [])
    summary["versions"] = rows
    summary["champion"] = {"version": 2, "digest": f"sha256:{2:064x}", "metrics": {"accuracy": 0.52}}
    summary["retiredVersions"] = [1]
    return summary


def test_a_model_index_rendered_row_by_row_is_the_whole_documents_canonical_form() -> None:
    import yaml

    for count in (0, 1, 5):
        summary = _summary_with_rows(count)
        whole = yaml.dump(
            summary,
            Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper),
            sort_keys=False,
            default_flow_style=False,
            width=4096,
            allow_unicode=True,
        ).replace(": null\n", ":\n")
        assert index.render("demo", "m", summary) == index.header("demo", "m") + whole
        assert index.render("demo", "m", summary) == index.render("demo", "m", summary), "rows remembered alike"


def test_a_model_index_this_process_wrote_last_is_not_parsed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model.yaml"
    entries: list[Any] = [
        draft(None, at="2025-01-01T00:00:00Z", kind="blocked", model="demo/m", version=None, message="x")
    ]
    assert index.write(path, "demo", "m", index.summary("demo", "m", Ledger(tuple(entries)), []))

    def no_parse(*_: Any, **__: Any) -> Any:
        raise AssertionError("the file this process wrote was parsed again")

    monkeypatch.setattr(index.yaml, "load", no_parse)
    entries.append(
        draft(entries[-1], at="2025-01-01T00:00:01Z", kind="blocked", model="demo/m", version=None, message="y")
    )
    assert index.write(path, "demo", "m", index.summary("demo", "m", Ledger(tuple(entries)), []))
    assert "entries: 2" in path.read_text()
    monkeypatch.undo()
    path.write_text(path.read_text().replace("kind: ModelIndex\n", "kind: ModelIndex  # ours\n"))  # a person's
    entries.append(
        draft(entries[-1], at="2025-01-01T00:00:02Z", kind="blocked", model="demo/m", version=None, message="z")
    )
    assert index.write(path, "demo", "m", index.summary("demo", "m", Ledger(tuple(entries)), []))
    assert "kind: ModelIndex  # ours\n" in path.read_text() and "entries: 3" in path.read_text()


def test_a_model_index_with_versions_is_written_in_its_canonical_form(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "model.yaml"
    summary = _summary_with_rows(4)
    assert index.write(path, "demo", "m", summary)
    text = path.read_text()
    assert index.is_canonical(text, "demo", "m"), "what is written is the canonical form of what it says"
    rows = yaml.safe_load(text)["versions"]
    assert [row["version"] for row in rows] == [1, 2, 3, 4]
    assert "revision" not in rows[0] and "gates" not in rows[0] and rows[2]["gates"] == "passed"
    assert rows[1]["approvedBy"] == ["alice@example.com", "bob: the 'reviewer'"]
    assert not index.write(path, "demo", "m", summary), "nothing new"
    summary["versions"][0]["gates"] = "failed"
    assert index.write(path, "demo", "m", summary)
    assert yaml.safe_load(path.read_text())["versions"][0]["gates"] == "failed", "a changed row is written again"
