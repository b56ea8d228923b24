"""Round-trip YAML: the controller's edits change values and nothing else people wrote."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml.comments import CommentedMap

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


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_a_file_edited_again_comes_out_as_if_it_had_been_read_again(name: str, tmp_path: Path) -> None:
    """A file this process wrote last is edited from the documents it dumped (not loaded again): the
    bytes are those of an edit that reads the file, edit after edit; a file changed meanwhile (a
    merge, a person) is read again."""
    kept, fresh = tmp_path / "kept.yaml", tmp_path / "fresh.yaml"
    kept.write_text(SAMPLES[name])

    def change(step: int) -> Callable[[list[Any]], None]:
        def apply(documents: list[Any]) -> None:
            if not documents or not isinstance(documents[-1], CommentedMap):
                documents.append(CommentedMap())
            yamlio.update(documents[-1], {"counter": step, "rows": [{"n": i} for i in range(step)]})

        return apply

    for step in range(4):
        text = kept.read_text()
        yamlio.edit_file(kept, change(step))
        fresh.write_text(text)
        expected = yamlio.edit_text(text, change(step))
        assert kept.read_text() == expected, step
    kept.write_text(kept.read_text().replace("counter: 3", "counter: 3  # someone's note"))
    yamlio.edit_file(kept, change(5))
    assert "# someone's note" in kept.read_text() and "counter: 5" in kept.read_text()


def test_a_file_this_process_wrote_last_is_not_parsed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.yaml"
    index.write(path, "demo", "m", index.summary("demo", "m", Ledger(), []))
    loads: list[str] = []
    real = yamlio.load_all
    monkeypatch.setattr(yamlio, "load_all", lambda text: loads.append(text) or real(text))
    entry = draft(None, at="2025-01-01T00:00:00Z", kind="blocked", model="demo/m", version=None, message="x")
    index.write(path, "demo", "m", index.summary("demo", "m", Ledger((entry,)), []))
    assert loads == []
    path.write_text(path.read_text() + "# a person's comment\n")  # changed since: read again
    index.write(path, "demo", "m", index.summary("demo", "m", Ledger(), []))
    assert len(loads) == 1
