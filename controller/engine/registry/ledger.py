"""The ledger: a model's decisions, append-only, each entry carrying the digest of the one before.

One JSON object per line in ``registry/<namespace>/<model>/ledger.jsonl``, so that ``git blame`` names
the commit that wrote (or rewrote) each entry. An entry's digest is taken over its canonical JSON
without the digest itself; ``prev`` is the previous entry's digest (None for the first entry).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from controller.engine.decisions import CHAMPION_KINDS, GATE_KINDS, LedgerKind
from controller.engine.registry.canonical import canonical_bytes, digest_of
from controller.engine.text import scrub, scrub_data

LEDGER_FILE = "ledger.jsonl"
BUDGET_WINDOW = timedelta(days=30)  # governance.qpuBudgetWindow's default

KINDS = frozenset(LedgerKind)  # the kinds an entry may have (controller/engine/decisions.py)
# entries whose data.usage counts against governance.qpuBudgetSeconds: trainings registered, failed
# (what their jobs spent before the failure), stopped (what they spent so far), blocked or superseded,
# and evaluations a pipeline recorded
USAGE_KINDS = (
    LedgerKind.REGISTERED,
    LedgerKind.SUPERSEDED,
    LedgerKind.FAILED,
    LedgerKind.STOPPED,
    LedgerKind.BLOCKED,
    LedgerKind.EVALUATED,
    LedgerKind.STEP_FAILED,
)
# the entries that end (or pause: stopped) one training, whose usage is cumulative over its resumes
TRAINING_KINDS = (LedgerKind.REGISTERED, LedgerKind.SUPERSEDED, LedgerKind.FAILED, LedgerKind.STOPPED)


class LedgerError(ValueError):
    """A ledger line that cannot be read or does not chain; ``line`` is 1-based."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True)
