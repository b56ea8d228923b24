"""``qmlops run``: reconcile the QuantumModels and QuantumPipelines committed in a Git repository on this
machine."""

from __future__ import annotations

import argparse
from pathlib import Path

from controller.cli import policies, signing
from controller.cli.refusal import refuse
from controller.engine.registry import GitError, GitIdentity, RegistryError
from controller.engine.registry.git import DEFAULT_IDENTITY_TEXT
from controller.runner.loop import Runner, RunnerConfig
from controller.shells.threads import load_qiskit_on_main_thread


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="reconcile a Git repository here: train, register, promote, write decisions back to Git",
        description=(
            "Reconcile the QuantumModels committed in a Git repository: validate, check governance, train when "
            "due (no version yet, spec or dataset changed, schedule due), register the version, evaluate the "
            "gates, promote, and commit every decision (pushed to the upstream when there is one); then run the "
            "QuantumPipelines whose triggers are due (or named with --pipeline). Without "
            "--once it keeps polling the repository. Exit 0 when every model reconciled, 1 when a spec or a "
            "reconcile failed, 2 for unusable input, 130 when interrupted (the checkpoint is kept)."
        ),
    )
    parser.add_argument("--repo", default=".", help="the Git work tree to reconcile (default: .)")
    parser.add_argument("--specs", default="specs", help="spec folder, relative to the repository (default: specs)")
    parser.add_argument("--once", action="store_true", help="reconcile once and exit instead of polling")
    parser.add_argument("--interval", type=float, default=30.0, metavar="S", help="seconds between polls")
    parser.add_argument(
        "--identity",
        default=DEFAULT_IDENTITY_TEXT,
        help=f"who the controller commits as, 'Name <email>' (default: {DEFAULT_IDENTITY_TEXT})",
    )
    parser.add_argument("--remote", default="origin", help="the remote to pull from and push to (default: origin)")
    parser.add_argument("--no-push", action="store_true", help="commit locally only; never fetch or push")
    parser.add_argument(
        "--pipeline",
        action="append",
        default=[],
        metavar="NS/NAME",
        help="run this QuantumPipeline now, whatever its triggers (repeatable); answered once",
    )
    add_serving_url(parser)
    signing.add_arguments(parser, signing=True)
    policies.add_argument(parser)
    parser.set_defaults(handler=run)


def add_serving_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--serving-url",
        metavar="URL",
        help="the qmlops serve server (http://HOST:PORT) whose live accuracy monitoring's live check reads",
    )


def serving_url(args: argparse.Namespace) -> str | None:
    """The checked ``--serving-url``; ValueError names the flag."""
    if args.serving_url is None:
        return None
    from controller.shells.live import checked_base

    try:
        return checked_base(args.serving_url)
    except ValueError as err:
        raise ValueError(f"--serving-url: {err}") from None


def run(args: argparse.Namespace) -> int:
    load_qiskit_on_main_thread()  # before any thread trains (controller/shells/threads.py)
    try:
        identity = GitIdentity.parse(args.identity)
    except ValueError as err:
        return refuse("run", f"--identity: {err}")
    if args.interval <= 0:
        return refuse("run", "--interval: must be a positive number of seconds")
    repo = Path(args.repo)
    if not repo.is_dir():
        return refuse("run", f"--repo: {repo} is not a folder")
    for key in args.pipeline:
        namespace, _, name = key.partition("/")
        if not namespace or not name or "/" in name:
            return refuse("run", f"--pipeline: {key!r} is not NAMESPACE/NAME")
    try:
        trust, key = signing.trust(args, repo), signing.signing_key(args)
        floors = policies.read(args, repo)
    except (signing.UsageError, policies.UsageError) as err:
        return refuse("run", err)
    try:
        live_url = serving_url(args)
    except ValueError as err:
        return refuse("run", err)
    specs = Path(args.specs)
    config = RunnerConfig(
        repo=repo,
        specs=specs if specs.is_absolute() else repo / specs,
        identity=identity,
        interval=args.interval,
        once=args.once,
        remote=None if args.no_push else args.remote,
        requested=tuple(args.pipeline),
        trust=trust,
        signing_key=key,
        policies=tuple(floors),
        serving_url=live_url,
    )
    try:
        runner = Runner(config)
    except (RegistryError, GitError) as err:
        return refuse("run", err)
    return runner.run()
