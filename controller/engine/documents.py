"""Reading spec files: YAML parsed safely, every node remembered with its line and column.

Spec files come from pull requests, so the reader assumes nothing about them: it refuses empty,
binary, oversized and deeply nested files, tabs used as indentation, duplicate keys, custom tags and
alias expansion bombs, each with a message that names the file and the line, and never a traceback.
What it hands on is plain data (dict, list, str, int, float, bool, None) plus a position index, so
the validator can point at the node that a problem concerns.
"""

from __future__ import annotations

import datetime
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedBase, TaggedScalar
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError

from controller.engine.containment import OutsideWorkTree, check_found_file

if TYPE_CHECKING:
    from controller.api import QuantumModel, QuantumPipeline

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 50
# Nodes written in a file, and nodes of a document with every alias expanded. A real spec has a few
# hundred; the cap stops a flood of tiny nodes early, since parsing costs ~40 µs per node.
MAX_NODES = 20_000
MAX_DOCUMENTS = 1000
SPEC_SUFFIXES = (".yaml", ".yml")

Severity = Literal["error", "warning"]
FieldPath = tuple[str | int, ...]
Position = tuple[int, int]  # 1-based line and column; (0, 0) when the object has no source text


@dataclass(frozen=True)
class Problem:
    """One finding about one spec, at the node it concerns.

    ``unusable`` marks input that could not be read as YAML at all (exit code 2 rather than 1).
    """

    file: str
    line: int
    column: int
    path: str
    message: str
    severity: Severity = "error"
    rule: str | None = None
    unusable: bool = False

    def format(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}: "
        field_part = f"{self.path}: " if self.path else ""
        level = "warning: " if self.severity == "warning" else ""
        return f"{where}{field_part}{level}{self.message}"

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
            "severity": self.severity,
            "rule": self.rule,
        }

    def sort_key(self) -> tuple[str, int, int, str, str]:
        return (self.file, self.line, self.column, self.path, self.message)


def format_path(path: Iterable[str | int]) -> str:
    """``spec.steps[0].train.matrix[circuit.ansatz.reps]``: indices and odd keys in brackets."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part and all(c.isalnum() or c in "_-" for c in part):
            out += f".{part}" if out else part
        else:
            out += f"[{part}]"
    return out


@dataclass
class LoadedDocument:
    """One YAML document of a spec file, as plain data, with the position of every node."""

    file: str
    index: int
    data: Any
    start: Position
    values: dict[FieldPath, Position] = field(default_factory=dict, repr=False)
    keys: dict[FieldPath, Position] = field(default_factory=dict, repr=False)

    @property
    def kind(self) -> str | None:
        kind = self.data.get("kind") if isinstance(self.data, dict) else None
        return kind if isinstance(kind, str) else None

    @property
    def api_version(self) -> str | None:
        version = self.data.get("apiVersion") if isinstance(self.data, dict) else None
        return version if isinstance(version, str) else None

    def position(self, path: Sequence[str | int]) -> Position:
        """Where the value at ``path`` starts; the nearest enclosing node when it is not there."""
        for end in range(len(path), 0, -1):
            found = self.values.get(tuple(path[:end]))
            if found:
                return found
        return self.start

    def key_position(self, path: Sequence[str | int]) -> Position:
        """Where the key naming ``path`` is written; its value's position for list items."""
        found = self.keys.get(tuple(path))
        return found if found else self.position(path)

    def has(self, path: Sequence[str | int]) -> bool:
        return tuple(path) in self.values


@dataclass
class LoadedResource:
    """A document that parsed into one of the resource types, with where it came from."""

    document: LoadedDocument
    resource: QuantumModel | QuantumPipeline

    @property
    def file(self) -> str:
        return self.document.file

    @property
    def index(self) -> int:
        return self.document.index

    @property
    def kind(self) -> str:
        return self.resource.kind

    @property
    def name(self) -> str:
        return self.resource.metadata.name

    @property
    def namespace(self) -> str:
        return self.resource.metadata.namespace


class _Refused(Exception):
    """A file or document the reader will not accept; carries the position it concerns."""

    def __init__(self, message: str, position: Position = (1, 1)) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


# --- finding files ---------------------------------------------------------------------------------


