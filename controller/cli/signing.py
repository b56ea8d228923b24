"""The options every command that writes or checks the registry shares about signatures:
``--signing-key`` (what the controller signs its commits with), ``--allowed-signers`` (the keys a
history is checked against; never read from the repository being checked) and ``--signed-since``.

Bad input is refused before anything is read or written: one line naming the flag, exit 2.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from controller.engine.registry.git import Git, GitError
from controller.engine.registry.trust import AllowedSigners, Trust, TrustError, check_signing_key

ENV_SIGNING_KEY = "QMLOPS_SIGNING_KEY"
ENV_ALLOWED_SIGNERS = "QMLOPS_ALLOWED_SIGNERS"


class UsageError(ValueError):
    """A flag's value that cannot be used; the message starts with the flag."""


def add_arguments(parser: argparse.ArgumentParser, *, signing: bool) -> None:
    if signing:
        parser.add_argument(
            "--signing-key",
            metavar="FILE",
            default=os.environ.get(ENV_SIGNING_KEY) or None,
            help=f"SSH private key every commit the controller makes is signed with (env {ENV_SIGNING_KEY})",
        )
    parser.add_argument(
        "--allowed-signers",
        metavar="FILE",
        default=os.environ.get(ENV_ALLOWED_SIGNERS) or None,
        help=(
            "git's allowed-signers file: the controller's key and the approvers' keys; registry commits and "
            f"approvals must be signed by them (env {ENV_ALLOWED_SIGNERS}; kept outside the repository)"
        ),
    )
    parser.add_argument(
        "--signed-since",
        metavar="REV",
        default=None,
        help="the last commit from before signing: every commit after REV must be signed (REV.. in git's words)",
    )


def trust(args: argparse.Namespace, repo: Path) -> Trust:
    """The allowed signers and ``--signed-since`` of ``args``, checked; :class:`UsageError` names the flag."""
    if not args.allowed_signers:
        if args.signed_since:
            raise UsageError("--signed-since: needs --allowed-signers (there is nothing to check signatures with)")
        return Trust()
    path = Path(args.allowed_signers)
    root = repo.resolve()
    if path.resolve().is_relative_to(root):
        raise UsageError(
            f"--allowed-signers: {path} is inside the repository it checks: anyone who can push could edit it; "
            "keep it outside"
        )
    try:
        signers = AllowedSigners.read(path)
    except TrustError as err:
        raise UsageError(f"--allowed-signers: {err}") from None
    since = None
    if args.signed_since:
        try:
            since = Git(root, remote=None).resolve(args.signed_since)
        except GitError:
            raise UsageError(f"--signed-since: {args.signed_since!r} is not a commit in {root}") from None
    return Trust(signers, since)


def signing_key(args: argparse.Namespace) -> Path | None:
    if not args.signing_key:
        return None
    path = Path(args.signing_key)
    try:
        check_signing_key(path)
    except TrustError as err:
        raise UsageError(f"--signing-key: {err}") from None
    return path.resolve()
