"""Trust in the operator (issue 12), end to end in the Kubernetes harness: it signs its commits with the
SSH key of ``--signing-key-secret``, and the QuantumPolicies it watches set floors under the specs."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from controller.engine.registry.trust import AllowedSigners
from tests.operator.operator_env import NAMESPACE, OperatorEnv, git, secret, tiny_model
from tests.operator.test_end_to_end import env
from tests.registry.repos import signing_controller

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="signing needs OpenSSH's ssh-keygen"),
]
__all__ = ["env"]


async def test_the_operator_signs_every_commit_with_the_key_from_its_secret(env: OperatorEnv, tmp_path: Path) -> None:
    controller = signing_controller(tmp_path / "keys", "qmlops-operator@qmlops.io")
    await env.client.create(secret("signing-key", **{"ssh-privatekey": controller.key.read_text()}))
    signers = AllowedSigners.read(controller.signers)
    async with env.operator(signing_key_secret=f"{NAMESPACE}/signing-key", allowed_signers=signers):
        await env.client.create(tiny_model())
        status = await env.until_phase("Ready")
        assert status["champion"]["version"] == 1
    assert env.decisions() == ["registered", "gate-passed", "promoted"]
    marks = git(
        "-c",
        f"gpg.ssh.allowedSignersFile={controller.signers}",
        "log",
        "--format=%G?",
        "main",
        "--",
        "registry",
        cwd=env.remote,
    ).split()
    assert marks == ["G", "G", "G"]
    key_files = list((env.tmp / "pod-a" / "signing").iterdir())
    assert [oct(f.stat().st_mode & 0o777) for f in key_files] == ["0o600"]


async def test_an_unusable_signing_key_secret_stalls_the_model_and_commits_nothing(env: OperatorEnv) -> None:
    await env.client.create(secret("signing-key", **{"ssh-privatekey": "not a key"}))
    async with env.operator(signing_key_secret=f"{NAMESPACE}/signing-key"):
        await env.client.create(tiny_model())
        await env.until(lambda: "--signing-key-secret" in (env.status().get("message") or ""))
    assert "not a key" not in str(env.status())
    assert env.decisions() == []


async def test_a_quantum_policy_floor_blocks_a_model_that_its_spec_would_let_through(env: OperatorEnv) -> None:
    floor = {
        "apiVersion": "qmlops.io/v1alpha1",
        "kind": "QuantumPolicy",
        "metadata": {"name": "production-floor"},
        "spec": {"match": {"namespaces": [NAMESPACE]}, "floor": {"allowedBackends": ["fake:*"]}},
    }
    await env.client.create(floor)
    async with env.operator() as runtime:
        await env.until(lambda: "production-floor" in runtime.policies)
        await env.client.create(tiny_model())  # local:statevector, which its own spec allows
        status = await env.until_phase("Blocked")
    assert "blocked by rule allowed-backends" in status["message"] and "fake:*" in status["message"]
    assert status["policy"]["floors"] == [
        {"field": "governance.allowedBackends", "value": "fake:*", "source": "QuantumPolicy/production-floor"}
    ]
    assert env.decisions() == ["blocked"]


async def test_a_quantum_policys_packs_write_policy_json_and_dropping_them_removes_it(env: OperatorEnv) -> None:
    floor = {
        "apiVersion": "qmlops.io/v1alpha1",
        "kind": "QuantumPolicy",
        "metadata": {"name": "privacy"},
        "spec": {"match": {"namespaces": [NAMESPACE]}, "packs": ["gdpr"]},
    }
    report_path = f"main:registry/{NAMESPACE}/iris-tiny/policy.json"

    def report() -> dict[str, Any] | None:
        shown = subprocess.run(
            ["git", "--git-dir", str(env.remote), "show", report_path], capture_output=True, text=True, check=False
        )
        return json.loads(shown.stdout) if shown.returncode == 0 else None

    await env.client.create(floor)
    async with env.operator() as runtime:
        await env.until(lambda: "privacy" in runtime.policies)
        await env.client.create(  # what gdpr asks of the spec, declared: the model trains and passes
            tiny_model(
                iterations=2,
                governance={"allowedBackends": ["local:*"], "lawfulBasis": "consent", "retention": {"maxVersions": 5}},
                modelCard={"intendedUse": "sorting iris flowers", "limitations": "two classes"},
            )
        )
        await env.until(lambda: ((env.status().get("policy") or {}).get("report") or {}).get("packs") == ["gdpr"])
        await env.until(lambda: report() is not None, 60)
        written = report()
        assert written is not None and written["kind"] == "PolicyReport"
        assert {r["policy"] for r in written["results"]} == {"gdpr"}
        assert env.status()["policy"]["report"]["summary"] == written["summary"] and written["summary"]["fail"] == 0
        assert git("--git-dir", str(env.remote), "log", "-1", "--format=%s", "main", "--", "registry").startswith(
            f"qmlops: {NAMESPACE}/iris-tiny: policy report"
        )

        await env.client.patch("QuantumPolicy", None, "privacy", {"spec": {"packs": []}})  # the floor drops its packs
        await env.until(lambda: report() is None, 60)
        await env.until(lambda: "report" not in (env.status().get("policy") or {}), 60)
    removal = git("--git-dir", str(env.remote), "log", "-1", "--format=%H%x1f%s", "main", "--", "registry")
    sha, subject = removal.strip().split("\x1f")
    assert "policy report removed: no compliance pack applies" in subject
    assert git("--git-dir", str(env.remote), "show", "--name-status", "--format=", sha).split() == [
        "D",
        report_path.removeprefix("main:"),
    ]
    assert env.decisions() == ["registered", "gate-passed", "promoted", "", ""]  # two report commits, no decision


def test_the_operator_refuses_unusable_trust_flags_naming_each(tmp_path: Path) -> None:
    import argparse

    from controller.cli import operator as operator_cli

    parser = argparse.ArgumentParser()
    operator_cli.register(parser.add_subparsers())
    broken = tmp_path / "allowed_signers"
    broken.write_text("qmlops@example.invalid ssh-ed25519\n")
    for argv, message in [
        (["--signing-key-secret", "no-namespace"], "--signing-key-secret 'no-namespace': expected NAMESPACE/NAME"),
        (["--allowed-signers", str(broken)], "--allowed-signers: .* line 1: expected"),
        (["--allowed-signers", str(tmp_path / "missing")], "--allowed-signers: .*: no such file"),
        (["--signed-since", "HEAD"], "--signed-since: needs --allowed-signers"),
    ]:
        with pytest.raises(operator_cli.UsageError, match=message):
            operator_cli.build_config(parser.parse_args(["operator", "--repo", "x", *argv]))
