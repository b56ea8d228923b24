"""How every command refuses to go on: one line on stderr, ``qmlops <command>: <what>``, exit 2.

The line always goes through ``escape_control``: what a command names (a path, a Git or API message, a
key from a file) can carry control characters, and a terminal or a log must show them as escapes.
"""

from __future__ import annotations

import sys

from controller.engine.text import escape_control

EXIT_UNUSABLE = 2  # bad flags, unreadable input, a repository or cluster that cannot be used


def refuse(command: str, message: object) -> int:
    """Print why ``qmlops <command>`` cannot go on and return its exit code (2)."""
    print(escape_control(f"qmlops {command}: {message}"), file=sys.stderr)
    return EXIT_UNUSABLE
