"""The training data: loaded from a builtin dataset or a CSV file in the repository, narrowed to the
spec's features and classes, split by seed (stratified), reduced by PCA to the qubit count when the
spec asks, and scaled to the feature map's range. The preprocessing is fitted on the training split
only, kept as plain numbers (no pickle), and applied again to anything a model later predicts on."""

from __future__ import annotations

import csv
import math
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from controller.api import limits
from controller.api.quantummodel import Dataset
from controller.engine.containment import OutsideWorkTree, inside_work_tree
from controller.engine.registry.canonical import digest_of
from controller.engine.training.errors import DatasetError

# The range features are scaled to, per feature map. ZFeatureMap rotates each qubit by 2x: [0, pi] covers
# it once. ZZ and Pauli maps also entangle with phases 2(pi - x_i)(pi - x_j), which [0, 1] keeps apart
# (qiskit-machine-learning's tutorials scale to [0, 1] for the same reason); [0, pi] makes them wrap.
FEATURE_RANGES = {"ZFeatureMap": (0.0, math.pi), "ZZFeatureMap": (0.0, 1.0), "PauliFeatureMap": (0.0, 1.0)}
AD_HOC_SAMPLES = 60  # per class, generated once with the dataset's seed


@dataclass(frozen=True)
class Table:
    """A dataset as loaded: numeric features with their names, one label per row."""

    x: np.ndarray
    y: list[Any]
    feature_names: list[str]
    where: str
    problems: dict[str, str] = field(default_factory=dict)  # column -> its first non-numeric cell, if selected

    def columns(self, names: list[str]) -> np.ndarray:
        missing = [n for n in names if n not in self.feature_names]
        if missing:
            raise DatasetError(
                f"dataset.features: {self.where} has no feature {missing[0]!r}; it has {', '.join(self.feature_names)}"
            )
        unusable = [n for n in names if n in self.problems]
        if unusable:
            raise DatasetError(self.problems[unusable[0]])
        return self.x[:, [self.feature_names.index(n) for n in names]]


