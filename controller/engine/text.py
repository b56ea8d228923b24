"""Text that leaves the controller: scrubbed of secrets before it is recorded, escaped before it is shown.

Two helpers, one per destination:

- :func:`scrub` for everything the controller records (ledger entries and commit subjects in Git,
  status conditions, events): credentials that an error or a data file might quote are replaced by
  ``<redacted>`` (``Authorization:`` headers, ``Bearer`` tokens, ``user:password@`` in URLs, PEM
  blocks, ``password=``/``token:`` pairs, well-known token shapes, long base64 and hex runs), and
  control characters are escaped. It is idempotent: a scrubbed text scrubs to itself, so a message
  compared with one recorded earlier compares equal.
- :func:`escape_control` for everything printed on a terminal or in a log line: control characters
  (ANSI escape sequences, carriage returns, newlines, bidirectional overrides) are shown as visible
  escapes (``\\x1b``, ``\\r``, ``\\n``, ``\\u202e``), so that a reader sees that one was there and no
  text from Git or a spec can move the cursor, recolour the screen or forge a log line.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import Any

REDACTED = "<redacted>"

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# C0 controls, DEL, C1 controls, and the Unicode format characters that reorder or hide text
# (bidirectional embeddings, overrides and isolates; zero-width marks; line and paragraph separators).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_CONTROL_KEEPING_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_control(text: str) -> str:
    """``text`` with every control character shown as a visible escape; safe to print as one line."""
    return _CONTROL.sub(_visible, text)


# --- secrets ------------------------------------------------------------------------------------------

_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]{0,40}-----.*?(?:-----END [A-Z0-9 ]{0,40}-----|\Z)", re.DOTALL)
_AUTHORIZATION = re.compile(
    r"(?i)\b((?:proxy-)?authorization)(\s*[:=]\s*)(?:(?:basic|bearer|token|digest|negotiate|ntlm)\s+)?"
    r"(?!<redacted>)[^\s,;\"'()\[\]{}<>]+"
)
_BEARER = re.compile(r"(?i)\b(bearer)\s+(?!<redacted>)[A-Za-z0-9._~+/=-]{6,}")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)(?!<redacted>@)[^/@\s]+@")
_ASSIGNED = re.compile(
    r"(?i)\b(password|passwd|passphrase|secret|client[_-]?secret|token|access[_-]?token|refresh[_-]?token"
    r"|api[_-]?key|apikey|access[_-]?key|secret[_-]?key|private[_-]?key)"
    r"(\"?'?\s*[:=]\s*\"?'?)(?!<redacted>)([^\s\"',;()\[\]{}<>]+)"
)
_KNOWN_TOKENS = re.compile(
    r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_-]{20,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})"
)
# Long runs that look like keys: base64 (mixed case and digits, 40+ characters) and hex of 80+ digits
# (longer than any Git sha or sha256 digest the registry writes; a digest's ``sha512:`` prefix keeps it).
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/_=-])[A-Za-z0-9+/_-]{40,}={0,2}(?![A-Za-z0-9+/_=-])")
_HEX = re.compile(r"(?<![0-9A-Za-z])([0-9A-Fa-f]{80,})(?![0-9A-Za-z])")
_DIGEST_PREFIX = re.compile(r"sha\d+:$")


def _base64(match: re.Match[str]) -> str:
    run = match.group()
    looks_random = any(c.isupper() for c in run) and any(c.islower() for c in run) and any(c.isdigit() for c in run)
    if not looks_random or ("/" in run and "+" not in run and not run.endswith("=") and "//" not in run):
        return run  # a path or a word, not a key: base64 with slashes and no + or padding is rare
    return REDACTED


def _hex(match: re.Match[str]) -> str:
    if _DIGEST_PREFIX.search(match.string, 0, match.start()):
        return match.group()
    return REDACTED


# (pattern, replacement, words one of which the lower-cased text must hold for the pattern to be tried:
# most messages hold none, and a substring test is far cheaper than a case-insensitive search)
_RULES: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str], tuple[str, ...]], ...] = (
    (_PEM, REDACTED, ("-----begin",)),
    (_AUTHORIZATION, rf"\1\2{REDACTED}", ("authorization",)),
    (_BEARER, rf"\1 {REDACTED}", ("bearer",)),
    (_USERINFO, rf"\1{REDACTED}@", ("://",)),
    (_ASSIGNED, rf"\1\2{REDACTED}", ("passw", "passphrase", "secret", "token", "key")),
    (_KNOWN_TOKENS, REDACTED, ("gh", "glpat-", "xox", "akia", "eyj")),
    (_HEX, _hex, ()),
    (_BASE64, _base64, ()),
)


def scrub(text: str) -> str:
    """``text`` fit to be recorded in Git, status or events: secrets redacted, control characters
    escaped (newlines and tabs are kept: they cannot act on a terminal from a stored file)."""
    # a model's status says the same few things on every reconcile: short texts are remembered
    return _scrub_remembered(text) if len(text) <= _REMEMBERED_LENGTH else _scrub(text)


_REMEMBERED_LENGTH = 1024


@functools.lru_cache(maxsize=4096)
def _scrub_remembered(text: str) -> str:
    return _scrub(text)


def _scrub(text: str) -> str:
    lower = text.lower()
    for pattern, replacement, words in _RULES:
        if not words or any(word in lower for word in words):
            text = pattern.sub(replacement, text)
    return _CONTROL_KEEPING_LINES.sub(_visible, text)


def scrub_data(value: Any) -> Any:
    """``value`` (JSON-like data) with every string in it scrubbed; keys are the controller's own."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {key: scrub_data(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_data(item) for item in value]
    return value


class EscapingFormatter(logging.Formatter):
    """A log formatter whose lines carry no raw control character: one record, one line (a traceback,
    appended after it, keeps its own lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_control(super().formatMessage(record))
