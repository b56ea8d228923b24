"""``qmlops policy``: the compliance packs (``packs``) and every model's results against them (``report``).

``report`` prints, per model, a ``wgpolicyk8s.io/v1alpha2`` PolicyReport (the same the controller writes
to ``registry/<ns>/<model>/policy.json``): exit 1 when a rule fails where it is enforced, 0 otherwise,
2 on input it cannot use (one line naming the flag or the file).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from controller.cli import policies
from controller.cli.refusal import refuse
from controller.engine.text import escape_control

EXIT_OK, EXIT_FAILS, EXIT_UNUSABLE = 0, 1, 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "policy",
        help="compliance packs and every model's policy report",
        description="The compliance packs shipped with qmlops, and each model's results against the packs it must pass.",
    )
    sub = parser.add_subparsers(dest="policy_command", metavar="SUBCOMMAND", required=True)
    packs = sub.add_parser(
        "packs",
        help="list the compliance packs, their rules, severities and controls",
        description="The compliance packs (eu-ai-act-high-risk, gdpr, hipaa, iso-42001, soc2): each rule's id, "
        "severity, the controls it evidences and the check it runs.",
    )
    packs.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    packs.set_defaults(handler=run_packs)
    report = sub.add_parser(
        "report",
        help="every rule x model: pass, fail, warn, error or skip (a wgpolicyk8s.io PolicyReport per model)",
        description=(
            "Every rule of the packs each model must pass (governance.compliance and the packs of the "
            "QuantumPolicies that match it) against the model's spec, registry and history. JSON is a List of "
            "wgpolicyk8s.io/v1alpha2 PolicyReports. Exit 0 none fails where enforced, 1 one does, 2 unusable input."
        ),
    )
    report.add_argument("--repo", default=".", help="the Git work tree (default: .)")
    report.add_argument("--specs", default="specs", help="spec folder, relative to the repository (default: specs)")
    report.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    policies.add_argument(report)
    report.set_defaults(handler=run_report)


def run_packs(args: argparse.Namespace) -> int:
    from controller.engine.packs import packs

    shown = packs()
    if args.format == "json":
        data = [
            {
                "name": p.name,
                "title": p.title,
                "rules": [
                    {
                        "id": r.id,
                        "severity": r.severity.value,
                        "controls": list(r.controls),
                        "description": r.description,
                        "check": r.check,
                        "params": r.params.model_dump(by_alias=True, mode="json"),
                    }
                    for r in p.rules
                ],
            }
            for p in shown
        ]
        print(json.dumps(data, indent=2))
        return EXIT_OK
    for p in shown:
        print(f"{p.name}: {p.title}")
        for r in p.rules:
            print(f"  {r.id:<28} {r.severity.value:<8} {', '.join(r.controls)}  [{r.check}]")
    return EXIT_OK


def run_report(args: argparse.Namespace) -> int:
    from controller.engine.registry import GitError, RegistryError

    try:
        reports, problems = _reports(args)
    except policies.UsageError as err:
        return refuse("policy report", err)
    except (GitError, RegistryError) as err:
        return refuse("policy report", f"--repo: {err}")
    for problem in problems:
        print(escape_control(problem), file=sys.stderr)
    if problems:
        return EXIT_UNUSABLE
    from controller.engine.policy_report import enforced_failures

    failing = [
        f"{r['scope']['namespace']}/{r['scope']['name']}: {rule}" for r in reports for rule in enforced_failures(r)
    ]
    if args.format == "json":
        print(json.dumps({"apiVersion": "v1", "kind": "List", "items": reports}, indent=2))
    else:
        for report in reports:
            scope = report["scope"]
            counts = report["summary"]
            line = ", ".join(f"{counts[k]} {k}" for k in ("pass", "fail", "warn", "error", "skip"))
            print(escape_control(f"{scope['namespace']}/{scope['name']}: {line}"))
            for r in report["results"]:
                print(
                    escape_control(
                        f"  {r['result']:<5} {r['severity']:<8} {r['policy']}/{r['rule']}: {r['message']} "
                        f"({r['properties']['controls']})"
                    )
                )
        models = len(reports)
        print(
            f"qmlops policy report: {models} model{'s' if models != 1 else ''} with packs, "
            f"{len(failing)} enforced rule{'s' if len(failing) != 1 else ''} failing",
            file=sys.stderr,
        )
    return EXIT_FAILS if failing else EXIT_OK


def _reports(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[str]]:
    from controller.engine.policy import effective
    from controller.engine.policy_report import report_for, required_packs
    from controller.engine.registry import Registry
    from controller.runner.specs import observe

    repo = Path(args.repo)
    if not repo.is_dir():
        raise policies.UsageError(f"--repo: {repo} is not a folder")
    registry = Registry(repo, remote=None)
    floors = policies.read(args, registry.repo)
    specs = Path(args.specs)
    specs = specs if specs.is_absolute() else registry.repo / specs
    if not specs.is_dir():
        raise policies.UsageError(f"--specs: {args.specs}: no such folder in {registry.repo}")
    observation = observe(registry.git, specs, committed_only=False)
    problems = [p.format() for p in observation.problems]
    reports: list[dict[str, Any]] = []
    for observed, _ in observation.models:
        meta = observed.model.metadata
        spec = effective(observed.model.spec, meta.namespace, meta.labels, floors).spec
        if required_packs(spec):
            reports.append(report_for(registry, meta.namespace, meta.name, spec, observed.pipeline_backends))
    return reports, problems
