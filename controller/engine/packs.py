"""Compliance packs: rules as data files (``controller/packs/<name>.yaml``), checks as typed code.

A pack file is data: each rule has an id, a severity, the controls it evidences
(``EU-AI-Act:Art.12``, ``GDPR:Art.5(1)(e)``, ``HIPAA:164.312(b)``...) and a check named from
:data:`CHECKS`, the fixed registry of check functions, with that check's typed parameters. A file
cannot run code: a check it names that is not in the registry, a parameter the check does not take,
a file too large or a value of the wrong type is refused with the file and the field.

A check looks at a :class:`Subject`: the model's effective spec (its QuantumPolicy floors applied),
its ledger, its versions and the backends its pipelines evaluate on, so a rule judges what was done,
not only what the spec declares. The spec-shape rules of :mod:`.governance` are reused by id
(``governance-rule``), never copied.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints, ValidationError, field_validator
from pydantic.alias_generators import to_camel
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from controller.api.common import BackendGlob, backend_allowed
from controller.api.packs import PACK_NAMES, PACK_SUFFIX, PACKS_DIR
from controller.api.quantummodel import DataClassification, Enforcement, QuantumModelSpec, RuleOutcome
from controller.engine import governance
from controller.engine.decisions import LedgerKind
from controller.engine.governance import Finding
from controller.engine.registry.ledger import Ledger
from controller.engine.registry.versions import Version

PACK_FILE_LIMIT = 64_000  # bytes per pack file
RULES_LIMIT = 64  # rules per pack


class PackError(ValueError):
    """A pack file that cannot be used; the message names the file and the field."""


class Severity(StrEnum):
    """As the Kubernetes policy working group's PolicyReport spells it."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


@dataclass(frozen=True)
class Subject:
    """What a check looks at: one model, its effective spec and its registry."""

    namespace: str
    name: str
    spec: QuantumModelSpec
    ledger: Ledger = field(default_factory=Ledger)
    versions: tuple[Version, ...] = ()
    pipeline_backends: tuple[str, ...] = ()  # the backends its pipelines' evaluate steps score on

    @property
    def declared_backends(self) -> list[str]:
        """The training backend, then every pipeline backend, once each."""
        return list(dict.fromkeys((self.spec.training.backend, *self.pipeline_backends)))

    def retired(self) -> set[int]:
        return {e.version for e in self.ledger.of_kind(LedgerKind.RETIRED) if e.version is not None}

    def used_backends(self) -> list[str]:
        """Every backend the history shows the model's data went to: its versions' trainings and every
        ``evaluated`` entry."""
        found = [v.backend for v in self.versions if v.backend]
        found += [str(e.data["backend"]) for e in self.ledger.of_kind(LedgerKind.EVALUATED) if e.data.get("backend")]
        return list(dict.fromkeys(b for b in found if b))


# --- the checks and their parameters ---------------------------------------------------------------


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, strict=True)


class NoParams(Params):
    pass


class GovernanceRuleParams(Params):
    rule: str = Field(max_length=64)

    @field_validator("rule")
    @classmethod
    def _known(cls, rule: str) -> str:
        if rule not in governance.RULES_BY_ID:
            raise ValueError(f"not a governance rule: one of {', '.join(governance.RULES_BY_ID)}")
        return rule


class RecordKeepingParams(Params):
    min_versions: int = Field(default=1, ge=1, le=10_000)


class ApprovalParams(Params):
    min_approvals: int = Field(default=1, ge=1, le=32)


class PurposeParams(Params):
    lawful_basis: bool = False


CardField = Literal["intendedUse", "limitations", "ethicalConsiderations", "trainingData", "caveats"]


class ModelCardParams(Params):
    fields: list[CardField] = Field(min_length=1, max_length=5)


class BackendsParams(Params):
    classifications: list[Annotated[DataClassification, Strict(False)]] = Field(default_factory=list, max_length=4)
    compliance: list[Annotated[str, StringConstraints(max_length=64)]] = Field(default_factory=list, max_length=16)
    allowed: list[BackendGlob] = Field(min_length=1, max_length=64)


def _versions(count: int) -> str:
    return f"{count} version{'' if count == 1 else 's'}"


def _pass(message: str) -> Finding:
    return Finding(RuleOutcome.PASS, message)


def _fail(message: str) -> Finding:
    return Finding(RuleOutcome.FAIL, message)


def _skip(message: str) -> Finding:
    return Finding(RuleOutcome.SKIP, message)


def governance_rule(subject: Subject, params: GovernanceRuleParams) -> Finding:
    """The result of one of governance's own rules on the effective spec."""
    return governance.RULES_BY_ID[params.rule].check(subject.spec)


