"""Compliance packs as data (issue 12): each shipped pack loads, names only checks from the engine's
registry, and a pack file that is hostile (an unknown check, too large, values of the wrong type) is
refused naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.api.packs import PACK_NAMES
from controller.api.quantumpolicy import QuantumPolicy
from controller.engine.packs import CHECKS, PACK_FILE_LIMIT, PackError, load_pack, packs

GOOD_RULE = """\
title: a pack
rules:
  - id: storage
    severity: high
    controls: ["GDPR:Art.5(1)(e)"]
    description: keeps no more than it may
    check: {check}
    params: {params}
"""


def test_the_five_packs_ship_as_files_and_each_rule_names_a_registered_check() -> None:
    assert PACK_NAMES == ("eu-ai-act-high-risk", "gdpr", "hipaa", "iso-42001", "soc2")
    loaded = packs()
    assert [p.name for p in loaded] == list(PACK_NAMES)
    for pack in loaded:
        assert pack.rules, pack.name
        for rule in pack.rules:
            assert rule.check in CHECKS
            assert rule.controls and all(":" in c for c in rule.controls)
    controls = {c for p in loaded for r in p.rules for c in r.controls}
    assert {"EU-AI-Act:Art.12", "GDPR:Art.5(1)(e)", "HIPAA:164.312(b)", "SOC2:CC8.1", "ISO-42001:A.6.2.8"} <= controls


def test_a_policy_may_require_any_shipped_pack_and_no_other() -> None:
    doc = {"kind": "QuantumPolicy", "metadata": {"name": "p"}, "spec": {"packs": ["eu-ai-act-high-risk", "iso-42001"]}}
    assert QuantumPolicy.model_validate(doc).spec.packs == ["eu-ai-act-high-risk", "iso-42001"]
    doc["spec"] = {"packs": ["pci-dss"]}
    with pytest.raises(ValueError, match="unknown compliance pack 'pci-dss'"):
        QuantumPolicy.model_validate(doc)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (GOOD_RULE.format(check="run-shell", params="{}"), "rules.0.check: unknown check 'run-shell'"),
        (GOOD_RULE.format(check="record-keeping", params="{minVersions: many}"), "rules.0.params.minVersions"),
        (GOOD_RULE.format(check="record-keeping", params="{minVersions: '3'}"), "rules.0.params.minVersions"),
        (GOOD_RULE.format(check="record-keeping", params="{command: rm}"), "rules.0.params.command"),
        (GOOD_RULE.format(check="governance-rule", params="{rule: no-such-rule}"), "rules.0.params.rule"),
        (GOOD_RULE.format(check="enforced", params="{}").replace("severity: high", "severity: 9"), "rules.0.severity"),
        (GOOD_RULE.format(check="enforced", params="{}").replace("GDPR:Art.5(1)(e)", "$(id)"), "rules.0.controls.0"),
        (GOOD_RULE.format(check="enforced", params="{}") + "python: import os\n", "python"),
        ("title: [a, list]\nrules: []\n", "title"),
        ("- just\n- a list\n", "(the file)"),
    ],
)
def test_a_hostile_pack_file_is_refused_naming_the_file_and_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text(text)
    with pytest.raises(PackError) as refused:
        load_pack(path)
    assert str(refused.value).startswith(f"{path}: ")
    assert field in str(refused.value)


def test_a_pack_file_too_large_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(GOOD_RULE.format(check="enforced", params="{}") + "#" * PACK_FILE_LIMIT)
    with pytest.raises(PackError, match=f"{path}: larger than {PACK_FILE_LIMIT} bytes"):
        load_pack(path)


def test_a_well_formed_pack_file_loads_with_its_typed_parameters(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(GOOD_RULE.format(check="record-keeping", params="{minVersions: 4}"))
    rule = load_pack(path).rules[0]
    assert (rule.pack, rule.id, rule.severity.value, rule.controls) == (
        "mine",
        "storage",
        "high",
        ("GDPR:Art.5(1)(e)",),
    )
    assert rule.params.model_dump() == {"min_versions": 4}
