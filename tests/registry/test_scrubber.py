"""One secret scrubber for everything recorded: ledger entries and commit subjects in Git, status
conditions, events. Secrets an error or a data file quoted are redacted, digests and shas are kept."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controller.engine import status
from controller.engine.decisions import LedgerKind
from controller.engine.registry import Registry
from controller.engine.registry.ledger import Ledger, draft
from controller.engine.text import REDACTED, scrub
from tests.registry.repos import Repos, git

PEM = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----"
IBM_KEY = "Zx8kQ2mN7pR4tV1wY6aB3cD9eF0gH5jK2lM8nP4qR7sT"  # 44 characters, the shape of an IBM Cloud API key
SECRETS = {
    "extraheader = AUTHORIZATION: basic c2VjcmV0OnRva2Vu": "c2VjcmV0OnRva2Vu",
    "proxy-authorization=Negotiate YIIGhgYJKoZIhvcSAQICAQBuggZ1MIIGcaADAgEFoQMCAQ6i": "YIIGhgYJKoZI",
    "HTTP 401: Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig": "eyJhbGciOiJIUzI1NiJ9",
    "sent bearer abc123.def456-ghi": "abc123.def456-ghi",
    "git push https://bot:hunter2@github.com/team/specs.git failed": "hunter2",
    "ssh://deploy:s3cr3t@git.example.com:22/specs.git": "s3cr3t",
    f"key {PEM} in the Secret": "b3BlbnNzaC1rZXkt",
    "password=hunter2; next": "hunter2",
    'token: "tok-123" api_key=k-456 client_secret: cs-789': "123",
    f"IBM said: invalid key {IBM_KEY} (code 1234)": IBM_KEY,
    "GitHub token ghp_abcdefghijklmnopqrstuvwxyz0123456789 expired": "ghp_abcdefghijklmnopq",
    "AWS AKIAIOSFODNN7EXAMPLE refused": "AKIAIOSFODNN7EXAMPLE",
    "legacy token " + "0f" * 64: "0f0f0f0f0f",
}


@pytest.mark.parametrize("text", list(SECRETS))
def test_secrets_are_redacted_and_scrubbing_twice_changes_nothing(text: str) -> None:
    clean = scrub(text)
    assert SECRETS[text] not in clean, clean
    assert REDACTED in clean
    assert scrub(clean) == clean  # idempotent: a message compared with one recorded earlier still matches


@pytest.mark.parametrize(
    "text",
    [
        "entry sha256:" + "3f" * 32 + " by commit " + "a1" * 20,
        "artifact sha512:" + "ab" * 64,
        "registry/team-quantum/iris-vqc/versions/12.json and specs/Iris2Classes/model.yaml",
        "blocked by rule governance.allowedBackends: backend ibm:ibm_kyiv is not allowed (allowed: local:*)",
        "Qiskit Runtime error 1305: job d1a2b3c4e5f6g7h8i9j0 exceeds the instance's limits",
        "dataset.source: file:data/iris.csv has no column 'species'; its columns are a, b, label",
        "the token Secret ibm-quantum has no key 'token' (found apiKey)",
        "line one\n\tline two",
    ],
)
def test_ordinary_messages_pass_unchanged(text: str) -> None:
    assert scrub(text) == text


def test_control_characters_are_escaped_in_what_is_recorded() -> None:
    assert (
        scrub("subject \x1b[2J\x1b]0;owned\x07 \u202egnp.exe\r")
        == "subject \\x1b[2J\\x1b]0;owned\\x07 \\u202egnp.exe\\r"
    )


def test_the_ledger_and_the_remote_never_hold_a_secret(repos: Repos) -> None:
    work = repos.clone("work")
    registry = Registry(work)
    message = "git fetch failed: fatal: https://bot:hunter2@git.example.com: Authorization: Basic Ym90Omh1bnRlcjI="
    data = {"remote": "https://bot:hunter2@git.example.com/specs.git", "nested": [{"header": "Bearer abcdef123456"}]}
    recorded = registry.record(
        "demo", "tiny", at="2026-01-01T00:00:00Z", kind=LedgerKind.FAILED, version=None, message=message
    )
    registry.record(
        "demo", "tiny", at="2026-01-01T00:00:01Z", kind=LedgerKind.BLOCKED, version=None, message="blocked", data=data
    )
    registry.publish()
    assert recorded.entry.message == (
        f"git fetch failed: fatal: https://{REDACTED}@git.example.com: Authorization: {REDACTED}"
    )
    assert registry.ledger("demo", "tiny").entries[-1].data == {
        "remote": f"https://{REDACTED}@git.example.com/specs.git",
        "nested": [{"header": f"Bearer {REDACTED}"}],
    }
    history = git(repos.remote, "log", "--all", "-p", "--format=%B")
    for secret in ("hunter2", "Ym90Omh1bnRlcjI=", "abcdef123456"):
        assert secret not in history
    assert f"Authorization: {REDACTED}" in history  # the commit subject says what the entry says


def test_a_blocked_reason_recorded_scrubbed_is_not_recorded_again() -> None:
    reason = "blocked by rule governance.allowedBackends: https://bot:pw@host/specs.git is not allowed"
    entry = draft(
        None, at="2026-01-01T00:00:00Z", kind=LedgerKind.BLOCKED, model="demo/tiny", version=None, message=reason
    )
    assert "pw@" not in entry.message
    assert Ledger((entry,)).last_blocked_with(reason)


def test_status_conditions_and_failures_are_scrubbed() -> None:
    err = RuntimeError("401 Client Error for https://api.example.com (Authorization: Bearer sk-live-0123456789)")
    assert status.describe_failure(err) == (
        f"RuntimeError: 401 Client Error for https://api.example.com (Authorization: {REDACTED})"
    )
    wire = status.failed(None, err, 3, datetime(2026, 1, 1, tzinfo=UTC))
    assert "sk-live" not in str(wire)
    invalid = status.invalid(None, "spec.owner: password=hunter2 \x1b[31m", 3, datetime(2026, 1, 1, tzinfo=UTC))
    assert "hunter2" not in str(invalid) and "\x1b" not in str(invalid)
    assert invalid["message"] == f"spec.owner: password={REDACTED} \\x1b[31m"
