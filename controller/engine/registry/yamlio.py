"""Round-trip YAML for the controller's own files: what people wrote survives the controller's edits.

Comments, blank lines, key order, quoting, block scalars, anchors and aliases, ``---`` markers and the
file's indentation style all come back as they were; only the values the controller changes differ.
The team's spec files are never written at all: this module is for files under ``registry/``.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

_KEY_ONLY = re.compile(r"^(?P<indent> *)(?:- )?[^#\s][^#]*:\s*(#.*)?$")
_SEQ_ITEM = re.compile(r"^(?P<indent> *)- ")


@dataclass(frozen=True)
class Style:
    """How a file is indented and whether it marks documents, so a rewrite keeps its look."""

    mapping: int = 2
    sequence: int = 2
    offset: int = 0
    explicit_start: bool = False
    explicit_end: bool = False


def guess_style(text: str) -> Style:
    """The indentation of nested mappings and sequences, as the first nested node of each shows it."""
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    mapping: int | None = None
    sequence: tuple[int, int] | None = None
    for here, after in itertools.pairwise(lines):
        match = _KEY_ONLY.match(here)
        if not match or here.lstrip().startswith(("---", "...")):
            continue
        base = len(match["indent"]) + (2 if here.lstrip().startswith("- ") else 0)
        item = _SEQ_ITEM.match(after)
        step = len(after) - len(after.lstrip(" ")) - base
        if item and sequence is None and step >= 0:
            sequence = (step + 2, step)
        elif not item and mapping is None and step > 0:
            mapping = step
    seq, offset = sequence or (2, 0)
    stripped = text.lstrip()
    return Style(
        mapping=mapping or 2,
        sequence=max(seq, offset + 2),
        offset=offset,
        explicit_start=stripped.startswith("---"),
        explicit_end=bool(re.search(r"^\.\.\.\s*$", text, re.MULTILINE)),
    )


def _yaml(style: Style) -> YAML:
    yaml = YAML(typ="rt", pure=True)
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a line that someone wrote long
    yaml.indent(mapping=style.mapping, sequence=style.sequence, offset=style.offset)
    yaml.explicit_start = style.explicit_start
    yaml.explicit_end = style.explicit_end
    return yaml


def load_all(text: str) -> list[Any]:
    """Every document of ``text`` as ruamel's round-trip objects (CommentedMap, CommentedSeq ...)."""
    return list(_yaml(Style()).load_all(text)) if text.strip() else []


def dump_all(documents: list[Any], style: Style = Style()) -> str:
    out = io.StringIO()
    _yaml(style).dump_all(documents, out)
    return out.getvalue()


def roundtrip(text: str) -> str:
    """Load and dump unchanged: equal to ``text`` for every file this module supports."""
    return dump_all(load_all(text), guess_style(text))


def edit_text(text: str, change: Callable[[list[Any]], None]) -> str:
    """Apply ``change`` to the loaded documents of ``text`` and dump them in the file's own style."""
    documents = load_all(text)
    change(documents)
    return dump_all(documents, guess_style(text) if text.strip() else Style())


# The documents of the files this process wrote last, with the text it wrote: a file that still holds
# that text is edited from them, not loaded again (loading is two thirds of an edit's cost, and the
# operator rewrites a model's model.yaml after every decision). Keyed by absolute path; each work tree
# is one thread's, the lock guards the map itself.
_WRITTEN: dict[Path, tuple[str, list[Any]]] = {}
_WRITTEN_MAX = 256
_WRITTEN_LOCK = threading.Lock()


def edit_file(path: Path, change: Callable[[list[Any]], None], *, header: str = "") -> bool:
    """Edit ``path`` round-trip (creating it, starting with ``header``, when missing).

    Returns whether the file's bytes changed; an edit that changes nothing leaves the file alone.
    """
    before = path.read_text(encoding="utf-8") if path.exists() else ""
    key = path.absolute()
    with _WRITTEN_LOCK:
        kept = _WRITTEN.pop(key, None)
    # the documents ``before`` was dumped from are what loading it would give
    documents = kept[1] if kept is not None and kept[0] == before else load_all(before)
    change(documents)
    text = dump_all(documents, guess_style(before) if before.strip() else Style())
    if not before.strip() and header:
        text = header + text
    if text == before:
        _keep(key, text, documents)
        return False
    write_atomic(path, text.encode("utf-8"))
    _keep(key, text, documents)
    return True


def _keep(key: Path, text: str, documents: list[Any]) -> None:
    with _WRITTEN_LOCK:
        _WRITTEN[key] = (text, documents)
        while len(_WRITTEN) > _WRITTEN_MAX:
            del _WRITTEN[next(iter(_WRITTEN))]


def update(target: CommentedMap, values: dict[str, Any]) -> None:
    """Set ``values`` in ``target`` in place: keys already there keep their position and comments,
    nested mappings are merged the same way, new keys go at the end; a value of None removes a key."""
    for key, value in values.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), CommentedMap):
            update(target[key], value)
        elif target.get(key) != value or type(target.get(key)) is not type(value):
            target[key] = _plain_to_rt(value)


def _plain_to_rt(value: Any) -> Any:
    if isinstance(value, dict):
        out = CommentedMap()
        for key, item in value.items():
            out[key] = _plain_to_rt(item)
        return out
    if isinstance(value, list):
        return CommentedSeq(_plain_to_rt(item) for item in value)
    return value


def write_atomic(path: Path, data: bytes) -> None:
    """Write through a temporary file and a rename, so a crash leaves the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