class Entry:
    """One decision about one model."""

    seq: int
    at: str
    kind: str
    model: str
    version: int | None
    message: str
    data: dict[str, Any] = field(default_factory=dict)
    prev: str | None = None
    digest: str = ""

    def body(self) -> dict[str, Any]:
        """Everything the digest covers."""
        return {
            "seq": self.seq,
            "at": self.at,
            "kind": self.kind,
            "model": self.model,
            "version": self.version,
            "message": self.message,
            "data": self.data,
            "prev": self.prev,
        }

    def computed_digest(self) -> str:
        return digest_of(self.body())

    def to_json(self) -> dict[str, Any]:
        return {**self.body(), "digest": self.digest}

    def to_line(self) -> str:
        return canonical_bytes(self.to_json()).decode() + "\n"

    @property
    def time(self) -> datetime:
        return parse_time(self.at)

    @property
    def pipeline(self) -> str | None:
        """The QuantumPipeline whose run wrote this entry (its name), or None: the model's own."""
        value = self.data.get("pipeline")
        return str(value["name"]) if isinstance(value, dict) and value.get("name") else None

    def describe(self) -> str:
        version = f" version {self.version}" if self.version is not None else ""
        return f"entry {self.seq} ({self.kind}{version})"


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def format_time(moment: datetime) -> str:
    """UTC, to the second, with a Z: how every time in the registry is written."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def entry_from_json(data: Any, line: int) -> Entry:
    if not isinstance(data, dict):
        raise LedgerError(f"line {line} is not a JSON object", line)
    try:
        version = data["version"]
        entry = Entry(
            seq=int(data["seq"]),
            at=str(data["at"]),
            kind=str(data["kind"]),
            model=str(data["model"]),
            version=None if version is None else int(version),
            message=str(data["message"]),
            data=dict(data.get("data") or {}),
            prev=data.get("prev"),
            digest=str(data["digest"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise LedgerError(f"line {line} is not a ledger entry ({type(err).__name__}: {err})", line) from None
    if set(data) - {*entry.body(), "digest"}:
        raise LedgerError(f"line {line} has fields a ledger entry does not have", line)
    return entry


def parse(text: str, *, strict: bool = True) -> list[Entry]:
    """Entries of a ledger file, without checking the chain (see :func:`check_chain`); lines that
    are not entries are an error, or skipped when not ``strict``."""
    entries: list[Entry] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            try:
                data = json.loads(raw)
            except json.JSONDecodeError as err:
                raise LedgerError(f"line {number} is not JSON ({err.msg})", number) from None
            entries.append(entry_from_json(data, number))
        except LedgerError:
            if strict:
                raise
    return entries


def check_chain(text: str) -> Iterator[tuple[int, Entry | None, str]]:
    """Every break in a ledger: (line, entry or None, what is wrong), in file order."""
    prev: Entry | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            yield number, None, "blank line in the ledger"
            continue
        try:
            entry = entry_from_json(json.loads(raw), number)
        except json.JSONDecodeError as err:
            yield number, None, f"not JSON ({err.msg})"
            continue
        except LedgerError as err:
            yield number, None, str(err)
            continue
        expected_seq = (prev.seq + 1) if prev else 1
        if entry.seq != expected_seq:
            yield number, entry, f"sequence number {entry.seq}, expected {expected_seq}"
        if entry.prev != (prev.digest if prev else None):
            yield number, entry, "does not carry the digest of the entry before it (the chain is broken)"
        if entry.computed_digest() != entry.digest:
            yield number, entry, f"its content does not match its digest {entry.digest[:19]}… (rewritten)"
        if entry.kind not in KINDS:
            yield number, entry, f"unknown decision kind {entry.kind!r}"
        prev = entry


def draft(
    previous: Entry | None,
    *,
    at: str,
    kind: str,
    model: str,
    version: int | None,
    message: str,
    data: dict[str, Any] | None = None,
) -> Entry:
    """The next entry after ``previous``, with its digest. Its message and data pass the secret
    scrubber (:func:`controller.engine.text.scrub`): nothing an error or a data file quoted reaches Git."""
    if kind not in KINDS:
        raise ValueError(f"unknown decision kind {kind!r}")
    entry = Entry(
        seq=(previous.seq + 1) if previous else 1,
        at=at,
        kind=str(kind),  # a plain str (a LedgerKind member prints the same but YAML writers refuse it)
        model=model,
        version=version,
        message=scrub(message),
        data=scrub_data(json.loads(canonical_bytes(data or {}))),
        prev=previous.digest if previous else None,
    )
    return Entry(**{**entry.__dict__, "digest": entry.computed_digest()})


# --- reading a model's history out of its entries ------------------------------------------------


@dataclass(frozen=True)
class Ledger:
    """A model's entries, with the questions the engine asks of them."""

    entries: tuple[Entry, ...] = ()

    @property
    def last(self) -> Entry | None:
        return self.entries[-1] if self.entries else None

    @property
    def last_own(self) -> Entry | None:
        """The newest entry the model's own reconcile wrote (a pipeline's runs write theirs in between)."""
        return next((e for e in reversed(self.entries) if e.pipeline is None), None)

    def of_kind(self, *kinds: str) -> list[Entry]:
        return [e for e in self.entries if e.kind in kinds]

    def for_version(self, version: int, *kinds: str) -> list[Entry]:
        return [e for e in self.entries if e.version == version and (not kinds or e.kind in kinds)]

    def champion_entry(self) -> Entry | None:
        found = self.of_kind(*CHAMPION_KINDS)
        return found[-1] if found else None

    def champion(self) -> int | None:
        entry = self.champion_entry()
        return entry.version if entry else None

    def gate_entry(self, version: int) -> Entry | None:
        found = self.for_version(version, *GATE_KINDS)
        return found[-1] if found else None

    def ever_champion(self, version: int) -> bool:
        return bool(self.for_version(version, *CHAMPION_KINDS))

    def approval_commits(self) -> set[str]:
        return {str(e.data.get("commit")) for e in self.of_kind(LedgerKind.APPROVED)}

    def approvers(self, version: int, *, signed_only: bool = False, at: datetime | None = None) -> set[str]:
        """Who approved ``version``; ``at``: only the approvals not expired by then (an approval's
        ``Qmlops-Approve-Expires``, kept as ``data.expires``, holds at promotion time, not only when
        the approval is first recorded)."""
        return {
            str(e.data.get("approver", "")).lower()
            for e in self.for_version(version, LedgerKind.APPROVED)
            if e.data.get("approver") and (e.data.get("signed") or not signed_only) and not expired(e, at)
        }

    def expired_approvals(self, version: int, at: datetime) -> list[Entry]:
        """The recorded approvals of ``version`` whose expiry has passed by ``at``."""
        return [e for e in self.for_version(version, LedgerKind.APPROVED) if expired(e, at)]

    def settled_digests(self) -> set[str]:
        """The artifact digests the ledger decided about: registered, or superseded (never again)."""
        found = self.of_kind(LedgerKind.REGISTERED, LedgerKind.SUPERSEDED)
        return {d for e in found if isinstance(d := e.data.get("artifactDigest"), str)}

    def registered_since(self, key: str, seq: int) -> Entry | None:
        """The registration of training ``key`` recorded after entry ``seq`` (the ledger's newest entry
        when that training was decided), if any: another controller ran the same training meanwhile."""
        for entry in self.of_kind(LedgerKind.REGISTERED):
            if entry.seq > seq and entry.data.get("trainingKey") == key:
                return entry
        return None

    def retired(self) -> dict[int, Entry]:
        """The versions retired under ``retention.maxVersions``: number -> its ``retired`` entry."""
        return {e.version: e for e in self.of_kind(LedgerKind.RETIRED) if e.version is not None}

    def versions(self) -> list[int]:
        return [e.version for e in self.of_kind(LedgerKind.REGISTERED) if e.version is not None]

    def since(self, moment: datetime) -> list[Entry]:
        return [e for e in self.entries if e.time >= moment]

    def qpu_seconds(self, now: datetime, window: timedelta = BUDGET_WINDOW, *, resuming: str | None = None) -> float:
        """QPU seconds spent in the rolling window before ``now`` (``governance.qpuBudgetWindow``, 30
        days unless the spec or a policy says) by everything the ledger recorded with its usage:
        trainings that registered a version, failed or stopped, and evaluations. ``resuming``: the key
        of a training about to resume, whose own checkpoint counts what its stopped entries recorded."""
        return self.usage(now, window, resuming=resuming)["qpuSeconds"]

    def usage(
        self, now: datetime, window: timedelta = BUDGET_WINDOW, *, resuming: str | None = None
    ) -> dict[str, float]:
        """What the entries recorded as spent in the window. A training's usage is cumulative over its
        resumes (its checkpoint keeps it): a ``stopped`` entry records what it spent so far, and the
        entry that ends the same training (by ``trainingKey``: stopped again, registered, failed or
        superseded) counts only what it spent since, so no second is counted twice."""
        totals = {"qpuSeconds": 0.0, "primitiveJobs": 0.0, "shots": 0.0}
        stopped: dict[str, dict[str, float]] = {}  # training key -> what its stopped entries recorded
        pending = {k: 0.0 for k in totals}  # what ``resuming``'s stopped entries added to ``totals``
        for entry in self.of_kind(*USAGE_KINDS):
            usage = entry.data.get("usage")
            if not isinstance(usage, dict):
                continue
            spent = {key: _number(usage.get(key, 0)) for key in totals}
            key = entry.data.get("trainingKey")
            if isinstance(key, str) and key and entry.kind in TRAINING_KINDS:
                before = stopped.pop(key, {})
                if entry.kind == LedgerKind.STOPPED:
                    stopped[key] = {k: max(v, before.get(k, 0.0)) for k, v in spent.items()}
                elif key == resuming:
                    pending = {k: 0.0 for k in totals}  # that run of the training ended
                spent = {k: max(0.0, v - before.get(k, 0.0)) for k, v in spent.items()}
                if entry.kind == LedgerKind.STOPPED and key == resuming and entry.time >= now - window:
                    pending = {k: pending[k] + spent[k] for k in totals}
            if entry.time >= now - window:
                for k in totals:
                    totals[k] += spent[k]
        return {k: totals[k] - pending[k] for k in totals}

    def stopped_usage(self, key: str) -> dict[str, float]:
        """What the ``stopped`` entries of training ``key`` recorded since it last ended (cumulative)."""
        found: dict[str, float] = {}
        for entry in self.entries:
            if entry.data.get("trainingKey") != key or entry.kind not in TRAINING_KINDS:
                continue
            usage = entry.data.get("usage")
            if entry.kind == LedgerKind.STOPPED and isinstance(usage, dict):
                found = {k: _number(usage.get(k, 0)) for k in ("qpuSeconds", "primitiveJobs", "shots")}
            elif entry.kind != LedgerKind.STOPPED:
                found = {}
        return found

    def last_blocked_with(self, reason: str) -> bool:
        """Whether the newest entry already says ``reason`` (so saying it again would add nothing)."""
        last = self.last_own
        return last is not None and last.kind == LedgerKind.BLOCKED and last.message == scrub(reason)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def expired(entry: Entry, at: datetime | None) -> bool:
    """Whether an ``approved`` entry's expiry (``data.expires``) has passed by ``at`` (never when ``at``
    is None or it has none; an expiry that does not parse has passed: it was refused when recorded)."""
    expires = entry.data.get("expires")
    if at is None or not expires:
        return False
    try:
        moment = parse_time(str(expires))
    except ValueError:
        return True
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment <= at


def ledger_of(entries: Sequence[Entry]) -> Ledger:
    return Ledger(tuple(entries))
