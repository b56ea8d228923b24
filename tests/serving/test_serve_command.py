"""``qmlops serve``'s arguments are checked before a port opens; the engine never imports the server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.validation.cli import qmlops


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--models", "demo.tiny"], "qmlops serve: --models: 'demo.tiny' is not NAMESPACE/NAME"),
        (["--interval", "0"], "qmlops serve: --interval: must be positive"),
        (["--repo", "/nonexistent/qmlops-repo"], "qmlops serve: --repo: /nonexistent/qmlops-repo is not a folder"),
    ],
)
def test_unusable_arguments_are_one_line_and_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = qmlops(capsys, "serve", *args)
    assert (result.code, result.err) == (2, message + "\n")


def test_a_folder_that_is_no_repository_is_refused_before_the_port_opens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = qmlops(capsys, "serve", "--repo", str(tmp_path), "--port", "1")
    assert result.code == 2
    assert result.err.startswith("qmlops serve: --repo: ") and "is not a Git work tree" in result.err


def test_the_engine_imports_no_serving_shell_and_no_http_stack() -> None:
    code = (
        "import sys, controller.engine.prediction, controller.engine.live, controller.engine.training.evaluation;"
        "print(sorted(m for m in sys.modules if m.startswith(('controller.serving', 'aiohttp', 'controller.cli'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
