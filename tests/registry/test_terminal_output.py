"""Text from Git and specs on a terminal: author names, subjects, file names and messages carry escape
sequences shown as visible escapes (``\\x1b``), never obeyed, in every table and log line."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from rich.console import Console

from controller.api.quantummodel import Phase, QuantumModelStatus
from controller.engine.text import EscapingFormatter, escape_control
from controller.runner.display import Board
from tests.registry.repos import Repos, tiny_spec
from tests.validation.cli import qmlops

CLEAR = "\x1b[2J"  # clears the screen
TITLE = "\x1b]0;owned\x07"  # retitles the terminal window
RED = "\x1b[31m"
RTL = "\u202e"  # right-to-left override: "\u202elmth.exe" shows as "exe.html"


def assert_shown_not_obeyed(text: str) -> None:
    for raw in ("\x1b", "\x07", "\r", RTL):
        assert raw not in text, repr(text)


def test_escape_control_keeps_the_escape_visible() -> None:
    assert escape_control(f"a{CLEAR}b{TITLE}c\r\nd\te{RTL}f\x7f\x9b") == (
        "a\\x1b[2Jb\\x1b]0;owned\\x07c\\r\\nd\\te\\u202ef\\x7f\\x9b"
    )
    assert escape_control("plain text, accents é and ünïcode ✓") == "plain text, accents é and ünïcode ✓"


def test_audit_shows_hostile_author_names_and_subjects_escaped(
    repos: Repos, capsys: pytest.CaptureFixture[str]
) -> None:
    work = repos.clone("work")
    repos.commit_file(
        work, "specs/tiny.yaml", tiny_spec(), f"Add{TITLE} the model{RED}", author=f"Eve{CLEAR} <eve@example.com>"
    )
    result = qmlops(capsys, "audit", "--repo", str(work))
    assert result.code == 0, result.err
    assert_shown_not_obeyed(result.out)
    assert "Eve\\x1b[2J <eve@example.com>: specs/tiny.yaml: Add\\x1b]0;owned\\x07 the model\\x1b[31m" in result.out


def test_validate_and_plan_show_a_hostile_file_name_escaped(repos: Repos, capsys: pytest.CaptureFixture[str]) -> None:
    work = repos.clone("work")
    name = f"specs/{RED}tiny{RTL}.yaml"
    repos.commit_file(work, name, tiny_spec().replace("owner: alice@example.com", "owner: 12"), "a broken spec")
    checked = qmlops(capsys, "validate", str(work / "specs"))
    assert checked.code == 1
    assert_shown_not_obeyed(checked.out + checked.err)
    assert "specs/\\x1b[31mtiny\\u202e.yaml:" in checked.out
    planned = qmlops(capsys, "plan", "--repo", str(work))
    assert planned.code == 2
    assert_shown_not_obeyed(planned.out + planned.err)
    assert "specs/\\x1b[31mtiny\\u202e.yaml:" in planned.err


def test_the_runner_table_and_lines_show_text_escaped_and_markup_literal() -> None:
    out = io.StringIO()
    board = Board(Console(file=out, width=200, color_system=None, force_terminal=False))
    board.status(
        f"demo/{RED}tiny",
        QuantumModelStatus(phase=Phase.FAILED, message=f"[bold]not bold[/bold] {CLEAR}{TITLE}"),
    )
    board.say(f"demo/tiny: failed: {TITLE}\rforged line")
    board.print_table()
    text = out.getvalue()
    assert_shown_not_obeyed(text)
    assert "demo/tiny: failed: \\x1b]0;owned\\x07\\rforged line" in text
    assert "demo/\\x1b[31mtiny" in text
    assert "[bold]not bold[/bold] \\x1b[2J\\x1b]0;owned\\x07" in text  # rich markup shown, not applied


def test_log_lines_carry_no_raw_control_character() -> None:
    handler_out = io.StringIO()
    handler = logging.StreamHandler(handler_out)
    handler.setFormatter(EscapingFormatter("%(levelname)s %(name)s: %(message)s"))
    log = logging.getLogger("qmlops-test-escaping")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("%s: reconcile failed: %s", f"demo/{RED}tiny", "bad\nINFO forged: all fine")
    finally:
        log.removeHandler(handler)
    assert handler_out.getvalue() == (
        "WARNING qmlops-test-escaping: demo/\\x1b[31mtiny: reconcile failed: bad\\nINFO forged: all fine\n"
    )


@pytest.mark.parametrize(
    "command",
    [
        ("run", "--once", "--repo"),
        ("serve", "--repo"),
        ("plan", "--repo"),
        ("audit", "--repo"),
        ("monitor", "--repo"),
        ("policy", "report", "--repo"),
    ],
    ids=lambda words: " ".join(words[:-1]),
)
def test_a_command_refusing_a_hostile_path_shows_it_escaped_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: tuple[str, ...]
) -> None:
    missing = tmp_path / f"no{CLEAR}such{RTL}\nrepo"
    result = qmlops(capsys, *command, str(missing))
    assert result.code == 2
    assert_shown_not_obeyed(result.err)
    assert result.err.count("\n") == 1 and result.err.startswith(f"qmlops {command[0]}"), result.err
    assert "no\\x1b[2Jsuch\\u202e\\nrepo" in result.err
