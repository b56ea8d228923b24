"""``qmlops validate``: schema and governance check of spec files, one line per problem."""

from __future__ import annotations

import argparse
import json
import sys

from controller.cli import policies
from controller.cli.refusal import refuse
from controller.engine.text import escape_control
from controller.engine.validation import EXIT_UNUSABLE, ValidationReport, validate_paths


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check spec files against the schema and their governance rules",
        description=(
            "Check QuantumModel and QuantumPipeline specs: every problem as file:line:col: field.path: message. "
            "Exit 0 clean (warnings allowed), 1 violations, 2 unusable input."
        ),
    )
    parser.add_argument(
        "paths", nargs="*", default=["."], metavar="PATH", help="spec files or folders (searched for *.yaml, *.yml)"
    )
    parser.add_argument("--output", "-o", choices=("text", "json"), default="text", help="output format")
    policies.add_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        floors = policies.read(args, None)
    except policies.UsageError as err:
        return refuse("validate", err)
    try:
        report = validate_paths(args.paths, policies=floors)
    except Exception as err:  # the last resort: the command must never end in a traceback
        print(escape_control(f"qmlops: internal error: {type(err).__name__}: {err}"), file=sys.stderr)
        return EXIT_UNUSABLE
    if args.output == "json":
        print(json.dumps([p.to_json() for p in report.problems], indent=2))
    else:
        for problem in report.problems:
            print(escape_control(problem.format()))
    print(summary(report), file=sys.stderr)
    return report.exit_code


def summary(report: ValidationReport) -> str:
    errors, warnings = report.counts()
    scope = f"{_count(report.files, 'file')}, {_count(len(report.resources), 'resource')}"
    if not report.problems:
        return f"qmlops validate: {scope}: clean"
    unusable = sum(1 for p in report.problems if p.unusable)
    found = f"{_count(errors, 'error')}, {_count(warnings, 'warning')}"
    tail = f" ({_count(unusable, 'unusable input')})" if unusable else ""
    return f"qmlops validate: {scope}: {found}{tail}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
