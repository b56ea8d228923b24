"""QuantumPolicy floors applied to a model's spec: the effective governance, and where each value came from.

A policy applies to a model when every criterion of its ``match`` holds (namespaces, labels,
dataClassification as the spec declares it). Its floor is the least the model may declare; the spec may
tighten each value, never loosen it:

- ``enforcement: enforce`` wins over ``audit``;
- ``maxShots``, ``qpuBudgetSeconds`` and ``retention.maxVersions``: the smallest;
- ``qpuBudgetWindow``: the longest (a longer window counts more of what was spent);
- ``requiredApprovals``: the largest; ``requireSignedApprovals``, ``separationOfDuties`` and
  ``pinRequiresApproval``: any true is true;
- ``allowedBackends``: the training backend must match the spec's globs and every floor's; the effective
  list is the spec's while the backend matches all of them, else the floor's it fails (so the
  ``allowed-backends`` rule blames the floor);
- ``packs``: added to ``governance.compliance``.

The effective spec goes through the same governance, approvals and promotion as the spec itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from controller.api.common import backend_allowed, days
from controller.api.quantummodel import DEFAULT_BUDGET_WINDOW, Enforcement, QuantumModelSpec, Retention
from controller.api.quantumpolicy import QuantumPolicy
from controller.engine import documents

POLICY_FILE_LIMIT = 256_000  # bytes per file
POLICY_FILES_LIMIT = 256


class PolicyError(ValueError):
    """A QuantumPolicy file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Source:
    """One effective value a policy set or tightened, and the policy it came from."""

    field: str  # as the spec writes it: governance.maxShots, promotion.requiredApprovals...
    value: Any
    policy: str

    def to_json(self) -> dict[str, Any]:
        return {"field": self.field, "value": self.value, "source": f"QuantumPolicy/{self.policy}"}

    @property
    def text(self) -> str:
        """The value as YAML would show it inline: ``true``, ``100``, ``fake:*, ibm:*``."""
        if isinstance(self.value, bool):
            return "true" if self.value else "false"
        if isinstance(self.value, list):
            return ", ".join(str(v) for v in self.value)
        return str(self.value)

    def describe(self) -> str:
        return f"{self.field}: {self.text} (QuantumPolicy {self.policy})"


@dataclass(frozen=True)
class Effective:
    spec: QuantumModelSpec
    sources: tuple[Source, ...] = ()
    policies: tuple[str, ...] = ()  # the policies that matched
    pin_requires_approval: str | None = None  # the policy that asks it

    @property
    def changed(self) -> bool:
        return bool(self.sources)


def applies(policy: QuantumPolicy, namespace: str, labels: dict[str, str] | None, spec: QuantumModelSpec) -> bool:
    match = policy.spec.match
    if match.namespaces is not None and namespace not in match.namespaces:
        return False
    if match.labels and any((labels or {}).get(k) != v for k, v in match.labels.items()):
        return False
    classes = match.data_classification
    return classes is None or spec.governance.data_classification in classes