def record_keeping(subject: Subject, params: RecordKeepingParams) -> Finding:
    """Record keeping is on (every version has its ``registered`` ledger entry naming its digest) and
    kept long enough (``retention.maxVersions``, when declared, is at least ``minVersions``)."""
    retention = subject.spec.governance.retention
    if retention is not None and retention.max_versions < params.min_versions:
        return _fail(
            f"governance.retention.maxVersions is {retention.max_versions}: records are kept for at least "
            f"{params.min_versions} versions"
        )
    registered = {(e.version, e.data.get("versionDigest")) for e in subject.ledger.of_kind(LedgerKind.REGISTERED)}
    unrecorded = [v.number for v in subject.versions if (v.number, v.digest) not in registered]
    if unrecorded:
        listed = ", ".join(str(n) for n in unrecorded[:10])
        return _fail(f"version {listed} has no registered ledger entry naming its digest")
    kept = "every version" if retention is None else f"up to {retention.max_versions} versions"
    return _pass(f"{_versions(len(subject.versions))}, each with its registered entry; keeps {kept}")


def approved_before_production(subject: Subject, params: ApprovalParams) -> Finding:
    """The champion has at least ``max(minApprovals, promotion.requiredApprovals)`` counted approvals
    (signed ones only under ``requireSignedApprovals``)."""
    champion = subject.ledger.champion()
    if champion is None:
        return _skip("no version is in production")
    required = max(params.min_approvals, subject.spec.promotion.required_approvals)
    signed = subject.spec.governance.require_signed_approvals
    counted = len(subject.ledger.approvers(champion, signed_only=signed))
    kind = "signed approvals" if signed else "approvals"
    if counted >= required:
        return _pass(f"version {champion} in production with {counted} {kind} (at least {required})")
    return _fail(f"version {champion} is in production with {counted} {kind}; at least {required} required")


def evaluated_on_backends(subject: Subject, _: NoParams) -> Finding:
    """Every declared backend (training, pipelines' evaluate steps) has a version trained or evaluated
    on it with an accuracy."""
    if not subject.versions:
        return _skip("no version yet")
    measured: set[str] = {v.backend for v in subject.versions if v.backend and "accuracy" in v.scalar_metrics()}
    for entry in subject.ledger.of_kind(LedgerKind.EVALUATED):
        metrics = entry.data.get("metrics")
        if entry.data.get("backend") and isinstance(metrics, dict) and "accuracy" in metrics:
            measured.add(str(entry.data["backend"]))
    missing = [b for b in subject.declared_backends if b not in measured]
    if missing:
        return _fail(f"accuracy never measured on {', '.join(missing)}")
    return _pass(f"accuracy measured on {', '.join(subject.declared_backends)}")


def retention_enforced(subject: Subject, _: NoParams) -> Finding:
    """``retention.maxVersions`` is declared and the versions not retired are no more than it."""
    retention = subject.spec.governance.retention
    if retention is None:
        return _fail("governance.retention.maxVersions is not declared")
    retired = subject.retired()
    kept = [v for v in subject.versions if v.number not in retired]
    limit = f"governance.retention.maxVersions ({retention.max_versions})"
    if len(kept) <= retention.max_versions:
        return _pass(f"{len(kept)} versions kept, within {limit}")
    # what retention itself never retires (controller/engine/reconcile/steps.py ``retire``): the
    # champion, the pinned version, the newest, the newest of the model's own trainings
    protected = {n for n in (subject.ledger.champion(), subject.spec.promotion.pin) if n is not None}
    protected.add(kept[-1].number)
    own = [v for v in kept if v.pipeline is None]
    if own:
        protected.add(own[-1].number)
    retirable = [v.number for v in kept if v.number not in protected]
    if retirable:
        shown = ", ".join(str(n) for n in retirable[: len(kept) - retention.max_versions])
        return _fail(f"{len(kept)} versions kept, more than {limit}: version(s) {shown} not retired")
    held = ", ".join(str(v.number) for v in kept)
    return _pass(f"{len(kept)} versions kept, above {limit} only by those retention keeps (versions {held})")


def purpose_stated(subject: Subject, params: PurposeParams) -> Finding:
    card = subject.spec.model_card
    if not (card and card.intended_use and card.intended_use.strip()):
        return _fail("state the purpose in modelCard.intendedUse")
    basis = subject.spec.governance.lawful_basis
    if params.lawful_basis and basis is None:
        return _fail("state the lawful basis in governance.lawfulBasis")
    return _pass("modelCard.intendedUse states the purpose" + (f"; lawful basis {basis.value}" if basis else ""))


def model_card(subject: Subject, params: ModelCardParams) -> Finding:
    card = subject.spec.model_card
    wire = card.to_wire() if card else {}
    missing = [name for name in params.fields if not str(wire.get(name) or "").strip()]
    if missing:
        return _fail(f"modelCard lacks {', '.join(missing)}")
    return _pass(f"modelCard states {', '.join(params.fields)}")


def enforced(subject: Subject, _: NoParams) -> Finding:
    if subject.spec.governance.enforcement is Enforcement.ENFORCE:
        return _pass("governance.enforcement is enforce")
    return _fail("governance.enforcement is audit: failures are reported, not blocked")


