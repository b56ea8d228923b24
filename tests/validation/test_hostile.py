"""Hostile and broken input is refused with a clear message naming the file and line, exit code 2, and
never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controller.engine.documents import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES, load_text
from tests.validation.cli import qmlops, write

BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8)
)

HOSTILE: list[tuple[str, str | bytes, str]] = [
    ("empty", "", "1:1: file is empty: expected a YAML document with apiVersion and kind"),
    ("blank", "\n   \n\n", "1:1: file is empty: expected a YAML document with apiVersion and kind"),
    ("comments", "# nothing\n---\n...\n", "1:1: file is empty: it holds no YAML document, only comments or separators"),
    ("binary", b"kind: x\x00\x01\x02", "1:8: binary file (contains NUL bytes): a spec is UTF-8 YAML text"),
    ("utf16", "kind: x\n".encode("utf-16"), "binary file (contains NUL bytes)"),
    ("latin1", b"kind: Qu\xe4ntum\n", "1:9: not UTF-8 text: a spec is UTF-8 YAML text"),
    ("tab", "apiVersion: qmlops.io/v1alpha1\nmetadata:\n\tname: x\n", "3:1: tab character used for indentation"),
    ("tab2", "a:\n  b: 1\n  \tc: 2\n", "tab character used for indentation"),
    ("tab-separator", "kind:\tQuantumModel\n", "1:6: tab character where YAML expects spaces"),
    ("duplicate", "kind: QuantumModel\nspec:\n  owner: a@b.co\n  owner: c@d.co\n", "4:3: duplicate key 'owner'"),
    ("duplicate-flow", "kind: QuantumModel\nspec: {owner: a@b.co, owner: c@d.co}\n", "2:23: duplicate key 'owner'"),
    ("duplicate-quoted", "1: a\n'1': b\n", "2:1: duplicate key '1': written twice, once quoted and once not"),
    ("bomb", BOMB, f"document expands to more than {MAX_NODES} nodes (an alias expansion bomb?)"),
    ("recursive", "a: &a [1, *a]\n", "kind: required field is missing"),
    ("flood", "a: [" + ",".join(["1"] * (MAX_NODES + 10)) + "]\n", f"more than {MAX_NODES} YAML nodes"),
    # refused by a linear pass at the bracket that went too deep, before the parser (6 s at 5,000 before)
    ("deep-flow", "a: " + "[" * 5000 + "]" * 5000 + "\n", "1:204: nested too deeply"),
    ("deep", "a: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n", f"nested more than {MAX_DEPTH} levels deep"),
    ("python-tag", "kind: !!python/object/apply:os.system ['ls']\n", "1:7: YAML tag !!python/object/apply:os.system"),
    ("custom-tag", "kind: !Ref Model\n", "1:7: YAML tag !Ref is not allowed"),
    ("binary-tag", "kind: !!binary aGVsbG8=\n", "1:7: binary data (!!binary) is not allowed"),
    ("set", "kind: !!set {a, b}\n", "1:7: a set (!!set) is not allowed"),
    ("syntax", "kind: QuantumModel\n  spec: x\n", "2:7: not valid YAML: mapping values are not allowed here"),
    ("unclosed", "kind: [QuantumModel\n", "not valid YAML: expected ',' or ']'"),
    ("alias", "kind: *nowhere\n", "1:7: not valid YAML: found undefined alias 'nowhere'"),
    ("control", "kind: a\x07b\n", "1:8: contains the control character U+0007, which YAML does not allow"),
    ("bigint", "a: " + "9" * 5000 + "\n", "a value cannot be read: Exceeds the limit (4300 digits)"),
    ("complex-key", "? [a, b]\n: c\n", "a mapping key must be a plain scalar"),
    ("many-documents", "a: 1\n---\n" * 1001, "more than 1000 YAML documents in one file"),
]


@pytest.mark.parametrize(("name", "content", "message"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_input_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: str | bytes, message: str
) -> None:
    spec = write(tmp_path, f"{name}.yaml", content)
    result = qmlops(capsys, "validate", str(spec))
    assert message in result.out
    assert result.out.startswith(f"{spec}:")
    assert "Traceback" not in result.out + result.err
    assert result.code == (1 if name == "recursive" else 2)


def test_an_oversized_file_is_not_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write(tmp_path, "big.yaml", "a: " + "x" * MAX_FILE_BYTES + "\n")
    result = qmlops(capsys, "validate", str(spec))
    assert result.lines == [
        f"{spec}:1:1: file is {MAX_FILE_BYTES + 4} bytes; spec files are limited to {MAX_FILE_BYTES} bytes"
    ]
    assert result.code == 2


def test_paths_that_cannot_be_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    os.mkfifo(tmp_path / "fifo.yaml")
    os.symlink(tmp_path / "gone.yaml", tmp_path / "dangling.yaml")
    result = qmlops(
        capsys, "validate", str(tmp_path / "missing.yaml"), str(tmp_path / "fifo.yaml"), str(tmp_path / "dangling.yaml")
    )
    assert result.code == 2
    assert result.lines == [
        f"{tmp_path}/dangling.yaml:1:1: cannot read: No such file or directory",
        f"{tmp_path}/fifo.yaml:1:1: not a regular file",
        f"{tmp_path}/missing.yaml:1:1: no such file or directory",
    ]


def test_unusable_input_wins_over_violations_and_the_rest_is_still_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, "a.yaml", b"\x00")
    write(tmp_path, "b.yaml", "apiVersion: qmlops.io/v1alpha1\nkind: QuantumModel\nmetadata: {name: b}\n")
    result = qmlops(capsys, "validate", str(tmp_path))
    assert result.code == 2
    assert result.lines == [
        f"{tmp_path}/a.yaml:1:1: binary file (contains NUL bytes): a spec is UTF-8 YAML text",
        f"{tmp_path}/b.yaml:1:1: spec: required field is missing",
    ]
    assert "1 unusable input" in result.err


def test_a_byte_order_mark_and_windows_line_ends_are_fine() -> None:
    documents, problems = load_text("x.yaml", "\ufeffkind: QuantumModel\r\nspec:\r\n  a: 1\r\n")
    assert problems == []
    assert documents[0].data == {"kind": "QuantumModel", "spec": {"a": 1}}
    assert documents[0].position(("spec", "a")) == (3, 6)


def test_aliases_and_merge_keys_within_limits_are_expanded() -> None:
    documents, problems = load_text("x.yaml", "base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\nagain: *b\n")
    assert problems == []
    assert documents[0].data == {"base": {"x": 1, "y": 2}, "use": {"y": 3, "x": 1}, "again": {"x": 1, "y": 2}}


def test_scalars_become_plain_values() -> None:
    text = "a: 0x10\nb: 1_000\nc: 1.5\nd: ~\ne: 'q'\nf: |\n  z\ng: 2024-01-02\nh: !!str 3\ni: yes\n"
    documents, problems = load_text("x.yaml", text)
    assert problems == []
    data = documents[0].data
    assert data == {
        "a": 16,
        "b": 1000,
        "c": 1.5,
        "d": None,
        "e": "q",
        "f": "z\n",
        "g": "2024-01-02",
        "h": "3",
        "i": "yes",
    }
    assert [type(v) for v in data.values()] == [int, int, float, type(None), str, str, str, str, str]


def test_a_folder_without_specs_is_worth_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, "specs/README.md", "nothing here yet\n")
    result = qmlops(capsys, "validate", str(tmp_path / "specs"))
    assert result.code == 0
    assert result.lines == [f"{tmp_path}/specs:0:0: warning: no *.yaml or *.yml files in this folder"]