def effective(
    spec: QuantumModelSpec, namespace: str, labels: dict[str, str] | None, policies: list[QuantumPolicy]
) -> Effective:
    """``spec`` with the floors of the policies that match it applied (see the module's docstring)."""
    matched = sorted((p for p in policies if applies(p, namespace, labels, spec)), key=lambda p: p.metadata.name)
    if not matched:
        return Effective(spec)
    gov: dict[str, Any] = {}
    promo: dict[str, Any] = {}
    sources: list[Source] = []
    pin_policy: str | None = None

    def current(section: dict[str, Any], key: str, model: Any) -> Any:
        return section[key] if key in section else getattr(model, key)

    for policy in matched:
        name, floor = policy.metadata.name, policy.spec.floor
        g, p = spec.governance, spec.promotion
        if floor.enforcement is Enforcement.ENFORCE and current(gov, "enforcement", g) is not Enforcement.ENFORCE:
            gov["enforcement"] = Enforcement.ENFORCE
            sources.append(Source("governance.enforcement", "enforce", name))
        for key, wire in (("max_shots", "maxShots"), ("qpu_budget_seconds", "qpuBudgetSeconds")):
            limit, declared = getattr(floor, key), current(gov, key, g)
            if limit is not None and (declared is None or limit < declared):
                gov[key] = limit
                sources.append(Source(f"governance.{wire}", limit, name))
        window = floor.qpu_budget_window
        if window is not None and days(window) > days(current(gov, "qpu_budget_window", g) or DEFAULT_BUDGET_WINDOW):
            gov["qpu_budget_window"] = window
            sources.append(Source("governance.qpuBudgetWindow", window, name))
        if floor.retention is not None:
            kept = current(gov, "retention", g)
            if kept is None or floor.retention.max_versions < kept.max_versions:
                gov["retention"] = Retention(max_versions=floor.retention.max_versions)
                sources.append(Source("governance.retention.maxVersions", floor.retention.max_versions, name))
        for key, wire in (
            ("require_signed_approvals", "requireSignedApprovals"),
            ("separation_of_duties", "separationOfDuties"),
        ):
            if getattr(floor, key) and not current(gov, key, g):
                gov[key] = True
                sources.append(Source(f"governance.{wire}", True, name))
        if floor.allowed_backends is not None:
            declared = current(gov, "allowed_backends", g)
            backend = spec.training.backend
            if declared is None or not backend_allowed(backend, floor.allowed_backends):
                gov["allowed_backends"] = list(floor.allowed_backends)
                sources.append(Source("governance.allowedBackends", list(floor.allowed_backends), name))
        packs = list(policy.spec.packs)
        regimes = list(current(gov, "compliance", g))
        missing = [pack for pack in packs if pack not in regimes]
        if missing:
            gov["compliance"] = regimes + missing
            sources.append(Source("governance.compliance", [str(c) for c in gov["compliance"]], name))
        required = floor.required_approvals
        if required is not None and required > current(promo, "required_approvals", p):
            promo["required_approvals"] = required
            sources.append(Source("promotion.requiredApprovals", required, name))
        if floor.pin_requires_approval and pin_policy is None:
            pin_policy = name
            sources.append(Source("promotion.pinRequiresApproval", True, name))
    updated = spec.model_copy(
        update={
            "governance": spec.governance.model_copy(update=gov),
            "promotion": spec.promotion.model_copy(update=promo),
        }
    )
    return Effective(updated, tuple(sources), tuple(p.metadata.name for p in matched), pin_policy)


def load(folder: Path) -> list[QuantumPolicy]:
    """Every QuantumPolicy in the YAML files of ``folder`` (not its subfolders); :class:`PolicyError`
    names the file and the field of the first that cannot be used."""
    if not folder.is_dir():
        raise PolicyError(f"{folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if len(files) > POLICY_FILES_LIMIT:
        raise PolicyError(f"{folder}: more than {POLICY_FILES_LIMIT} policy files")
    found: list[QuantumPolicy] = []
    names: set[str] = set()
    for path in files:
        if path.stat().st_size > POLICY_FILE_LIMIT:
            raise PolicyError(f"{path}: larger than {POLICY_FILE_LIMIT} bytes")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise PolicyError(f"{path}: not YAML ({type(err).__name__})") from None
        loaded, problems = documents.load_text(str(path), text)  # the specs' bounded reader
        if problems:
            raise PolicyError(problems[0].format())
        for doc in (d.data for d in loaded):
            if not isinstance(doc, dict) or doc.get("kind") != "QuantumPolicy":
                continue
            try:
                policy = QuantumPolicy.model_validate(doc)
            except ValidationError as err:
                first = err.errors()[0]
                where = ".".join(str(part) for part in first["loc"]) or "(the document)"
                raise PolicyError(f"{path}: {where}: {first['msg']}") from None
            if policy.metadata.name in names:
                raise PolicyError(f"{path}: metadata.name: a second QuantumPolicy named {policy.metadata.name}")
            names.add(policy.metadata.name)
            found.append(policy)
    return found
