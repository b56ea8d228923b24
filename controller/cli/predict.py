"""``qmlops predict``: the champion's (or a version's) predictions for the rows of a CSV file."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from controller.cli.refusal import refuse
from controller.engine import prediction
from controller.engine.prediction import (
    BackendNotAllowed,
    InputError,
    LoadedModel,
    ModelUnavailable,
    NoChampion,
    Predictions,
)
from controller.engine.registry import GitError, Registry, RegistryError
from controller.engine.text import escape_control

EXIT_OK, EXIT_NO_CHAMPION, EXIT_UNUSABLE = 0, 1, 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="the champion's predictions (label and probability per class) for the rows of a CSV file",
        description=(
            "Predict with a registered model: its champion, or --version N, loaded from the registry in the "
            "repository with its digests checked. The CSV has a header row with the spec's feature columns "
            "(other columns are ignored). On the exact statevector by default; --backend runs the circuits with "
            "a backend's noise (local:aer, fake:<device>, ibm:<backend> within the spec's shot and QPU limits; "
            "the spec is read from --specs). Exit 0 predicted, 1 the model has no champion, 2 unusable input."
        ),
    )
    parser.add_argument("model", metavar="MODEL", help="NAMESPACE/NAME (NAME alone when only one model has it)")
    parser.add_argument("--repo", default=".", help="the Git work tree holding the registry (default: .)")
    parser.add_argument("--input", required=True, metavar="FILE.csv", help="rows to predict, with a header row")
    parser.add_argument("--version", type=int, metavar="N", help="this version instead of the champion")
    parser.add_argument("--backend", default=prediction.EXACT, metavar="B", help="default: local:statevector")
    parser.add_argument("--shots", type=int, metavar="N", help="shots with --backend (default: the spec's)")
    parser.add_argument("--specs", default="specs", help="spec folder for --backend (default: specs)")
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        registry = Registry(Path(args.repo), remote=None)
        namespace, name = _model(registry, args.model)
        model = prediction.load(registry, namespace, name, args.version)
        rows = prediction.read_csv(_read(Path(args.input)), model.features, args.input)
        predictions = _predict(model, rows, args, registry.repo)
    except NoChampion as err:
        print(escape_control(f"qmlops predict: {err}"), file=sys.stderr)
        return EXIT_NO_CHAMPION
    except (InputError, ModelUnavailable, BackendNotAllowed, RegistryError, GitError, UsageError) as err:
        return refuse("predict", err)
    except Exception as err:  # a backend's failure: its class and reason, never a traceback
        from controller.engine.status import describe_failure

        return refuse("predict", f"{args.backend}: {describe_failure(err)}")
    print(_render(model, predictions, args.backend, args.format), end="")
    return EXIT_OK


class UsageError(Exception):
    """An argument that cannot be used; the message names it."""


def _model(registry: Registry, text: str) -> tuple[str, str]:
    if "/" in text:
        namespace, _, name = text.partition("/")
        return namespace, name
    matches = [m for m in registry.models() if m[1] == text]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ModelUnavailable(f"{text} is not in the registry")
    raise UsageError(f"MODEL: {text} is in several namespaces ({', '.join(ns for ns, _ in matches)}): name one")


def _read(path: Path) -> bytes:
    try:
        if path.stat().st_size > prediction.MAX_INPUT_BYTES:
            raise InputError(f"{path}: larger than {prediction.MAX_INPUT_BYTES} bytes")
        return path.read_bytes()
    except OSError as err:
        raise InputError(f"--input: {path}: {err.strerror or err}") from None


def _predict(model: LoadedModel, rows: object, args: argparse.Namespace, repo: Path) -> Predictions:
    import numpy as np

    x = np.asarray(rows, dtype=float)
    if args.backend == prediction.EXACT:
        return prediction.predict(model, x)
    from controller.api import QuantumModel
    from controller.engine.training import local_credentials
    from controller.engine.validation import load_resources

    specs = Path(args.specs) if Path(args.specs).is_absolute() else repo / args.specs
    resources, _ = load_resources([specs]) if specs.exists() else ([], [])
    found = [
        r.resource
        for r in resources
        if isinstance(r.resource, QuantumModel)
        and (r.resource.metadata.namespace, r.resource.metadata.name) == (model.namespace, model.name)
    ]
    if not found:
        raise UsageError(f"--backend: no valid spec of {model.key} under {args.specs} (its shot and QPU limits hold)")
    spec = found[0].spec
    secret = spec.training.credentials_secret
    credentials = (lambda: local_credentials(model.namespace, secret)) if secret else None
    return prediction.predict_on(model, spec, args.backend, x, shots=args.shots, credentials=credentials)


def _render(model: LoadedModel, predictions: Predictions, backend: str, form: str) -> str:
    classes = [str(c) for c in predictions.classes]
    rows = predictions.rows()
    if form == "json":
        body = {
            "model": model.key,
            "version": model.version,
            "backend": backend,
            "classes": predictions.classes,
            "predictions": [{"row": i, **row} for i, row in enumerate(rows)],
        }
        return json.dumps(body, indent=2) + "\n"
    if form == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["row", "label", *(f"p_{c}" for c in classes)])
        for i, row in enumerate(rows):
            writer.writerow([i, row["label"], *(f"{row['probabilities'][c]:.6f}" for c in classes)])
        return out.getvalue()
    header = ["row", "label", *(f"p({c})" for c in classes)]
    table = [
        [str(i), str(row["label"]), *(f"{row['probabilities'][c]:.3f}" for c in classes)] for i, row in enumerate(rows)
    ]
    widths = [max(len(r[k]) for r in [header, *table]) for k in range(len(header))]
    lines = [f"{model.key} version {model.version} on {backend}"]
    lines += ["  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)) for r in [header, *table]]
    return "".join(escape_control(line) + "\n" for line in lines)
