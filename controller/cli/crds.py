"""``qmlops crds``: print, write or check the CRD manifests generated from the spec types."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from controller.api.crd import generated_files
from controller.cli.refusal import refuse

DEFAULT_DIR = "crds"
EXIT_OK, EXIT_STALE, EXIT_UNUSABLE = 0, 1, 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "crds",
        help="the CRD manifests generated from the spec types",
        description=(
            "Print the CustomResourceDefinitions generated from the QuantumModel and QuantumPipeline types "
            "(multi-document YAML), write them into a directory, or check that a directory is up to date."
        ),
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--write",
        nargs="?",
        const=DEFAULT_DIR,
        metavar="DIR",
        help=f"write one file per resource into DIR (default: {DEFAULT_DIR})",
    )
    mode.add_argument(
        "--check",
        nargs="?",
        const=DEFAULT_DIR,
        metavar="DIR",
        help=f"exit 1 when DIR (default: {DEFAULT_DIR}) differs from the generated manifests",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    files = generated_files()
    if args.write is not None:
        return write(Path(args.write), files)
    if args.check is not None:
        return check(Path(args.check), files)
    sys.stdout.write("".join(files[name] for name in sorted(files)))
    return EXIT_OK


def write(directory: Path, files: dict[str, str]) -> int:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in sorted(files.items()):
            target = directory / name
            if not target.exists() or target.read_text(encoding="utf-8") != text:
                target.write_text(text, encoding="utf-8")
                print(f"wrote {target}")
    except OSError as err:
        return refuse("crds", f"cannot write {directory}: {err.strerror or err}")
    return EXIT_OK


def stale_files(directory: Path, files: dict[str, str]) -> list[str]:
    """Problems, one per file: missing, different from the generated text, or generated no more."""
    problems = []
    for name, text in sorted(files.items()):
        target = directory / name
        if not target.is_file():
            problems.append(f"{target}: missing")
        elif target.read_text(encoding="utf-8") != text:
            problems.append(f"{target}: differs from the generated CRD")
    if directory.is_dir():
        for extra in sorted(directory.glob("qmlops.io_*.yaml")):
            if extra.name not in files:
                problems.append(f"{extra}: not generated any more (delete it)")
    return problems


def check(directory: Path, files: dict[str, str]) -> int:
    try:
        problems = stale_files(directory, files)
    except (OSError, UnicodeDecodeError) as err:
        return refuse("crds", f"cannot read {directory}: {err}")
    if not problems:
        print(f"{directory}: up to date ({len(files)} CRDs)")
        return EXIT_OK
    for problem in problems:
        print(problem, file=sys.stderr)
    hint = "qmlops crds --write" + ("" if str(directory) == DEFAULT_DIR else f" {directory}")
    print(f"the CRDs are stale: run `{hint}` and commit the result", file=sys.stderr)
    return EXIT_STALE
