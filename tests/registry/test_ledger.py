"""The ledger's chain: each entry carries the digest of the one before; any rewrite breaks it."""

from __future__ import annotations

import json

from controller.engine.registry.ledger import Ledger, check_chain, draft, parse


def _chain(n: int) -> str:
    entries = []
    previous = None
    for i in range(n):
        previous = draft(
            previous,
            at=f"2025-01-0{i + 1}T00:00:00Z",
            kind="registered" if i == 0 else "gate-passed",
            model="demo/m",
            version=1,
            message=f"step {i}",
            data={"metrics": {"accuracy": 0.9 + i / 100}},
        )
        entries.append(previous)
    return "".join(e.to_line() for e in entries)


def test_an_honest_chain_has_no_break() -> None:
    text = _chain(4)
    assert list(check_chain(text)) == []
    entries = parse(text)
    assert [e.seq for e in entries] == [1, 2, 3, 4]
    assert entries[1].prev == entries[0].digest


def test_a_rewritten_value_breaks_that_entry() -> None:
    lines = _chain(3).splitlines()
    data = json.loads(lines[1])
    data["data"]["metrics"]["accuracy"] = 0.99
    lines[1] = json.dumps(data)
    breaks = list(check_chain("\n".join(lines) + "\n"))
    assert breaks and breaks[0][0] == 2
    assert "rewritten" in breaks[0][2]


def test_a_removed_entry_breaks_the_next_one() -> None:
    lines = _chain(3).splitlines()
    del lines[1]
    breaks = list(check_chain("\n".join(lines) + "\n"))
    assert breaks[0][0] == 2
    assert "sequence number 3, expected 2" in breaks[0][2]


def test_a_recomputed_digest_still_breaks_the_chain_after_it() -> None:
    entries = parse(_chain(3))
    forged = draft(None, at=entries[0].at, kind="registered", model="demo/m", version=1, message="forged", data={})
    text = "".join(e.to_line() for e in [forged, *entries[1:]])
    breaks = list(check_chain(text))
    assert breaks[0][0] == 2
    assert "chain is broken" in breaks[0][2]


def test_ledger_questions() -> None:
    a = draft(
        None,
        at="2025-01-01T00:00:00Z",
        kind="registered",
        model="m",
        version=1,
        message="",
        data={"artifactDigest": "sha256:1"},
    )
    b = draft(
        a,
        at="2025-01-01T00:00:01Z",
        kind="approved",
        model="m",
        version=1,
        message="",
        data={"approver": "Bob@example.com", "commit": "c1", "signed": False},
    )
    c = draft(b, at="2025-01-01T00:00:02Z", kind="promoted", model="m", version=1, message="")
    ledger = Ledger((a, b, c))
    assert ledger.champion() == 1
    assert ledger.approvers(1) == {"bob@example.com"}
    assert ledger.approvers(1, signed_only=True) == set()
    assert ledger.settled_digests() == {"sha256:1"}
    assert ledger.approval_commits() == {"c1"}