def discover(paths: Sequence[str | os.PathLike[str]]) -> tuple[list[str], list[Problem]]:
    """The spec files under ``paths``: files as named, folders searched for *.yaml and *.yml.

    Hidden files and folders (``.git``, ``.github``) are skipped when searching a folder.
    """
    files: list[str] = []
    problems: list[Problem] = []
    for raw in paths:
        path = os.fspath(raw)
        path = os.path.normpath(path) if path else path
        if os.path.isdir(path):
            found = sorted(_walk(path))
            files.extend(found)
            if not found:
                problems.append(Problem(path, 0, 0, "", "no *.yaml or *.yml files in this folder", "warning"))
        elif os.path.lexists(path):
            files.append(path)
        else:
            problems.append(_unusable(path, "no such file or directory"))
    unique: dict[str, str] = {}
    for file in files:
        try:
            check_found_file(file)  # a symlink out of the repository, or into .git, is never read
        except OutsideWorkTree as err:
            problems.append(_unusable(file, f"refused: {err}"))
            continue
        unique.setdefault(os.path.normpath(file), file)
    return list(unique.values()), problems


def _walk(folder: str) -> Iterator[str]:
    for root, dirs, names in os.walk(folder, onerror=None, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            if not name.startswith(".") and name.lower().endswith(SPEC_SUFFIXES):
                yield os.path.normpath(os.path.join(root, name))


def _unusable(file: str, message: str, position: Position = (1, 1)) -> Problem:
    return Problem(file, position[0], position[1], "", message, unusable=True)


# --- reading ---------------------------------------------------------------------------------------


def read_text(file: str) -> str:
    """The file's text, refused when it is not a small regular UTF-8 text file."""
    try:
        info = os.stat(file)
    except OSError as err:
        raise _Refused(f"cannot read: {err.strerror or err}") from None
    if not stat.S_ISREG(info.st_mode):
        raise _Refused("not a regular file")
    if info.st_size > MAX_FILE_BYTES:
        raise _Refused(f"file is {info.st_size} bytes; spec files are limited to {MAX_FILE_BYTES} bytes")
    try:
        with open(file, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise _Refused(f"cannot read: {err.strerror or err}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise _Refused(f"file is larger than {MAX_FILE_BYTES} bytes, the limit for a spec file")
    return decode(raw)


def decode(raw: bytes) -> str:
    if b"\x00" in raw:
        raise _Refused(
            "binary file (contains NUL bytes): a spec is UTF-8 YAML text", _offset_position(raw, raw.index(0))
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise _Refused("not UTF-8 text: a spec is UTF-8 YAML text", _offset_position(raw, err.start)) from None


def _offset_position(raw: bytes, offset: int) -> Position:
    before = raw[:offset]
    line_start = before.rfind(b"\n") + 1
    return before.count(b"\n") + 1, offset - line_start + 1


# --- parsing ---------------------------------------------------------------------------------------

FLOW_DEPTH_LIMIT = 4 * MAX_DEPTH  # brackets open at once: refused before the parser sees them


def _refuse_deep_flow(text: str) -> None:
    """One linear pass before parsing: flow collections (``[``, ``{``) open more than
    ``FLOW_DEPTH_LIMIT`` deep are refused at the bracket that went too deep. The parser's time grows
    faster than the nesting (5,000 brackets took 6 s to end in a RecursionError); brackets inside
    quotes or comments are counted too, which only a text no spec needs can reach."""
    depth = 0
    for index, char in enumerate(text):
        if char in "[{":
            depth += 1
            if depth > FLOW_DEPTH_LIMIT:
                raise _Refused(
                    f"nested too deeply: a spec is nested at most {MAX_DEPTH} levels", _text_position(text, index)
                )
        elif char in "]}" and depth:
            depth -= 1


def parse(file: str, text: str) -> list[LoadedDocument]:
    """Every non-empty document of a YAML stream, as plain data with positions.

    Raises ``_Refused`` (caught by :func:`load_file`) for input the reader will not accept.
    """
    if not text.strip():
        raise _Refused("file is empty: expected a YAML document with apiVersion and kind")
    _refuse_deep_flow(text)
    yaml = YAML(typ="rt", pure=True)
    yaml.allow_duplicate_keys = False
    documents: list[LoadedDocument] = []
    try:
        constructor, parser = yaml.get_constructor_parser(text)
        _count_nodes(constructor.composer)
        try:
            index = 0
            while constructor.check_data():
                if index >= MAX_DOCUMENTS:
                    raise _Refused(f"more than {MAX_DOCUMENTS} YAML documents in one file")
                node = constructor.composer.get_node()
                start = (node.start_mark.line + 1, node.start_mark.column + 1)
                data = constructor.construct_document(node)
                if data is not None:
                    documents.append(_plain_document(file, index, data, start))
                index += 1
        finally:
            parser.dispose()
    except _Refused:
        raise
    except DuplicateKeyError as err:
        raise _Refused(_duplicate_key_message(err, text), _mark(err)) from None
    except MarkedYAMLError as err:
        raise _Refused(_syntax_message(err, text), _mark(err)) from None
    except ReaderError as err:
        raise _Refused(
            f"contains the control character U+{err.character:04X}, which YAML does not allow",
            _text_position(text, err.position),
        ) from None
    except RecursionError:
        raise _Refused(f"nested too deeply: a spec is nested at most {MAX_DEPTH} levels") from None
    except (ValueError, OverflowError) as err:
        # Python's own conversions (an integer of thousands of digits); the text after ':' may quote it.
        raise _Refused(f"a value cannot be read: {str(err).split(':')[0][:120]}") from None
    except (YAMLError, TypeError) as err:
        raise _Refused(f"not valid YAML: {type(err).__name__}") from None
    if not documents:
        raise _Refused("file is empty: it holds no YAML document, only comments or separators")
    return documents


def _count_nodes(composer: Any) -> None:
    """Stop composing once the file has written more than ``MAX_NODES`` nodes."""
    compose_node = composer.compose_node
    count = 0

    def counted(parent: Any, index: Any) -> Any:
        nonlocal count
        count += 1
        if count > MAX_NODES:
            mark = composer.parser.peek_event().start_mark
            raise _Refused(f"more than {MAX_NODES} YAML nodes: too large for a spec", (mark.line + 1, mark.column + 1))
        return compose_node(parent, index)

    composer.compose_node = counted


def _mark(err: MarkedYAMLError) -> Position:
    mark = err.problem_mark or err.context_mark
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


def _text_position(text: str, offset: int) -> Position:
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


def _syntax_message(err: MarkedYAMLError, text: str) -> str:
    # ruamel's own str(err) quotes the offending source line, which may hold a secret: build our own.
    mark = err.problem_mark or err.context_mark
    if mark is not None:
        line = text.splitlines()[mark.line] if mark.line < len(text.splitlines()) else ""
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        if "\t" in indent[: mark.column + 1]:
            return "tab character used for indentation: YAML indents with spaces"
        if "'\\t'" in str(err.problem):
            return "tab character where YAML expects spaces: use spaces around keys and values"
    problem = str(err.problem or err.context or "syntax error").strip()
    context = f" ({err.context})" if err.context and err.problem else ""
    return f"not valid YAML: {problem}{context}"


def _duplicate_key_message(err: DuplicateKeyError, text: str) -> str:
    # ruamel's message quotes both values; name the key only, and where its mapping starts.
    first, mark = err.context_mark, err.problem_mark
    lines = text.splitlines()
    source = lines[mark.line][mark.column :] if mark is not None and mark.line < len(lines) else ""
    key = source.split(":", 1)[0].strip().strip("'\"")
    where = f" (the mapping starts on line {first.line + 1})" if first is not None else ""
    named = f" {key!r}" if key and len(key) <= 80 and not looks_like_token(key) else ""
    return f"duplicate key{named}: each key may appear once in a mapping{where}"


# A value that looks like a token whatever field it is in: long, no spaces, hex or mixed-case letters
# with digits (IBM Quantum tokens are 128 hex characters, IBM Cloud API keys 44 of [A-Za-z0-9_-]).
_TOKEN_VALUE = re.compile(r"^[A-Za-z0-9_\-+/=.]{24,}$")


def looks_like_token(value: Any) -> bool:
    if not isinstance(value, str) or not _TOKEN_VALUE.fullmatch(value):
        return False
    if "/" in value and "." in value:
        return False  # a path with a file name (base64 has '/' but no '.', a JWT '.' but no '/')
    if re.fullmatch(r"[0-9a-f]{32,}", value):
        return True
    return any(c.isdigit() for c in value) and any(c.isupper() for c in value) and any(c.islower() for c in value)


# --- plain data with positions -----------------------------------------------------------------------


class _Walker:
    """Copies ruamel's round-trip objects into plain data, recording each node's position.

    Aliases are copied at their full size, so an expansion bomb shows up here as a node count that
    runs past ``MAX_NODES`` long before it could exhaust memory.
    """

    def __init__(self, document: LoadedDocument) -> None:
        self.document = document
        self.nodes = 0
        self.active: set[int] = set()

    def copy(self, value: Any, path: FieldPath, position: Position) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _Refused(
                f"document expands to more than {MAX_NODES} nodes (an alias expansion bomb?)", self.document.start
            )
        if len(path) > MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep", position)
        self.document.values.setdefault(path, position)
        _refuse_tags(value, position)
        if isinstance(value, dict):
            return self._guarded(value, lambda: self._mapping(value, path, position))
        if isinstance(value, list):
            return self._guarded(value, lambda: self._sequence(value, path, position))
        return _scalar(value, position)

    def _guarded(self, value: Any, copy: Any) -> Any:
        if id(value) in self.active:
            raise _Refused("an alias refers to a node that contains it (a recursive structure)")
        self.active.add(id(value))
        try:
            return copy()
        finally:
            self.active.discard(id(value))

    def _mapping(self, value: dict[Any, Any], path: FieldPath, position: Position) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = _key_text(key, position)
            key_pos = _lc(value, "key", key) or position
            if name in out:
                raise _Refused(f"duplicate key {name!r}: written twice, once quoted and once not", key_pos)
            self.document.keys.setdefault((*path, name), key_pos)
            out[name] = self.copy(item, (*path, name), _lc(value, "value", key) or key_pos)
        return out

    def _sequence(self, value: list[Any], path: FieldPath, position: Position) -> list[Any]:
        return [self.copy(item, (*path, i), _lc(value, "item", i) or position) for i, item in enumerate(value)]


def _lc(container: Any, what: str, key: Any) -> Position | None:
    """ruamel's recorded position of a key, value or item (0-based) as 1-based; None when unknown
    (keys that came in through a ``<<`` merge have none)."""
    if not isinstance(container, CommentedBase):
        return None
    try:
        line, column = getattr(container.lc, what)(key)
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
    return int(line) + 1, int(column) + 1


def _refuse_tags(value: Any, position: Position) -> None:
    tag = getattr(value, "tag", None)
    name = getattr(tag, "value", None) if tag is not None else None
    if isinstance(value, TaggedScalar) and name == "tag:yaml.org,2002:str":
        return
    if isinstance(value, TaggedScalar) or name:
        shown = str(name or "?")[:60].replace("tag:yaml.org,2002:", "!!")
        raise _Refused(f"YAML tag {shown} is not allowed: a spec holds plain mappings, lists and scalars", position)


def _key_text(key: Any, position: Position) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, str | int | float):
        return str(key)
    if key is None:
        return "null"
    raise _Refused("a mapping key must be a plain scalar, not a list or mapping", position)


def _scalar(value: Any, position: Position) -> Any:
    if isinstance(value, TaggedScalar):
        return str(value.value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, datetime.date | datetime.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        what = "binary data (!!binary)"
    elif isinstance(value, AbstractSet):
        what = "a set (!!set)"
    else:
        what = f"a value of type {type(value).__name__}"
    raise _Refused(f"{what} is not allowed: a spec holds plain mappings, lists and scalars", position)


def _plain_document(file: str, index: int, data: Any, start: Position) -> LoadedDocument:
    position = _lc_start(data) or start
    document = LoadedDocument(file=file, index=index, data=None, start=position)
    document.data = _Walker(document).copy(data, (), position)
    return document


def _lc_start(data: Any) -> Position | None:
    if isinstance(data, CommentedBase):
        try:
            return int(data.lc.line) + 1, int(data.lc.col) + 1
        except (AttributeError, TypeError):
            return None
    return None


# --- the public entry points -------------------------------------------------------------------------


def load_file(file: str) -> tuple[list[LoadedDocument], list[Problem]]:
    """The documents of one spec file, or the one problem that makes it unusable."""
    try:
        return parse(file, read_text(file)), []
    except _Refused as refused:
        return [], [_unusable(file, refused.message, refused.position)]


def load_text(file: str, text: str) -> tuple[list[LoadedDocument], list[Problem]]:
    """Like :func:`load_file` for text already in memory (``file`` only names it in problems)."""
    try:
        return parse(file, text), []
    except _Refused as refused:
        return [], [_unusable(file, refused.message, refused.position)]


def load_documents(paths: Sequence[str | os.PathLike[str]]) -> tuple[list[LoadedDocument], list[Problem], int]:
    """Every document under ``paths``, the problems that stopped files being read, and the file count."""
    files, problems = discover(paths)
    documents: list[LoadedDocument] = []
    for file in files:
        found, refused = load_file(file)
        documents.extend(found)
        problems.extend(refused)
    return documents, problems, len(files)
