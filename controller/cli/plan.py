"""``qmlops plan``: what ``qmlops run`` would do to each model and why, without doing it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from controller.cli import policies
from controller.cli.refusal import refuse
from controller.engine.reconcile import Plan, Reconciler
from controller.engine.reconcile.pipeline import PipelineReconciler
from controller.engine.registry import GitError, Registry, RegistryError
from controller.engine.status import describe_failure
from controller.engine.text import escape_control
from controller.runner.specs import observe

EXIT_NOTHING, EXIT_CHANGES, EXIT_ERROR = 0, 1, 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="what run would do to each model (train, promote, block, nothing) and why, without doing it",
        description=(
            "For each QuantumModel, what `qmlops run` would do and why, without training or committing anything. "
            "Reads the specs as they are in the work tree, so a pull request's changes are planned before the "
            "merge. Exit 0 nothing to do, 1 changes, 2 error (an invalid spec, not a Git repository)."
        ),
    )
    parser.add_argument("--repo", default=".", help="the Git work tree (default: .)")
    parser.add_argument("--specs", default="specs", help="spec folder, relative to the repository (default: specs)")
    parser.add_argument("--since", metavar="REV", help="only the models whose spec file changed since REV")
    parser.add_argument("--output", "-o", choices=("text", "json"), default="text", help="output format")
    policies.add_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        rows, problems = _plan(args)
    except policies.UsageError as err:
        return refuse("plan", err)
    except (GitError, RegistryError) as err:
        return refuse("plan", err)
    for problem in problems:
        print(escape_control(problem), file=sys.stderr)
    if args.output == "json":
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            version = f" version {row['version']}" if row["version"] is not None and row["action"] != "train" else ""
            what = row["model"] if "model" in row else f"pipeline {row['pipeline']}"
            print(escape_control(f"{what} ({row['path']}): {row['action']}{version}: {row['reason']}"))
            for label, why in (row.get("cells") or {}).items():
                print(escape_control(f"  cell {label}: {why}"))
            for floor in row.get("floors") or []:
                print(escape_control(f"  floor: {floor['field']}: {floor['value']} ({floor['source']})"))
        changed = sum(1 for r in rows if r["changes"])
        models = sum(1 for r in rows if "model" in r)
        pipelines = len(rows) - models
        counted = f"{models} model{'s' if models != 1 else ''}"
        if pipelines:
            counted += f", {pipelines} pipeline{'s' if pipelines != 1 else ''}"
        print(f"qmlops plan: {counted}, {changed} to change", file=sys.stderr)
    if problems:
        return EXIT_ERROR
    return EXIT_CHANGES if any(r["changes"] for r in rows) else EXIT_NOTHING


def _plan(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[str]]:
    repo = Path(args.repo)
    registry = Registry(repo, remote=None)
    floors = policies.read(args, registry.repo)
    specs = Path(args.specs)
    specs = specs if specs.is_absolute() else registry.repo / specs
    observation = observe(registry.git, specs, committed_only=False)
    problems = [p.format() for p in observation.problems]
    if not specs.exists():
        problems.append(f"{args.specs}: no such folder in {registry.repo}")
    changed: set[str] | None = None
    if args.since:
        base = registry.git.resolve(args.since)
        folder = specs.relative_to(registry.repo).as_posix() if specs.is_relative_to(registry.repo) else str(specs)
        text = registry.git.out("diff", "--name-only", "--no-renames", base, "--", folder)
        untracked = registry.git.out("ls-files", "--others", "--exclude-standard", "--", folder)
        changed = set(text.splitlines()) | set(untracked.splitlines())
    reconciler = Reconciler(registry, checkpoint_root=registry.private_dir() / "checkpoints", policies=lambda: floors)
    rows: list[dict[str, Any]] = []
    for observed, path in observation.models:
        if changed is not None and path not in changed:
            continue
        model = f"{observed.model.metadata.namespace}/{observed.model.metadata.name}"
        try:
            plan = reconciler.plan(observed)
        except Exception as err:  # one model's trouble is reported, the others are still planned
            problems.append(f"{path}: {model}: cannot plan: {describe_failure(err)}")
            continue
        rows.append(_row(model, path, plan))
    pipelines = PipelineReconciler(registry, checkpoint_root=reconciler.checkpoint_root, policies=lambda: floors)
    for seen, path in observation.pipelines:
        if changed is not None and path not in changed:
            continue
        try:
            pipeline_plan = pipelines.plan(seen)
        except Exception as err:
            problems.append(f"{path}: pipeline {seen.key}: cannot plan: {describe_failure(err)}")
            continue
        rows.append(
            {
                "pipeline": seen.key,
                "path": path,
                "action": pipeline_plan.action,
                "reason": pipeline_plan.reason,
                "version": pipeline_plan.version,
                "changes": pipeline_plan.changes,
                "cells": pipeline_plan.cells,
            }
        )
    return rows, problems


def _row(model: str, path: str, plan: Plan) -> dict[str, Any]:
    return {
        "model": model,
        "path": path,
        "action": plan.action,
        "reason": plan.reason,
        "version": plan.version,
        "changes": plan.changes,
        "floors": [floor.to_json() for floor in plan.floors],
        "checksDue": list(plan.checks_due),
    }
