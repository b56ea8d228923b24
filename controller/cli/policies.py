"""``--policies DIR`` for validate, plan and run: the QuantumPolicy files that set floors under the specs,
read from outside the spec repository (in a cluster, the operator reads the QuantumPolicy resources)."""

from __future__ import annotations

import argparse
from pathlib import Path

from controller.api.quantumpolicy import QuantumPolicy
from controller.engine.policy import PolicyError, load


class UsageError(ValueError):
    """``--policies`` cannot be used; the message starts with the flag."""


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--policies",
        metavar="DIR",
        default=None,
        help="folder of QuantumPolicy files (outside the repository): floors the specs may tighten, never loosen",
    )


def read(args: argparse.Namespace, repo: Path | None) -> list[QuantumPolicy]:
    if not args.policies:
        return []
    folder = Path(args.policies)
    if repo is not None and folder.resolve().is_relative_to(repo.resolve()):
        raise UsageError(
            f"--policies: {folder} is inside the spec repository: a spec's author could weaken the floor; "
            "keep QuantumPolicy files outside it"
        )
    try:
        return load(folder)
    except PolicyError as err:
        raise UsageError(f"--policies: {err}") from None
