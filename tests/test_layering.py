"""The layering is a lint rule: nothing under controller/api or controller/engine imports kopf,
kubernetes, the CLI, the runner, the operator, qmlops serve or what the shells share (controller/shells)
(controller/api/ruff.toml, controller/engine/ruff.toml). These tests run that very rule on a probe (given to
ruff on stdin under a path in each folder, so no file is written into the tree), so the rule cannot silently
vanish; and they walk every module's imports, those made by ``importlib.import_module`` too, which no lint sees."""

from __future__ import annotations

import ast
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
BANNED_IN_THE_ENGINE = [
    *BANNED,
    "from controller.shells.live import ServingEndpoint",
    "from controller import shells",
    "from controller.serving.server import Server",
]
ENGINE = ["controller/api", "controller/engine"]
ENGINE_FOLDERS = sorted(
    str(folder.relative_to(ROOT))
    for top in ENGINE
    for folder in [ROOT / top, *(ROOT / top).rglob("*")]
    if (folder / "__init__.py").is_file()
)


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


@pytest.mark.parametrize("folder", ENGINE_FOLDERS)
@pytest.mark.parametrize("statement", BANNED_IN_THE_ENGINE)
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
            *ENGINE,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


SHELL_MODULES = [
    "kopf",
    "kubernetes",
    "controller.cli",
    "controller.runner",
    "controller.operator",
    "controller.shells",
    "controller.serving",
]


def imported(source: str, module: str) -> set[str]:
    """The modules ``source`` (the module named ``module``) imports: with ``import``, ``from`` (relative ones
    resolved), and ``importlib.import_module`` or ``__import__`` of a literal name."""
    package = module.rsplit(".", 1)[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            start = (base + "." + (node.module or "")).rstrip(".") if node.level else node.module or ""
            names |= {start} | {f"{start}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            called = ast.unparse(node.func)
            if called in ("importlib.import_module", "import_module", "__import__"):
                names.add(str(node.args[0].value))
    return names


def shells_in(names: set[str]) -> set[str]:
    return {n for n in names for shell in SHELL_MODULES if n == shell or n.startswith(shell + ".")}


@pytest.mark.parametrize(
    "statement",
    [
        *BANNED_IN_THE_ENGINE,
        "import importlib\nimportlib.import_module('controller.operator.kube')",
        "from importlib import import_module\nimport_module('kopf')",
        "__import__('controller.shells.live')",
        "from ... import shells",
        "from ...serving import server",
    ],
)
def test_the_walk_of_the_imports_finds_a_shell_however_it_is_imported(statement: str) -> None:
    assert shells_in(imported(statement, "controller.engine.reconcile.probe")), statement


def test_the_walk_of_the_imports_leaves_the_engines_own_modules() -> None:
    source = "from .. import training\nfrom ..registry import ledger\nimport importlib\n"
    source += "importlib.import_module('controller.engine.training')\nfrom controller.api import limits\n"
    assert not shells_in(imported(source, "controller.engine.reconcile.probe"))


def test_no_module_of_the_engine_or_the_api_imports_a_shell_or_the_cluster() -> None:
    modules = [path for top in ENGINE for path in (ROOT / top).rglob("*.py")]
    assert len(modules) > 20
    for path in modules:
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if path.name == "__init__.py":
            name += ".__init__"  # its relative imports are from the package itself
        assert not shells_in(imported(path.read_text(), name)), f"{path.relative_to(ROOT)} imports a shell"


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
