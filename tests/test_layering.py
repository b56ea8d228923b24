"""The layering is a lint rule: nothing under controller/api or controller/engine imports kopf,
kubernetes, the CLI, the runner or the operator (controller/api/ruff.toml, controller/engine/ruff.toml).
These tests run that very rule on a probe (given to ruff on stdin under a path in each folder, so no
file is written into the tree), so the rule cannot silently vanish."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUFF = [sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "TID251"]
BANNED = [
    "import kopf",
    "import kubernetes.client",
    "from kubernetes import client",
    "from controller.cli import main",
    "from controller.runner.loop import Runner",
    "from controller.operator.kube import KubeClient",
    "from controller import operator",
]


def lint(path: str, source: str) -> subprocess.CompletedProcess[str]:
    """ruff on ``source`` as if it were the file ``path`` of this repository (its folder's config)."""
    return subprocess.run(
        [*RUFF, "--output-format", "concise", "--stdin-filename", path, "-"],
        input=source,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("folder", ["controller/api", "controller/engine", "controller/engine/reconcile"])
@pytest.mark.parametrize("statement", BANNED)
def test_the_engine_and_the_api_may_not_import_a_shell_or_the_cluster(folder: str, statement: str) -> None:
    result = lint(f"{folder}/probe.py", statement + "\n")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "TID251" in result.stdout and "is banned" in result.stdout


def test_the_shells_may_import_them() -> None:
    result = lint("controller/operator/probe.py", "\n".join(BANNED) + "\n")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_engine_as_it_is_keeps_the_rule() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--no-cache",
            "--select",
            "TID251",
            "controller/api",
            "controller/engine",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


SHELLS = [
    "import kopf",
    "from controller.cli import main",
    "from controller.runner.loop import Runner",
    "from controller.operator.kube import KubeClient",
    "from controller.serving.server import Server",
]


@pytest.mark.parametrize("statement", SHELLS)
def test_what_the_shells_share_imports_none_of_them(statement: str) -> None:
    result = lint("controller/shells/probe.py", statement + "\n")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "TID251" in result.stdout and "is banned" in result.stdout


@pytest.mark.parametrize("statement", [*BANNED, "from controller.operator.gitsource import GitSource"])
def test_serving_imports_no_other_shell(statement: str) -> None:
    result = lint("controller/serving/probe.py", statement + "\n")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "TID251" in result.stdout and "is banned" in result.stdout


def test_serving_and_the_shared_code_as_they_are_keep_the_rule() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--no-cache",
            "--select",
            "TID251",
            "controller/serving",
            "controller/shells",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