@dataclass(frozen=True)
class Preprocessing:
    """What turns raw rows into circuit parameters: feature selection, PCA, min-max scaling."""

    features: list[str]
    pca_mean: list[float] | None
    pca_components: list[list[float]] | None
    scale_min: list[float]
    scale_span: list[float]
    feature_range: tuple[float, float]

    def apply(self, x: np.ndarray) -> np.ndarray:
        out = np.asarray(x, dtype=float)
        if self.pca_mean is not None and self.pca_components is not None:
            out = (out - np.asarray(self.pca_mean)) @ np.asarray(self.pca_components).T
        low, high = self.feature_range
        return low + (out - np.asarray(self.scale_min)) / np.asarray(self.scale_span) * (high - low)

    def to_json(self) -> dict[str, Any]:
        return {
            "features": self.features,
            "pca": None if self.pca_mean is None else {"mean": self.pca_mean, "components": self.pca_components},
            "scale": {"min": self.scale_min, "span": self.scale_span, "range": list(self.feature_range)},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Preprocessing:
        pca = data.get("pca") or None
        scale = data["scale"]
        return cls(
            features=[str(f) for f in data["features"]],
            pca_mean=[float(v) for v in pca["mean"]] if pca else None,
            pca_components=[[float(v) for v in row] for row in pca["components"]] if pca else None,
            scale_min=[float(v) for v in scale["min"]],
            scale_span=[float(v) for v in scale["span"]],
            feature_range=(float(scale["range"][0]), float(scale["range"][1])),
        )


@dataclass(frozen=True)
class Split:
    """Raw rows (selected features, before preprocessing) of the train and test splits; labels as
    class indices into ``classes``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[Any]
    features: list[str]
    test_rows: np.ndarray  # the test split's row numbers in the table, to read other columns of the same rows

    def digest(self, source: str) -> str:
        """The lineage digest: which rows, which values, which labels. Preprocessing is not part of it:
        two versions on the same digest are scored on the very same test rows."""
        return digest_of(
            {
                "source": source,
                "features": self.features,
                "classes": [str(c) for c in self.classes],
                "train": [self.x_train.round(12).tolist(), self.y_train.tolist()],
                "test": [self.x_test.round(12).tolist(), self.y_test.tolist()],
            }
        )


@dataclass(frozen=True)
class Prepared:
    split: Split
    preprocessing: Preprocessing
    x_train: np.ndarray  # preprocessed: what the feature map receives
    x_test: np.ndarray
    digest: str

    @property
    def classes(self) -> list[Any]:
        return self.split.classes


# --- loading ------------------------------------------------------------------------------------------


def _snake(name: str) -> str:
    name = re.sub(r"\(.*?\)", "", name).strip().lower()
    return re.sub(r"[^a-z0-9]+", "_", name).strip("_")


def load(dataset: Dataset, repo_root: Path | None, qubits: int) -> Table:
    kind, _, rest = dataset.source.partition(":")
    if kind == "builtin":
        return _builtin(rest, dataset.seed, qubits)
    if repo_root is None:
        raise DatasetError(f"dataset.source: {dataset.source} needs the repository it lives in")
    return _csv(repo_root, rest, dataset.target or "")


def preload() -> None:
    """Import the data libraries now: a long-running process (the operator) pays scikit-learn's
    import (a second or two) at startup rather than in its first reconcile."""
    import sklearn.datasets
    import sklearn.model_selection  # noqa: F401


def _builtin(name: str, seed: int, qubits: int) -> Table:
    from sklearn import datasets

    where = f"builtin:{name}"
    if name in ("iris", "wine", "breast_cancer"):
        bunch = getattr(datasets, f"load_{name}")()
        return Table(np.asarray(bunch.data, dtype=float), [int(v) for v in bunch.target], _names(bunch), where)
    if name == "moons":
        x, y = datasets.make_moons(n_samples=200, noise=0.1, random_state=seed)
    elif name == "circles":
        x, y = datasets.make_circles(n_samples=200, noise=0.05, factor=0.5, random_state=seed)
    else:
        x, y = _ad_hoc(seed, qubits)
    return Table(np.asarray(x, dtype=float), [int(v) for v in y], [f"x{i}" for i in range(x.shape[1])], where)


def _names(bunch: Any) -> list[str]:
    return [_snake(str(n)) for n in bunch.feature_names]


def _ad_hoc(seed: int, qubits: int) -> tuple[np.ndarray, np.ndarray]:
    """qiskit-machine-learning's ad hoc data (Havlíček et al.), defined for 2 or 3 dimensions."""
    from qiskit_machine_learning.datasets import ad_hoc_data
    from qiskit_machine_learning.utils import algorithm_globals

    dimension = 3 if qubits >= 3 else 2
    algorithm_globals.random_seed = seed
    x_train, y_train, x_test, y_test = ad_hoc_data(
        training_size=AD_HOC_SAMPLES,
        test_size=0,
        n=dimension,
        gap=0.3,  # type: ignore[arg-type]  # annotated int, documented and used as a float
        one_hot=False,
    )[:4]
    x = np.vstack([x_train, x_test]) if len(x_test) else x_train
    y = np.concatenate([y_train, y_test]) if len(y_test) else y_train
    return x, y


def _csv(repo_root: Path, relative: str, target: str) -> Table:
    where = f"file:{relative}"
    try:
        path = inside_work_tree(repo_root, relative)
    except OutsideWorkTree as err:
        raise DatasetError(f"dataset.source: {where} {err.reason}") from None
    try:
        info = path.stat()
    except OSError:
        raise DatasetError(f"dataset.source: {where} does not exist in the repository") from None
    if not stat.S_ISREG(info.st_mode):
        raise DatasetError(f"dataset.source: {where} is not a regular file")
    try:  # streamed: refused at the first byte or row over a bound, before the rest is read
        rows = list(limits.csv_rows(path, where))
    except limits.DatasetTooLarge as err:
        raise DatasetError(f"dataset.source: {err}") from None
    except UnicodeDecodeError:
        raise DatasetError(f"dataset.source: {where} is not UTF-8 text") from None
    except csv.Error as err:
        raise DatasetError(f"dataset.source: {where} is not a readable CSV file ({err})") from None
    except OSError:
        raise DatasetError(f"dataset.source: {where} cannot be read") from None
    if len(rows) < 2:
        raise DatasetError(f"dataset.source: {where} has no data rows under its header")
    header = [h.strip() for h in rows[0][1]]
    if target not in header:
        raise DatasetError(f"dataset.target: {where} has no column {target!r}; its columns are {', '.join(header)}")
    label_at = header.index(target)
    names = [h for i, h in enumerate(header) if i != label_at]
    values, labels = [], []
    problems: dict[str, str] = {}
    for number, row in rows[1:]:
        if len(row) != len(header):
            raise DatasetError(f"dataset.source: {where}:{number}: {len(row)} cells, the header has {len(header)}")
        labels.append(_label(row[label_at].strip()))
        values.append([_cell(row[i], where, number, header[i], problems) for i in range(len(row)) if i != label_at])
    return Table(np.asarray(values, dtype=float), labels, names, where, problems)


def _cell(cell: str, where: str, line: int, column: str, problems: dict[str, str]) -> float:
    """A number; a column that is not numeric is an error only if the spec selects it as a feature."""
    try:
        return _number(cell, where, line, column)
    except DatasetError as err:
        problems.setdefault(column, str(err))
        return math.nan


def _number(cell: str, where: str, line: int, column: str) -> float:
    try:
        value = float(cell)
    except ValueError:  # the cell itself is never quoted: a data file's content stays out of messages
        raise DatasetError(f"dataset.features: {where}:{line}: column {column!r} is not numeric") from None
    if not math.isfinite(value):
        raise DatasetError(f"dataset.features: {where}:{line}: column {column!r} is not a finite number")
    return value


def _label(cell: str) -> Any:
    try:
        return int(cell)
    except ValueError:
        return cell


# --- preparing ------------------------------------------------------------------------------------------


def split(dataset: Dataset, table: Table) -> Split:
    """The spec's features and classes, split by seed with every class in both parts."""
    features = list(dataset.features or table.feature_names)
    x = table.columns(features)
    labels = [str(v) for v in table.y]
    classes = _classes(dataset, table, labels)
    keep = [i for i, label in enumerate(labels) if label in {str(c) for c in classes}]
    index = {str(c): k for k, c in enumerate(classes)}
    y = np.asarray([index[labels[i]] for i in keep], dtype=int)
    x = x[keep]
    _check_split(dataset, table.where, y, len(classes))
    from sklearn.model_selection import train_test_split

    rows = np.asarray(keep, dtype=int)
    x_train, x_test, y_train, y_test, _, test_rows = train_test_split(
        x, y, rows, test_size=dataset.test_fraction, stratify=y, random_state=dataset.seed
    )
    return Split(x_train, y_train, x_test, y_test, classes, features, test_rows)


def _classes(dataset: Dataset, table: Table, labels: list[str]) -> list[Any]:
    present = sorted(set(table.y), key=lambda v: (isinstance(v, str), v))
    if not dataset.classes:
        classes = present
    else:
        found = {str(v) for v in present}
        missing = [c for c in dataset.classes if str(c) not in found]
        if missing:
            raise DatasetError(
                f"dataset.classes: {table.where} has no class {missing[0]!r}; {_list_classes(table, present)}"
            )
        classes = list(dataset.classes)
    if len(classes) < 2:
        raise DatasetError(f"dataset.classes: {table.where} has one class only; a classifier needs two")
    return classes


def _list_classes(table: Table, present: list[Any]) -> str:
    """The classes a dataset has: named for a builtin dataset, counted for a file (its labels are the
    file's content, which no message quotes)."""
    if table.where.startswith("builtin:"):
        return f"its classes are {', '.join(str(c) for c in present[:20])}"
    return f"its target column has {len(present)} distinct value{'s' if len(present) != 1 else ''}"


def _check_split(dataset: Dataset, where: str, y: np.ndarray, n_classes: int) -> None:
    counts = np.bincount(y, minlength=n_classes)
    n_test = math.ceil(len(y) * dataset.test_fraction)
    if counts.min() < 2 or n_test < n_classes or len(y) - n_test < n_classes:
        raise DatasetError(
            f"dataset.testFraction: {where} has {len(y)} rows ({', '.join(map(str, counts))} per class); "
            f"a stratified split with testFraction {dataset.test_fraction} needs every class in both parts"
        )


def fit(dataset: Dataset, data: Split, qubits: int, feature_range: tuple[float, float]) -> Preprocessing:
    x = data.x_train
    mean = components = None
    if dataset.reduce is not None:
        n = dataset.reduce.components
        if n > min(x.shape):
            raise DatasetError(
                f"dataset.reduce.components: {n} components from {x.shape[1]} features and {x.shape[0]} rows"
            )
        mean = x.mean(axis=0)
        _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
        vt = _fix_signs(vt[:n])
        components = vt
        x = (x - mean) @ vt.T
    if x.shape[1] > qubits:
        raise DatasetError(
            f"dataset.features: {x.shape[1]} features do not fit {qubits} qubits; list fewer or set dataset.reduce"
        )
    low, high = x.min(axis=0), x.max(axis=0)
    span = np.where(high - low > 1e-12, high - low, 1.0)
    return Preprocessing(
        features=list(data.features),
        pca_mean=None if mean is None else mean.tolist(),
        pca_components=None if components is None else components.tolist(),
        scale_min=low.tolist(),
        scale_span=span.tolist(),
        feature_range=feature_range,
    )


def _fix_signs(vt: np.ndarray) -> np.ndarray:
    """Each principal axis points where its largest loading is positive: SVD's sign is arbitrary and
    would otherwise differ between machines."""
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
    return vt * np.where(signs == 0, 1.0, signs)[:, None]


def prepare(dataset: Dataset, repo_root: Path | None, qubits: int, feature_map: str = "ZZFeatureMap") -> Prepared:
    table = load(dataset, repo_root, qubits)
    data = split(dataset, table)
    pre = fit(dataset, data, qubits, FEATURE_RANGES[feature_map])
    return Prepared(data, pre, pre.apply(data.x_train), pre.apply(data.x_test), data.digest(dataset.source))
