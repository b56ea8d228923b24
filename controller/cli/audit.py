"""``qmlops audit``: each model's timeline from Git history, and with ``--verify`` the proof that it
was not rewritten (or the first entry that was, and the commit that did it)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from controller.cli import policies, signing
from controller.cli.refusal import refuse
from controller.engine import audit
from controller.engine.audit_html import render
from controller.engine.policy import effective
from controller.engine.registry import GitError, GitIdentity, Registry, RegistryError
from controller.engine.registry.git import DEFAULT_IDENTITY_TEXT
from controller.engine.registry.ledger import format_time
from controller.engine.text import escape_control
from controller.runner.specs import observe, repository_name

EXIT_OK, EXIT_BROKEN, EXIT_ERROR = 0, 1, 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="each model's verified timeline from Git history (spec changes, versions, gates, approvals, promotions)",
        description=(
            "The timeline of each model from Git history: spec changes and their authors, trainings, versions with "
            "metrics and lineage, gate results, approvals, promotions, rollbacks and blocks. --verify recomputes the "
            "ledger chain and every version's digest and checks that only the controller wrote them; exit 1 on the "
            "first broken entry, naming it and the commit that broke it. Exit 2 on unusable input."
        ),
    )
    parser.add_argument("model", nargs="?", metavar="MODEL", help="namespace/name or name (default: every model)")
    parser.add_argument("--repo", default=".", help="the Git work tree (default: .)")
    parser.add_argument("--specs", default="specs", help="spec folder, relative to the repository (default: specs)")
    parser.add_argument("--verify", action="store_true", help="verify the history; exit 1 when it was tampered with")
    parser.add_argument("--format", choices=("table", "json", "html"), default="table", help="output format")
    parser.add_argument("--output", metavar="FILE", help="write to FILE instead of standard output")
    parser.add_argument(
        "--identity",
        default=DEFAULT_IDENTITY_TEXT,
        help=f"the controller's identity that must have written the ledger (default: {DEFAULT_IDENTITY_TEXT})",
    )
    signing.add_arguments(parser, signing=False)
    policies.add_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        identity = GitIdentity.parse(args.identity)
        trust = signing.trust(args, Path(args.repo))
        registry = Registry(Path(args.repo), identity=identity, remote=None, trust=trust)
        audits = _audits(registry, args)
    except (ValueError, GitError, RegistryError, LookupError) as err:
        return refuse("audit", err)
    verify = args.verify or args.format == "html"
    if verify:
        for item in audits:
            item.verification = audit.verify(registry, item.namespace, item.name, identity)
    text = _format(args.format, audits, registry)
    try:
        _write(text, args.output)
    except OSError as err:
        return refuse("audit", f"--output: cannot write {args.output}: {err.strerror}")
    if args.output:
        print(f"qmlops audit: wrote {args.output}", file=sys.stderr)
    if not args.verify:
        return EXIT_OK
    return _report_verification(audits)


def _report_verification(audits: list[audit.ModelAudit]) -> int:
    broken = [(a, a.verification) for a in audits if a.verification is not None and not a.verification.ok]
    said = {a.verification.signatures for a in audits if a.verification}
    for signatures in sorted(said):
        print(f"qmlops audit --verify: signatures {signatures}", file=sys.stderr)
    if not broken:
        entries = sum(a.verification.entries for a in audits if a.verification)
        versions = sum(a.verification.versions for a in audits if a.verification)
        print(
            f"qmlops audit --verify: ok: {_count(len(audits), 'model')}, "
            f"{_count(entries, 'ledger entry', 'ledger entries')}, {_count(versions, 'version')}",
            file=sys.stderr,
        )
        return EXIT_OK
    for model_audit, result in broken:
        assert result is not None
        first = result.problems[0]
        print(escape_control(f"qmlops audit --verify: {model_audit.model}: FAILED: {first.format()}"), file=sys.stderr)
    return EXIT_BROKEN


def _audits(registry: Registry, args: argparse.Namespace) -> list[audit.ModelAudit]:
    specs = Path(args.specs)
    specs = specs if specs.is_absolute() else registry.repo / specs
    floors = policies.read(args, registry.repo)
    observation = observe(registry.git, specs, committed_only=False)
    spec_files: dict[tuple[str, str], tuple[str, dict[str, Any] | None]] = {}
    effective_policy: dict[tuple[str, str], Any] = {}
    for observed, path in observation.models:
        meta = observed.model.metadata
        spec_files[(meta.namespace, meta.name)] = (path, observed.model.to_wire())
        # the same effective values plan and status show (controller.engine.policy)
        effective_policy[(meta.namespace, meta.name)] = effective(
            observed.model.spec, meta.namespace, meta.labels, floors
        )
    models = sorted(set(registry.models()) | set(spec_files) | set(registry.models_in_history()))
    if args.model:
        models = _select(models, args.model)
    out: list[audit.ModelAudit] = []
    for ns, name in models:
        paths = set(audit.spec_paths_from_versions(registry, ns, name))
        path, spec = spec_files.get((ns, name), ("", None))
        if path:
            paths.add(path)
        found = audit.model_audit(
            registry,
            ns,
            name,
            spec_paths=sorted(paths),
            spec=spec,
            policy=effective_policy.get((ns, name)),
            policies_given=bool(args.policies),
        )
        out.append(found)
    return out


def _select(models: list[tuple[str, str]], wanted: str) -> list[tuple[str, str]]:
    if "/" in wanted:
        ns, _, name = wanted.partition("/")
        found = [m for m in models if m == (ns, name)]
    else:
        found = [m for m in models if m[1] == wanted]
    if not found:
        known = ", ".join(f"{ns}/{name}" for ns, name in models) or "none"
        raise LookupError(f"no model {wanted!r} in this repository (models: {known})")
    if len(found) > 1:
        raise LookupError(f"{wanted!r} names {len(found)} models: write namespace/name")
    return found


def _format(kind: str, audits: list[audit.ModelAudit], registry: Registry) -> str:
    if kind == "json":
        return json.dumps({"models": [a.to_json() for a in audits]}, indent=2) + "\n"
    if kind == "html":
        from datetime import UTC, datetime

        return render(audits, repository=repository_name(registry.git), generated_at=format_time(datetime.now(UTC)))
    return "\n".join(_table(a) for a in audits) or "no model in this repository\n"


def _table(item: audit.ModelAudit) -> str:
    lines = [item.model]
    champion = next((v for v in item.versions if v.number == item.champion), None)
    if champion is not None:
        accuracy = champion.scalar_metrics().get("accuracy")
        acc = f" (accuracy {accuracy:.3f})" if accuracy is not None else ""
        lines.append(f"  champion: version {champion.number}{acc}")
    else:
        lines.append("  champion: none")
    if item.spec_paths:
        lines.append(f"  spec: {', '.join(item.spec_paths)}")
    lines.extend(f"  {line}" for line in item.policy_lines())
    if item.versions or item.retired:
        lines.append("  versions:")
    shown: list[tuple[int, str]] = []
    for v in item.versions:
        metrics = ", ".join(f"{k} {val:.3f}" for k, val in sorted(v.scalar_metrics().items()))
        source = v.source
        shown.append(
            (
                v.number,
                f"    {v.number:>3}  {v.registered_at}  {v.backend or '?'}  {metrics}  "
                f"from {source.get('revision') or '?'} by {source.get('author') or '?'}  {v.digest[:19]}…",
            )
        )
    for r in item.retired:
        metrics = ", ".join(f"{k} {val:.3f}" for k, val in sorted(r.metrics.items()) if isinstance(val, int | float))
        shown.append(
            (
                r.number,
                f"    {r.number:>3}  {r.registered_at}  {r.backend or '?'}  {metrics}  "
                f"from {r.source.get('revision') or '?'} by {r.source.get('author') or '?'}  {r.digest[:19]}…  "
                f"RETIRED {r.retired_at}, {r.describe()}",
            )
        )
    lines.extend(line for _, line in sorted(shown, key=lambda item: item[0]))
    lines.append("  timeline:")
    for e in item.events:
        version = f"v{e.version}" if e.version is not None else "-"
        commit = (e.commit or "")[:12] or "-"
        lines.append(f"    {e.at:<25} {e.kind:<20} {version:<4} {commit:<12} {e.by or '-'}: {e.message}")
    if item.verification is not None:
        result = item.verification
        if result.ok:
            lines.append(
                f"  verify: ok ({_count(result.entries, 'ledger entry', 'ledger entries')}, "
                f"{_count(result.versions, 'version')}, {_count(result.commits, 'commit')})"
            )
        else:
            lines.append("  verify: FAILED")
            lines.extend(f"    {p.format()}" for p in result.problems)
        lines.append(f"  signatures: {result.signatures}")
    # names, subjects and messages come from Git and specs: an escape sequence in them is shown, not obeyed
    return "\n".join(escape_control(line) for line in lines) + "\n"


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _write(text: str, output: str | None) -> None:
    if output:
        target = Path(output)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