def backends_allowed(subject: Subject, params: BackendsParams) -> Finding:
    """For data of the given classifications (or under the given regimes), every backend declared and
    every backend the history shows was used matches ``allowed``."""
    gov = subject.spec.governance
    if gov.data_classification not in params.classifications and not set(params.compliance) & set(gov.compliance):
        return _skip(f"{gov.data_classification.value} data, none of {', '.join(params.compliance) or 'the regimes'}")
    seen = list(dict.fromkeys((*subject.declared_backends, *subject.used_backends())))
    outside = [b for b in seen if not backend_allowed(b, params.allowed)]
    if outside:
        return _fail(f"data sent or declared for {', '.join(outside)}, outside {', '.join(params.allowed)}")
    return _pass(f"{', '.join(seen)} within {', '.join(params.allowed)}")


@dataclass(frozen=True)
class Check:
    params: type[Params]
    run: Callable[[Subject, Any], Finding]
    doc: str


CHECKS: dict[str, Check] = {
    "governance-rule": Check(GovernanceRuleParams, governance_rule, "one of governance's rules on the effective spec"),
    "record-keeping": Check(RecordKeepingParams, record_keeping, "every version recorded; retention long enough"),
    "approved-before-production": Check(ApprovalParams, approved_before_production, "the champion's approvals"),
    "evaluated-on-backends": Check(NoParams, evaluated_on_backends, "accuracy measured on each declared backend"),
    "retention-enforced": Check(NoParams, retention_enforced, "versions not retired within retention.maxVersions"),
    "purpose-stated": Check(PurposeParams, purpose_stated, "purpose (and lawful basis) stated"),
    "model-card": Check(ModelCardParams, model_card, "the model card's fields stated"),
    "enforced": Check(NoParams, enforced, "governance.enforcement is enforce"),
    "backends-allowed": Check(BackendsParams, backends_allowed, "data of a class only on allowed backends"),
}


# --- pack files ------------------------------------------------------------------------------------

RuleId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$")]
Control = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{1,32}:[A-Za-z0-9.()-]{1,48}$")]


class RuleFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: RuleId
    severity: Severity = Field(strict=False)
    controls: list[Control] = Field(min_length=1, max_length=16)
    description: str = Field(max_length=512)
    check: str = Field(max_length=64)
    params: dict[str, Any] = Field(default_factory=dict, max_length=16)


class PackFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    title: str = Field(max_length=256)
    rules: list[RuleFile] = Field(min_length=1, max_length=RULES_LIMIT)


@dataclass(frozen=True)
class PackRule:
    pack: str
    id: str
    severity: Severity
    controls: tuple[str, ...]
    description: str
    check: str
    params: Params

    def evaluate(self, subject: Subject) -> Finding:
        return CHECKS[self.check].run(subject, self.params)


@dataclass(frozen=True)
class Pack:
    name: str
    title: str
    rules: tuple[PackRule, ...]


def _where(loc: Sequence[int | str]) -> str:
    return ".".join(str(part) for part in loc) or "(the file)"


def load_pack(path: Path, name: str | None = None) -> Pack:
    """One pack file, bounds checked; :class:`PackError` names the file and the field."""
    name = name or path.name.removesuffix(PACK_SUFFIX)
    try:
        if path.is_symlink() or not path.is_file():
            raise PackError(f"{path}: not a regular file")
        if path.stat().st_size > PACK_FILE_LIMIT:
            raise PackError(f"{path}: larger than {PACK_FILE_LIMIT} bytes")
        text = path.read_text(encoding="utf-8")
        raw = YAML(typ="safe", pure=True).load(text)
    except (OSError, UnicodeDecodeError, YAMLError) as err:
        raise PackError(f"{path}: not readable YAML ({type(err).__name__})") from None
    try:
        data = PackFile.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        raise PackError(f"{path}: {_where(first['loc'])}: {first['msg']}") from None
    rules: list[PackRule] = []
    for index, rule in enumerate(data.rules):
        where = f"{path}: rules.{index}"
        if any(r.id == rule.id for r in rules):
            raise PackError(f"{where}.id: a second rule {rule.id!r}")
        check = CHECKS.get(rule.check)
        if check is None:
            raise PackError(f"{where}.check: unknown check {rule.check[:64]!r}: one of {', '.join(sorted(CHECKS))}")
        try:
            params = check.params.model_validate(rule.params)
        except ValidationError as err:
            first = err.errors()[0]
            raise PackError(f"{where}.params.{_where(first['loc'])}: {first['msg']}") from None
        rules.append(PackRule(name, rule.id, rule.severity, tuple(rule.controls), rule.description, rule.check, params))
    return Pack(name, data.title, tuple(rules))


@cache
def packs() -> tuple[Pack, ...]:
    """Every pack shipped with qmlops, by name."""
    return tuple(load_pack(PACKS_DIR / f"{name}{PACK_SUFFIX}", name) for name in PACK_NAMES)


def pack(name: str) -> Pack:
    found = next((p for p in packs() if p.name == name), None)
    if found is None:
        raise PackError(f"unknown compliance pack {name[:64]!r}")
    return found
