"""The training data: builtin datasets and CSV files in the repository, class subsets, stratified
splits by seed, PCA to the qubit count, scaling to the feature map's range, the lineage digest; bad
data refused with a message that names the spec field."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from controller.api.quantummodel import Dataset
from controller.engine import training
from controller.engine.training import data
from tests.training.specs import TINY_CSV, spec, write_iris_csv


def prepared(
    dataset: Dataset, repo: Path | None = None, qubits: int = 2, feature_map: str = "ZFeatureMap"
) -> data.Prepared:
    return data.prepare(dataset, repo, qubits, feature_map)


def every_class_in_both(p: data.Prepared) -> None:
    n = len(p.classes)
    assert set(p.split.y_train.tolist()) == set(range(n))
    assert set(p.split.y_test.tolist()) == set(range(n))


@pytest.mark.parametrize(
    ("name", "classes", "reduce"),
    [
        ("iris", 3, 2),
        ("wine", 3, 2),
        ("breast_cancer", 2, 2),
        ("moons", 2, None),
        ("circles", 2, None),
        ("ad_hoc", 2, None),
    ],
)
def test_builtin_datasets_prepare_to_the_qubit_count(name: str, classes: int, reduce: int | None) -> None:
    dataset = Dataset(source=f"builtin:{name}", reduce={"components": reduce} if reduce else None)
    p = prepared(dataset)
    assert len(p.classes) == classes
    assert p.x_train.shape[1] == 2 and p.x_test.shape[1] == 2
    assert len(p.x_train) + len(p.x_test) == len(p.split.y_train) + len(p.split.y_test)
    every_class_in_both(p)
    assert p.digest.startswith("sha256:")
    assert prepared(dataset).digest == p.digest  # generated datasets too: by the dataset's seed


def test_class_subset_and_stratified_split_by_seed() -> None:
    dataset = Dataset(source="builtin:iris", classes=[2, 1], test_fraction=0.3, seed=3)
    p = prepared(dataset, qubits=4)
    assert p.classes == [2, 1]  # the spec's order: index 0 is class 2
    assert len(p.split.y_train) + len(p.split.y_test) == 100  # 50 of each, class 0 left out
    assert len(p.split.y_test) == 30
    assert np.bincount(p.split.y_test).tolist() == [15, 15]  # stratified
    every_class_in_both(p)

    again = prepared(dataset, qubits=4)
    assert np.array_equal(again.split.x_test, p.split.x_test)
    assert np.array_equal(again.split.test_rows, p.split.test_rows)
    other = prepared(dataset.model_copy(update={"seed": 4}), qubits=4)
    assert not np.array_equal(other.split.test_rows, p.split.test_rows)
    assert other.digest != p.digest


def test_pca_reduces_to_the_qubit_count_fitted_on_the_training_split() -> None:
    dataset = Dataset(source="builtin:wine", reduce={"components": 2})
    p = prepared(dataset)
    pre = p.preprocessing
    assert pre.pca_components is not None and pre.pca_mean is not None
    components = np.asarray(pre.pca_components)
    assert components.shape == (2, 13)
    assert np.allclose(components @ components.T, np.eye(2))  # orthonormal axes
    assert np.allclose(pre.pca_mean, p.split.x_train.mean(axis=0))  # the test split is not looked at
    # plain numbers, no pickle: the JSON form applies the very same transformation
    again = data.Preprocessing.from_json(pre.to_json())
    assert np.array_equal(again.apply(p.split.x_test), p.x_test)
    assert prepared(dataset).preprocessing == pre  # SVD signs fixed: reproducible


def test_features_scaled_to_the_feature_map_range() -> None:
    p = prepared(Dataset(source="builtin:iris", features=["sepal_length", "petal_width"], classes=[0, 1]))
    assert p.preprocessing.to_json()["scale"]["range"] == [0.0, math.pi]
    assert np.allclose(p.x_train.min(axis=0), 0.0) and np.allclose(p.x_train.max(axis=0), math.pi)
    # the test split goes through the training split's scaling, so it may leave the range a little
    x = p.split.x_test
    low, span = np.asarray(p.preprocessing.scale_min), np.asarray(p.preprocessing.scale_span)
    assert np.allclose(p.x_test, (x - low) / span * math.pi)


def test_csv_file_dataset(tmp_path: Path) -> None:
    write_iris_csv(tmp_path / "data" / "iris01.csv", per_class=10)
    dataset = Dataset(source=TINY_CSV, target="species", features=["petal_width", "petal_length"], test_fraction=0.4)
    p = prepared(dataset, tmp_path)
    assert p.classes == ["setosa", "versicolor"]  # string labels, sorted
    assert p.split.features == ["petal_width", "petal_length"]  # the id column is not selected
    assert len(p.split.y_test) == 8
    every_class_in_both(p)
    assert training.dataset_digest(spec(dataset=dataset.model_dump(by_alias=True)), tmp_path) == p.digest


def test_digest_is_stable_and_follows_the_data(tmp_path: Path) -> None:
    path = tmp_path / "data" / "iris01.csv"
    write_iris_csv(path, per_class=10)
    s = spec(dataset={"source": TINY_CSV, "target": "species", "classes": None, "testFraction": 0.4})
    first = training.dataset_digest(s, tmp_path)
    assert training.dataset_digest(s, tmp_path) == first

    text = path.read_text()
    path.write_text(text.replace("\r\n", "\n").rstrip("\n") + "\n\n")  # a trailing blank line: same data
    assert training.dataset_digest(s, tmp_path) == first
    lines = text.splitlines()
    cells = lines[3].split(",")
    cells[1] = str(float(cells[1]) + 0.1)  # one value of one row
    path.write_text("\n".join([*lines[:3], ",".join(cells), *lines[4:]]) + "\n")
    assert training.dataset_digest(s, tmp_path) != first
    path.write_text(text)
    assert training.dataset_digest(s, tmp_path) == first
    assert (
        training.dataset_digest(s.model_copy(update={"dataset": s.dataset.model_copy(update={"seed": 1})}), tmp_path)
        != first
    )


# --- bad data --------------------------------------------------------------------------------------


def write(repo: Path, text: str, name: str = "data/bad.csv") -> str:
    path = repo / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return f"file:{name}"


ROWS = "".join(f"{i},{i % 3},{'a' if i % 2 else 'b'}\n" for i in range(12))


@pytest.mark.parametrize(
    ("csv", "dataset", "field", "detail"),
    [
        ("f1,f2,label\n" + ROWS, {"target": "kind"}, "dataset.target", "has no column 'kind'"),
        (
            "f1,f2,label\n1,2,a\n\n3,x2,b\n" + ROWS,
            {"target": "label"},
            "dataset.features",
            "data/bad.csv:4: column 'f2' is not numeric",
        ),
        (
            "f1,f2,label\n1,inf,a\n" + ROWS,
            {"target": "label"},
            "dataset.features",
            "data/bad.csv:2: column 'f2' is not a finite number",
        ),
        ("f1,f2,label\n" + "1,2,a\n" * 10, {"target": "label"}, "dataset.classes", "one class only;"),
        (
            "f1,f2,label\n1,2,a\n3,4,b\n5,6,a\n7,8,b\n",
            {"target": "label"},
            "dataset.testFraction",
            "needs every class in both parts",
        ),
        (
            "f1,f2,label\n1,2,a\n" + "3,4,b\n" * 6,
            {"target": "label", "testFraction": 0.5},
            "dataset.testFraction",
            "(1, 6 per class)",
        ),
        (
            "f1,f2,label\n" + ROWS,
            {"target": "label", "features": ["f1", "f9"]},
            "dataset.features",
            "has no feature 'f9'",
        ),
        ("f1,f2,label\n" + ROWS, {"target": "label", "classes": ["a", "c"]}, "dataset.classes", "has no class 'c'"),
        (
            "f1,f2,label\n1,2\n" + ROWS,
            {"target": "label"},
            "dataset.source",
            "data/bad.csv:2: 2 cells, the header has 3",
        ),
        ("f1,f2,label\n", {"target": "label"}, "dataset.source", "has no data rows"),
    ],
)
def test_bad_data_names_the_field(
    tmp_path: Path, csv: str, dataset: dict[str, object], field: str, detail: str
) -> None:
    source = write(tmp_path, csv)
    s = spec(dataset={"source": source, "features": None, "classes": None, "testFraction": 0.2, **dataset})
    with pytest.raises(training.DatasetError) as raised:
        training.train(s, repo_root=tmp_path)  # refused before any circuit is built or job run
    message = str(raised.value)
    assert message.startswith(f"{field}: "), message
    assert detail in message, message


def test_a_non_numeric_column_that_is_not_a_feature_is_fine(tmp_path: Path) -> None:
    source = write(tmp_path, "name,f1,f2,label\n" + "".join(f"n{i},{i},{i % 4},{i % 2}\n" for i in range(12)))
    s = spec(dataset={"source": source, "target": "label", "features": ["f1", "f2"], "classes": None})
    assert training.dataset_digest(s, tmp_path).startswith("sha256:")
    everything = spec(dataset={"source": source, "target": "label", "features": None, "classes": None})
    with pytest.raises(
        training.DatasetError, match=r"^dataset.features: file:data/bad.csv:2: column 'name' is not numeric"
    ):
        training.dataset_digest(everything, tmp_path)


def test_a_symlink_out_of_the_repository_is_refused(tmp_path: Path) -> None:
    repo, outside = tmp_path / "repo", tmp_path / "secret.csv"
    write(tmp_path, "f1,f2,label\n" + ROWS, "secret.csv")
    (repo / "data").mkdir(parents=True)
    os.symlink(outside, repo / "data" / "link.csv")
    s = spec(dataset={"source": "file:data/link.csv", "target": "label", "features": None, "classes": None})
    with pytest.raises(
        training.DatasetError, match=r"^dataset.source: file:data/link.csv leads outside the repository"
    ):
        training.train(s, repo_root=repo)
    missing = spec(dataset={"source": "file:data/none.csv", "target": "label", "features": None, "classes": None})
    with pytest.raises(training.DatasetError, match=r"^dataset.source: file:data/none.csv does not exist"):
        training.train(missing, repo_root=repo)


def test_more_features_than_qubits_and_too_many_components_are_refused() -> None:
    with pytest.raises(training.DatasetError, match=r"^dataset.features: 4 features do not fit 2 qubits"):
        prepared(Dataset(source="builtin:iris"))
    with pytest.raises(training.DatasetError, match=r"^dataset.reduce.components: 3 components from 2 features"):
        prepared(Dataset(source="builtin:moons", reduce={"components": 3}), qubits=3)


def test_a_dataset_in_git_or_linked_into_it_is_refused_without_reading_it(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("[http]\n\textraheader = AUTHORIZATION: basic c2VjcmV0\n")
    (tmp_path / ".git" / "data.csv").write_text("[http]\nAUTHORIZATION: basic c2VjcmV0\n")
    (tmp_path / "data").mkdir()
    os.symlink("../.git/config", tmp_path / "data" / "leak.csv")
    os.symlink(".git", tmp_path / "meta")
    for source, reason in (
        ("file:data/leak.csv", "leads into .git (through a symlink)"),
        ("file:meta/data.csv", "leads into .git (through a symlink)"),
        ("file:.git/data.csv", "is inside .git"),
        ("file:.GIT/data.csv", "is inside .git"),
    ):
        s = spec(dataset={"source": source, "target": "[http]", "features": None, "classes": [0, 1]})
        with pytest.raises(training.DatasetError) as raised:
            training.dataset_digest(s, tmp_path)
        assert str(raised.value).startswith(f"dataset.source: {source} {reason}"), raised.value
        assert "AUTHORIZATION" not in str(raised.value) and "c2VjcmV0" not in str(raised.value)


def test_data_errors_name_the_file_line_and_column_never_the_values(tmp_path: Path) -> None:
    """A file's cells and labels are its content: messages give column names and counts only."""
    secret = "AKIA0123456789ABCDEF"
    labels = write(tmp_path, "f1,f2,label\n" + "".join(f"{i},{i % 3},{secret if i % 2 else 'b'}\n" for i in range(12)))
    s = spec(dataset={"source": labels, "target": "label", "features": None, "classes": ["x", "y"]})
    with pytest.raises(training.DatasetError) as raised:
        training.dataset_digest(s, tmp_path)
    assert str(raised.value) == (
        "dataset.classes: file:data/bad.csv has no class 'x'; its target column has 2 distinct values"
    )
    cells = write(tmp_path, "f1,f2,label\n1,2,a\n3," + secret + ",b\n" + ROWS)
    s = spec(dataset={"source": cells, "target": "label", "features": None, "classes": None})
    with pytest.raises(training.DatasetError) as raised:
        training.dataset_digest(s, tmp_path)
    assert str(raised.value) == "dataset.features: file:data/bad.csv:3: column 'f2' is not numeric"
    one = write(tmp_path, "f1,f2,label\n" + f"1,2,{secret}\n" * 10)
    s = spec(dataset={"source": one, "target": "label", "features": None, "classes": None})
    with pytest.raises(training.DatasetError, match="one class only; a classifier needs two") as raised:
        training.train(s, repo_root=tmp_path)
    assert secret not in str(raised.value)
