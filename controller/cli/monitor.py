"""``qmlops monitor``: check each champion now, against the hardware and the data of today."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.cli.refusal import refuse
from controller.cli.run import add_serving_url, serving_url
from controller.engine.registry import GitError, Registry, RegistryError
from controller.engine.text import escape_control
from controller.runner.specs import observe
from controller.shells.threads import load_qiskit_on_main_thread

EXIT_OK, EXIT_DRIFT, EXIT_ERROR = 0, 1, 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "monitor",
        help="check each champion now: ESP under today's calibration, noisy replay, data drift",
        description=(
            "Run the monitoring checks of each QuantumModel's champion now (spec.monitoring; every check with "
            "its defaults when the model has none): the champion's ESP on its own layout under today's "
            "calibration, its accuracy replayed under today's noise, and for file: datasets each feature "
            "against the training data. Each check prints its figures before and after. Exit 0 when nothing "
            "drifted, 1 when something did, 2 on error (a check that could not run, unusable input)."
        ),
    )
    parser.add_argument("model", nargs="?", metavar="MODEL", help="namespace/name or name (default: every model)")
    parser.add_argument("--repo", default=".", help="the Git work tree (default: .)")
    parser.add_argument("--specs", default="specs", help="spec folder, relative to the repository (default: specs)")
    parser.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    add_serving_url(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    load_qiskit_on_main_thread()  # before any thread trains (controller/shells/threads.py)
    from controller.engine.monitoring import Verdict, monitor
    from controller.engine.training.credentials import local_credentials
    from controller.shells.live import ServingEndpoint

    try:
        url = serving_url(args)
    except ValueError as err:
        return refuse("monitor", err)
    try:
        registry = Registry(Path(args.repo), remote=None)
        models = _models(registry, args)
    except (ValueError, GitError, RegistryError, LookupError) as err:
        return refuse("monitor", err)
    live = ServingEndpoint.at(url) if url else None
    reports = monitor(registry, models, now=datetime.now(UTC), credentials=local_credentials, live=live)
    if args.format == "json":
        print(json.dumps({"models": [r.to_json() for r in reports]}, indent=2))
    else:
        print(table(reports))
    verdicts = {r.verdict for r in reports}
    if Verdict.DRIFT in verdicts:
        return EXIT_DRIFT
    return EXIT_ERROR if Verdict.NOT_RUN in verdicts else EXIT_OK


def _models(registry: Registry, args: argparse.Namespace) -> list[Any]:
    specs = Path(args.specs)
    specs = specs if specs.is_absolute() else registry.repo / specs
    observation = observe(registry.git, specs, committed_only=False)
    if observation.problems:
        raise ValueError(observation.problems[0].format())
    models = [observed.model for observed, _ in observation.models]
    if not args.model:
        return [m for m in models if m.spec.monitoring is not None]
    wanted = args.model
    ns, _, name = wanted.rpartition("/")
    found = [m for m in models if m.metadata.name == name and (not ns or m.metadata.namespace == ns)]
    if not found:
        known = ", ".join(f"{m.metadata.namespace}/{m.metadata.name}" for m in models) or "none"
        raise LookupError(f"no model {wanted!r} in this repository (models: {known})")
    if len(found) > 1:
        raise LookupError(f"{wanted!r} names {len(found)} models: write namespace/name")
    return found


def _figures(check: Any) -> str:
    f = check.figures
    if check.reason and not f:
        return check.reason
    if check.kind.value == "calibration":
        text = f"ESP {f['esp']['before']:.4f} -> {f['esp']['after']:.4f} (drop {f['relativeDrop']:.1%}, max {f['threshold']:.0%})"
        if "betterLayout" in f:
            text += f"; better layout {f['betterLayout']['qubits']} ESP {f['betterLayout']['esp']:.4f}"
        return text
    if check.kind.value == "replay":
        a = f["accuracy"]
        return f"accuracy {a['before']:.3f} -> {a['after']:.3f} (drop {f['drop']:.3f}, max {f['threshold']}) on {f['backend']}"
    if check.kind.value == "live":
        if "accuracy" not in f:
            return check.reason
        a = f["accuracy"]
        return (
            f"live accuracy {a['after']:.3f} on {f['labelled']} labelled rows against {a['before']:.3f} at test "
            f"(drop {f['drop']:.3f}, max {f['threshold']})"
        )
    if check.kind.value == "data":
        if not f.get("features"):
            return check.reason or "unchanged"
        moved = f.get("moved") or []
        worst = max(f["features"], key=lambda d: d["ksStatistic"])
        text = f"moved: {', '.join(moved)}" if moved else "no feature moved"
        return f"{text} (largest KS {worst['ksStatistic']:.3f} on {worst['feature']}, p {worst['pValue']:.3g})"
    return json.dumps(f, sort_keys=True)


def _dates(check: Any) -> str:
    dates = check.figures.get("calibration")
    if not dates:
        return ""
    return f"{dates['before']['lastUpdate']} -> {dates['after']['lastUpdate']}"


def table(reports: list[Any]) -> str:
    if not reports:
        return "no model declares spec.monitoring: nothing to check (docs/monitoring.md)"
    rows = [("MODEL", "VERSION", "CHECK", "VERDICT", "FIGURES", "CALIBRATION")]
    for report in reports:
        model = f"{report.namespace}/{report.name}"
        version = str(report.version) if report.version is not None else "-"
        if not report.checks:
            rows.append((model, version, "-", report.verdict.value, report.error or report.note, ""))
        for check in report.checks:
            rows.append((model, version, check.kind.value, check.verdict.value, _figures(check), _dates(check)))
    widths = [max(len(escape_control(r[i])) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [escape_control(c).ljust(w) for c, w in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, escape_control(row[-1])]).rstrip())
    drifted = sum(1 for r in reports if r.verdict.value == "drift")
    lines.append(f"{len(reports)} model(s) checked, {drifted} drifted")
    return "\n".join(lines)
