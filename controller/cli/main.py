"""Entry point of the ``qmlops`` command. Each subcommand lives in its own module with ``register``.

Only the module of the command being run is imported: ``qmlops validate``, called on every pull request,
does not pay for the operator's kopf or the runner's training stack. ``qmlops --help`` (or a command
that is not one) imports them all to list them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from controller import __version__

# Subcommand modules under controller.cli, in the order `qmlops --help` lists them.
COMMANDS = (
    "validate",
    "plan",
    "run",
    "monitor",
    "train",
    "predict",
    "serve",
    "operator",
    "audit",
    "policy",
    "crds",
    "train-job",
    "evaluate-job",
)

EXIT_OK, EXIT_VIOLATIONS, EXIT_UNUSABLE = 0, 1, 2


def build_parser(commands: Sequence[str] = COMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qmlops",
        description="GitOps controller for quantum machine-learning models.",
    )
    parser.add_argument("--version", action="version", version=f"qmlops {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in commands:
        importlib.import_module(f"controller.cli.{name.replace('-', '_')}").register(sub)
    return parser


def chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` runs, when it names one before any other word; None for help and mistakes."""
    for word in argv:
        if word in ("-h", "--help", "--version"):
            return None
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    command = chosen_command(words)
    parser = build_parser(COMMANDS if command is None else (command,))
    args = parser.parse_args(words)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
