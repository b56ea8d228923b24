"""A rejected field that looks like a credential is named, but its value is never printed: not in text
output, not in JSON, not in the summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.engine.validation import looks_like_token, validate_object
from tests.api.specs import changed, model
from tests.validation.cli import qmlops, write

TOKEN = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0"  # 64 hex, like an API token
API_KEY = "Xy7kQ2mN9pLr4sT8vW1zA3bC5dE6fG0hJ_kLmNoPqRs"  # 44 characters, like an IBM Cloud API key

HEAD = "apiVersion: qmlops.io/v1alpha1\nkind: QuantumModel\nmetadata:\n  name: m\n"
SPEC = (
    "spec:\n  owner: alice@example.com\n  dataset: {source: 'builtin:iris'}\n  circuit: {qubits: 2}\n"
    "  training:\n    backend: local:aer\n"
)

CASES = [
    ("unknown token field", HEAD + SPEC + f"    token: {TOKEN}\n", "spec.training.token: unknown field 'token'"),
    ("nested credential", HEAD + SPEC + f"    ibm:\n      apiKey: {API_KEY}\n", "spec.training.ibm: unknown field"),
    (
        "token in credentialsSecret",
        HEAD + SPEC + f"    credentialsSecret: {API_KEY}\n",
        "spec.training.credentialsSecret: <hidden> is not a valid DNS-1123 label",
    ),
    ("numeric password", HEAD + SPEC + "    password: 12345678\n", "spec.training.password: unknown field 'password'"),
    (
        "annotation",
        HEAD + f"  annotations:\n    ibm-token: {TOKEN}\n" + SPEC,
        "metadata.annotations.ibm-token: looks like a credential committed to Git",
    ),
    (
        "token-looking value",
        HEAD + SPEC.replace("alice@example.com", API_KEY),
        "spec.owner: <hidden> is not a valid email",
    ),
    ("token as a key", HEAD + SPEC + f"    {API_KEY}: x\n", "spec.training[<hidden>]: unknown field '<hidden>'"),
    ("duplicate key", HEAD + SPEC + f"    token: {TOKEN}\n    token: {API_KEY}\n", "duplicate key 'token'"),
    ("syntax error", HEAD + SPEC + f"    token: '{TOKEN}\n", "not valid YAML"),
    ("tab", HEAD + SPEC + f"\ttoken: {TOKEN}\n", "tab character used for indentation"),
    ("private key", HEAD + SPEC + f"    privateKey: |\n      -----BEGIN KEY-----\n      {API_KEY}\n", "privateKey"),
]


@pytest.mark.parametrize(("name", "text", "message"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("output", ["text", "json"])
def test_credential_values_are_never_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, message: str, output: str
) -> None:
    spec = write(tmp_path, "m.yaml", text)
    result = qmlops(capsys, "validate", "--output", output, str(spec))
    assert result.code in (1, 2)
    printed = result.out + result.err
    assert message in (
        result.out if output == "text" else " ".join(f"{p['path']}: {p['message']}" for p in result.json())
    )
    for secret in (TOKEN, API_KEY, "12345678", TOKEN[:20], API_KEY[:20]):
        assert secret not in printed


def test_objects_from_the_api_do_not_leak_either() -> None:
    obj = changed(model(), "spec.training.credentialsSecret", API_KEY)
    obj = changed(obj, "spec.training.token", TOKEN)
    problems = validate_object(obj, "team-quantum/iris-vqc")
    text = "\n".join(p.format() for p in problems)
    assert "spec.training.token: unknown field 'token'" in text
    assert "spec.training.credentialsSecret" in text
    assert TOKEN not in text and API_KEY not in text


@pytest.mark.parametrize(
    ("value", "token"),
    [
        (TOKEN, True),
        (API_KEY, True),
        ("iris-vqc-with-a-rather-long-name-2024", False),
        ("alice.longname@example-company.com", False),
        ("a fairly long description of the model", False),
        ("specs/iris/data/training-set-2024.csv", False),
        ("examples/data/Sensor-Faults-2024.csv", False),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", True),
    ],
)
def test_what_looks_like_a_token(value: str, token: bool) -> None:
    assert looks_like_token(value) is token


def test_annotations_may_name_secrets_and_carry_commit_hashes() -> None:
    obj = changed(
        model(), "metadata.annotations", {"qmlops.io/credentials-secret": "ibm-quantum", "qmlops.io/commit": "a" * 40}
    )
    obj = changed(obj, "metadata.generateName", "iris-")
    assert validate_object(obj, "team-quantum/iris-vqc") == []
    leaked = changed(obj, "metadata.annotations", {"qmlops.io/credentials-secret": API_KEY})
    assert [p.rule for p in validate_object(leaked, "x")] == ["no-credentials"]
