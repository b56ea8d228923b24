"""Qiskit Runtime errors, classified as IBM documents them: what to retry, what to reconnect for,
what is the user's to fix. https://quantum.cloud.ibm.com/docs/errors"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

TRANSIENT_CODES = frozenset({1006, 1008, 1010, 1011, 1202})  # backend busy/unavailable, internal timeouts
# HTTP 429 (rate limited) and 5xx are transient too.
FATAL_CODES = frozenset({1305})  # the job was cancelled or exceeds what the instance may run
SESSION_CLOSED_CODES = frozenset({1217, 1219})  # the session is closed or has expired
_CODE = re.compile(r"(?:error\s*code|code)\W{0,3}(\d{4})\b", re.IGNORECASE)
_HTTP = re.compile(r"\b(?:HTTP|status(?:\s*code)?)\W{0,3}([1-5]\d\d)\b", re.IGNORECASE)
_SESSION_CLOSED = re.compile(r"session\b.{0,60}\b(closed|expired|not active|inactive)", re.IGNORECASE)

Kind = Literal["transient", "auth", "session-closed", "fatal"]


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    code: int | None
    reason: str


def classify(err: BaseException) -> Verdict:
    text = " ".join(str(err).split()) or type(err).__name__
    code = _code(text)
    status = _status(err, text)
    if code in FATAL_CODES:
        return Verdict("fatal", code, f"Qiskit Runtime error {code}: {text}")
    if status == 401:
        return Verdict("auth", None, "Qiskit Runtime refused the credentials (HTTP 401)")
    if code in SESSION_CLOSED_CODES or _SESSION_CLOSED.search(text):
        return Verdict("session-closed", code, f"the Runtime session is closed: {text}")
    if code in TRANSIENT_CODES or status == 429 or (status is not None and status >= 500):
        return Verdict("transient", code, f"Qiskit Runtime is temporarily unavailable: {text}")
    if isinstance(err, ConnectionError | TimeoutError):
        return Verdict("transient", None, f"Qiskit Runtime could not be reached: {text}")
    return Verdict("fatal", code, f"Qiskit Runtime failed the job: {text}")


def _code(text: str) -> int | None:
    match = _CODE.search(text)
    return int(match[1]) if match else None


def _status(err: BaseException, text: str) -> int | None:
    response = getattr(err, "response", None)  # requests.HTTPError carries the status on its response
    for holder, attr in ((err, "status_code"), (err, "status"), (response, "status_code")):
        value = getattr(holder, attr, None)
        if isinstance(value, int):
            return value
    match = _HTTP.search(text)
    if match:
        return int(match[1])
    return 401 if "unauthorized" in text.lower() else None


def backoff(attempt: int, base: float = 1.0, cap: float = 60.0) -> float:
    """Seconds before retry ``attempt`` (0-based): doubling from ``base``, at most ``cap``."""
    return float(min(cap, base * 2**attempt))
