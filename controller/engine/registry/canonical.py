"""Canonical JSON and content digests: the same data always gives the same bytes and digest."""

from __future__ import annotations

import hashlib
import json
from typing import Any

DIGEST_PREFIX = "sha256:"


def canonical_bytes(data: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8, no NaN: the form every digest in the registry is taken over."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def digest_of(data: Any) -> str:
    return DIGEST_PREFIX + hashlib.sha256(canonical_bytes(data)).hexdigest()


def digest_bytes(raw: bytes) -> str:
    return DIGEST_PREFIX + hashlib.sha256(raw).hexdigest()


def pretty_bytes(data: Any) -> bytes:
    """Readable JSON for files people read in reviews: sorted keys, two-space indent, final newline."""
    return (json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode()
