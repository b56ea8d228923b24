"""Policy reports (issue 12): every pack rule x model as a wgpolicyk8s.io PolicyReport, from the spec, the
registry and the history; the exit codes of ``qmlops policy report``; ``policy.json`` written by the reconcile
once, not again on a reconcile with nothing new, and the summary in status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from controller.api.quantummodel import QuantumModelSpec
from controller.engine.decisions import LedgerKind
from controller.engine.packs import Subject, pack
from controller.engine.reconcile import Reconciler
from controller.engine.registry import Registry
from controller.engine.registry.ledger import Ledger, draft
from controller.engine.registry.versions import Version
from controller.runner.specs import observe
from tests.registry.repos import DEFAULT_GOVERNANCE, Repos, git, signing_controller, tiny_spec
from tests.training.specs import tiny
from tests.validation.cli import Result, qmlops

CARD = "  modelCard:\n    intendedUse: sorting iris flowers for the botany course\n"
KEPT = DEFAULT_GOVERNANCE + "\n    compliance: [gdpr]\n    lawfulBasis: consent\n    retention: {maxVersions: 5}"
LOOSE = DEFAULT_GOVERNANCE + "\n    compliance: [gdpr]\n    enforcement: audit"


def report(capsys: pytest.CaptureFixture[str], work: Path, *args: str) -> Result:
    return qmlops(capsys, "policy", "report", "--repo", str(work), *args)


def results(item: dict[str, Any]) -> dict[str, str]:
    return {f"{r['policy']}/{r['rule']}": r["result"] for r in item["results"]}


def by_model(listed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{i['scope']['namespace']}/{i['scope']['name']}": i for i in listed["items"]}


@pytest.mark.slow
def test_a_passing_and_a_failing_model_get_their_results_exit_codes_and_policy_json_once(
    repos: Repos, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = repos.clone("work")
    repos.commit_file(work, "specs/kept.yaml", tiny_spec("kept", governance=KEPT) + CARD, "kept")
    repos.commit_file(work, "specs/loose.yaml", tiny_spec("loose", governance=LOOSE), "loose")
    assert qmlops(capsys, "run", "--repo", str(work), "--once").code == 0

    listed = report(capsys, work, "--format", "json")
    assert listed.code == 0, listed.err  # the loose model fails only where it is audited
    items = by_model(json.loads(listed.out))
    kept, loose = items["demo/kept"], items["demo/loose"]
    assert (kept["apiVersion"], kept["kind"]) == ("wgpolicyk8s.io/v1alpha2", "PolicyReport")
    assert results(kept) == {
        "gdpr/storage-limitation": "pass",
        "gdpr/purpose-limitation": "pass",
        "gdpr/records-of-processing": "pass",
    }
    assert results(loose) == {
        "gdpr/storage-limitation": "warn",
        "gdpr/purpose-limitation": "warn",
        "gdpr/records-of-processing": "pass",
    }
    assert loose["summary"] == {"pass": 1, "fail": 0, "warn": 2, "error": 0, "skip": 0}
    storage = next(r for r in kept["results"] if r["rule"] == "storage-limitation")
    assert storage["severity"] == "high" and storage["properties"]["controls"] == "GDPR:Art.5(1)(e)"
    assert storage["resources"] == [
        {"apiVersion": "qmlops.io/v1alpha1", "kind": "QuantumModel", "namespace": "demo", "name": "kept"}
    ]

    # the controller wrote the very same report, in its own commit, and a reconcile with nothing new writes nothing
    written = json.loads((work / "registry/demo/kept/policy.json").read_text())
    assert written == kept
    assert len(git(work, "log", "--format=%H", "--", "registry/demo/kept/policy.json").split()) == 1
    head = git(work, "rev-parse", "HEAD")
    assert qmlops(capsys, "run", "--repo", str(work), "--once").code == 0
    assert git(work, "rev-parse", "HEAD") == head
    assert qmlops(capsys, "plan", "--repo", str(work)).code in (0, 1)
    assert git(work, "status", "--porcelain") == "" and git(work, "rev-parse", "HEAD") == head
    assert qmlops(capsys, "audit", "--repo", str(work), "--verify").code == 0  # the report's commits verify

    # enforced, the loose model's failures fail the report; a QuantumPolicy's pack is checked on the history too
    enforced = tiny_spec("loose", governance=LOOSE.replace("enforcement: audit", "enforcement: enforce"))
    repos.commit_file(work, "specs/loose.yaml", enforced, "enforce")
    floors = tmp_path / "policies"
    floors.mkdir()
    (floors / "soc2.yaml").write_text(
        "apiVersion: qmlops.io/v1alpha1\nkind: QuantumPolicy\nmetadata: {name: change-control}\n"
        "spec:\n  match: {namespaces: [demo]}\n  packs: [soc2]\n"
    )
    failing = report(capsys, work, "--policies", str(floors))
    assert failing.code == 1
    assert "demo/loose: 3 pass, 5 fail, 0 warn" in failing.out
    assert "  fail  high     gdpr/storage-limitation: governance.retention.maxVersions is not declared" in failing.out
    assert "  fail  high     soc2/change-approval: version 1 is in production with 0 approvals" in failing.out
    assert "(SOC2:CC8.1)" in failing.out


@pytest.mark.slow
def test_the_status_keeps_the_counts_and_the_failing_rules(repos: Repos, capsys: pytest.CaptureFixture[str]) -> None:
    work = repos.clone("work")
    repos.commit_file(work, "specs/loose.yaml", tiny_spec("loose", governance=LOOSE), "loose")
    registry = Registry(work)
    [(observed, _)] = observe(registry.git, work / "specs").models
    outcome = Reconciler(registry).reconcile(observed)
    assert outcome.status.policy is not None and outcome.status.policy.report is not None
    summary = outcome.status.policy.report
    assert summary.packs == ["gdpr"]
    assert (summary.summary.pass_, summary.summary.warn, summary.summary.fail) == (1, 2, 0)
    assert summary.failing == []  # warnings under audit are not failures
    assert outcome.status.to_wire()["policy"]["report"]["summary"]["warn"] == 2
    head = git(work, "rev-parse", "HEAD")
    again = Reconciler(registry).reconcile(observed)
    assert git(work, "rev-parse", "HEAD") == head and again.status.policy.report == summary  # type: ignore[union-attr]


@pytest.mark.slow
def test_the_report_commit_is_signed_like_every_other_so_a_signed_registry_stays_trusted(
    repos: Repos, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    controller = signing_controller(tmp_path / "keys")
    work = repos.clone("work")
    repos.commit_file(work, "specs/kept.yaml", tiny_spec("kept", governance=KEPT) + CARD, "kept")
    first = qmlops(capsys, "run", "--repo", str(work), "--once", *controller.flags)
    assert first.code == 0, first.err
    newest = git(work, "log", "-1", "--format=%H", "--", "registry/demo/kept")
    assert newest == git(work, "log", "-1", "--format=%H", "--", "registry/demo/kept/policy.json")
    head = git(work, "rev-parse", "HEAD")
    again = qmlops(capsys, "run", "--repo", str(work), "--once", *controller.flags)  # not stalled as untrusted
    assert again.code == 0 and "UntrustedHistory" not in again.out + again.err
    assert git(work, "rev-parse", "HEAD") == head
    checked = qmlops(capsys, "audit", "--repo", str(work), "--verify", "--allowed-signers", str(controller.signers))
    assert checked.code == 0, checked.out + checked.err


@pytest.mark.slow
def test_packs_removed_take_policy_json_out_of_head_in_a_signed_commit_that_verify_accepts(
    repos: Repos, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    controller = signing_controller(tmp_path / "keys")
    work = repos.clone("work")
    verify = ["audit", "--repo", str(work), "--verify", "--allowed-signers", str(controller.signers)]
    report_path = "registry/demo/kept/policy.json"
    repos.commit_file(work, "specs/kept.yaml", tiny_spec("kept", governance=KEPT) + CARD, "kept")
    assert qmlops(capsys, "run", "--repo", str(work), "--once", *controller.flags).code == 0
    assert (work / report_path).is_file()

    no_packs = KEPT.replace("\n    compliance: [gdpr]", "")
    repos.commit_file(work, "specs/kept.yaml", tiny_spec("kept", governance=no_packs) + CARD, "no packs")
    planned = qmlops(capsys, "plan", "--repo", str(work), "--output", "json")
    assert planned.code == 1, planned.err  # a change: the report goes
    [row] = json.loads(planned.out)
    assert "remove policy.json: no compliance pack applies" in row["reason"] and row["changes"]
    assert (work / report_path).is_file(), "plan writes nothing"
    assert qmlops(capsys, "run", "--repo", str(work), "--once", *controller.flags).code == 0
    assert not (work / report_path).exists()
    removal = git(
        work,
        "-c",
        f"gpg.ssh.allowedSignersFile={controller.signers}",
        "log",
        "-1",
        "--format=%H %G? %s",
        "--",
        report_path,
    )
    assert " G qmlops: demo/kept: policy report removed: no compliance pack applies" in removal  # signed
    assert git(work, "show", "--name-status", "--format=", removal.split()[0]) == f"D\t{report_path}"  # alone
    assert json.loads(git(work, "show", f"{removal.split()[0]}~1:{report_path}"))["kind"] == "PolicyReport"  # kept
    registry = Registry(work)
    [(observed, _)] = observe(registry.git, work / "specs").models
    outcome = Reconciler(registry).reconcile(observed)
    assert outcome.status.policy is not None and outcome.status.policy.report is None
    assert qmlops(capsys, "plan", "--repo", str(work)).code == 0  # nothing left to remove
    checked = qmlops(capsys, *verify)
    assert checked.code == 0, checked.out + checked.err  # the controller's removal verifies

    # someone with push access removing the report by hand is named by verify
    repos.commit_file(work, "specs/kept.yaml", tiny_spec("kept", governance=KEPT) + CARD, "packs again")
    assert qmlops(capsys, "run", "--repo", str(work), "--once", *controller.flags).code == 0
    assert (work / report_path).is_file()
    git(work, "rm", "--quiet", report_path)
    git(work, "commit", "--quiet", "-m", "drop the report")
    tampered = qmlops(capsys, *verify)
    assert tampered.code == 1 and "not signed by the controller's key" in tampered.out
    assert git(work, "rev-parse", "--short=12", "HEAD") in tampered.out


def test_bad_input_is_one_line_naming_the_flag_and_exit_2(
    repos: Repos, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = repos.clone("work")
    missing = report(capsys, work, "--specs", "nowhere")
    assert missing.code == 2 and missing.err.startswith("qmlops policy report: --specs: nowhere") and not missing.out
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "p.yaml").write_text("kind: QuantumPolicy\nmetadata: {name: p}\nspec: {packs: [pci]}\n")
    unknown = report(capsys, work, "--policies", str(tmp_path / "bad"))
    assert unknown.code == 2 and "--policies" in unknown.err and "spec.packs.0" in unknown.err
    assert len(unknown.err.strip().splitlines()) == 1


def test_a_registry_that_cannot_be_read_is_an_error_for_every_rule_and_fails_the_report(
    repos: Repos, capsys: pytest.CaptureFixture[str]
) -> None:
    work = repos.clone("work")
    repos.commit_file(work, "specs/kept.yaml", tiny_spec("kept", governance=KEPT) + CARD, "kept")
    repos.commit_file(work, "registry/demo/kept/ledger.jsonl", '{"seq": "hunter2-token"}\n', "a broken ledger")
    broken = report(capsys, work, "--format", "json")
    assert broken.code == 1
    [item] = json.loads(broken.out)["items"]
    assert set(results(item).values()) == {"error"}
    assert item["summary"]["error"] == 3
    assert {r["message"] for r in item["results"]} == {
        "the registry cannot be read (RegistryError): qmlops audit --verify names the file"
    }  # never what the broken file holds
    assert "hunter2" not in json.dumps(item)


# --- checks on the history, not only the spec -------------------------------------------------------------


def version(number: int, backend: str, accuracy: float = 0.9) -> Version:
    artifact = {"metrics": {"accuracy": accuracy}, "lineage": {"backend": backend}}
    return Version(number, {"digest": f"sha256:{number:064x}", "artifact": artifact})


def ledger(*entries: tuple[str, int, dict[str, Any]]) -> Ledger:
    out: list[Any] = []
    for kind, number, data in entries:
        out.append(draft(out[-1] if out else None, at="2026-01-01T00:00:00Z", kind=kind, model="demo/m",
                         version=number, message=kind, data=data))  # fmt: skip
    return Ledger(tuple(out))


def registered(number: int) -> tuple[str, int, dict[str, Any]]:
    return (LedgerKind.REGISTERED, number, {"versionDigest": f"sha256:{number:064x}"})


def check(pack_name: str, rule_id: str, subject: Subject) -> tuple[str, str]:
    rule = next(r for r in pack(pack_name).rules if r.id == rule_id)
    finding = rule.evaluate(subject)
    return finding.outcome.value, finding.message


def spec(**governance: Any) -> QuantumModelSpec:
    return tiny(governance={"allowedBackends": ["*"], **governance})


def test_retention_counts_the_versions_not_retired() -> None:
    kept = spec(retention={"maxVersions": 2})
    three = tuple(version(n, "local:aer") for n in (1, 2, 3))
    entries = ledger(registered(1), registered(2), registered(3))
    assert check("gdpr", "storage-limitation", Subject("demo", "m", kept, entries, three))[0] == "fail"
    retired = ledger(registered(1), registered(2), registered(3), (LedgerKind.RETIRED, 1, {}))
    assert check("gdpr", "storage-limitation", Subject("demo", "m", kept, retired, three)) == (
        "pass",
        "2 versions kept, within governance.retention.maxVersions (2)",
    )


def test_retention_is_enforced_when_only_the_versions_it_never_retires_are_above_the_limit() -> None:
    one = spec(retention={"maxVersions": 1})
    three = tuple(version(n, "local:aer") for n in (1, 2, 3))
    champion = (LedgerKind.PROMOTED, 1, {})
    waiting = ledger(registered(1), champion, registered(2), registered(3))
    assert check("gdpr", "storage-limitation", Subject("demo", "m", one, waiting, three)) == (
        "fail",
        "3 versions kept, more than governance.retention.maxVersions (1): version(s) 2 not retired",
    )
    done = ledger(registered(1), champion, registered(2), registered(3), (LedgerKind.RETIRED, 2, {}))
    outcome, message = check("gdpr", "storage-limitation", Subject("demo", "m", one, done, three))
    assert outcome == "pass" and "versions 1, 3" in message  # the champion and the newest stay


def test_record_keeping_names_a_version_without_its_registered_entry() -> None:
    subject = Subject("demo", "m", spec(), ledger(registered(1)), (version(1, "local:aer"), version(2, "local:aer")))
    assert check("gdpr", "records-of-processing", subject) == (
        "fail",
        "version 2 has no registered ledger entry naming its digest",
    )
    short = spec(retention={"maxVersions": 2})
    assert check("eu-ai-act-high-risk", "record-keeping", Subject("demo", "m", short))[0] == "fail"


def test_phi_evaluated_on_a_backend_outside_the_allowed_ones_fails_even_when_the_spec_looks_clean() -> None:
    restricted = spec(dataClassification="restricted")
    clean = Subject("demo", "m", restricted, ledger(registered(1)), (version(1, "local:statevector"),))
    assert check("hipaa", "phi-backends", clean)[0] == "pass"
    evaluated = ledger(registered(1), (LedgerKind.EVALUATED, 1, {"backend": "ibm:ibm_kyiv", "metrics": {}}))
    leaked = Subject("demo", "m", restricted, evaluated, (version(1, "local:statevector"),))
    outcome, message = check("hipaa", "phi-backends", leaked)
    assert outcome == "fail" and "ibm:ibm_kyiv" in message
    assert check("hipaa", "phi-backends", Subject("demo", "m", spec()))[0] == "skip"


def test_accuracy_is_measured_on_every_declared_backend() -> None:
    versions = (version(1, "local:statevector"),)
    subject = Subject("demo", "m", spec(), ledger(registered(1)), versions, ("fake:manila",))
    assert check("iso-42001", "verification-and-validation", subject) == (
        "fail",
        "accuracy never measured on fake:manila",
    )
    measured = ledger(
        registered(1), (LedgerKind.EVALUATED, 1, {"backend": "fake:manila", "metrics": {"accuracy": 0.8}})
    )
    assert (
        check(
            "iso-42001",
            "verification-and-validation",
            Subject("demo", "m", spec(), measured, versions, ("fake:manila",)),
        )[0]
        == "pass"
    )


def test_human_oversight_counts_the_champions_approvals() -> None:
    versions = (version(1, "local:statevector"),)
    promoted = ledger(registered(1), (LedgerKind.PROMOTED, 1, {}))
    assert (
        check("eu-ai-act-high-risk", "human-oversight", Subject("demo", "m", spec(), promoted, versions))[0] == "fail"
    )
    approved = ledger(
        registered(1), (LedgerKind.APPROVED, 1, {"approver": "bob@example.com"}), (LedgerKind.PROMOTED, 1, {})
    )
    assert (
        check("eu-ai-act-high-risk", "human-oversight", Subject("demo", "m", spec(), approved, versions))[0] == "pass"
    )
    assert check("eu-ai-act-high-risk", "human-oversight", Subject("demo", "m", spec()))[0] == "skip"
