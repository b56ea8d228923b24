"""A train step's matrix: the cells it sweeps, what it may not vary, and the cap on combinations."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from controller.api.quantummodel import QuantumModelSpec
from controller.api.quantumpipeline import QuantumPipelineSpec, TrainStep
from controller.engine.pipelines.cells import Cell, cells_of
from tests.api import specs

SWEEP = {"circuit.ansatz.reps": [1, 2, 3], "training.optimizer.kind": ["COBYLA", "SPSA"]}


def test_the_cells_are_the_product_in_key_order() -> None:
    cells = cells_of(TrainStep.model_validate({"matrix": SWEEP}))
    assert [c.label for c in cells] == [
        "circuit.ansatz.reps=1, training.optimizer.kind=COBYLA",
        "circuit.ansatz.reps=1, training.optimizer.kind=SPSA",
        "circuit.ansatz.reps=2, training.optimizer.kind=COBYLA",
        "circuit.ansatz.reps=2, training.optimizer.kind=SPSA",
        "circuit.ansatz.reps=3, training.optimizer.kind=COBYLA",
        "circuit.ansatz.reps=3, training.optimizer.kind=SPSA",
    ]
    assert len({c.id for c in cells}) == 6


def test_exclude_removes_every_cell_with_its_values_and_include_adds_cells_once() -> None:
    step = TrainStep.model_validate(
        {
            "matrix": SWEEP,
            "exclude": [{"circuit.ansatz.reps": 3}, {"circuit.ansatz.reps": 1, "training.optimizer.kind": "SPSA"}],
            "include": [
                {"circuit.ansatz.reps": 2, "training.optimizer.kind": "SPSA"},  # already there: not twice
                {"circuit.ansatz.reps": 4, "training.optimizer.kind": "COBYLA"},
            ],
        }
    )
    assert [c.as_dict() for c in cells_of(step)] == [
        {"circuit.ansatz.reps": 1, "training.optimizer.kind": "COBYLA"},
        {"circuit.ansatz.reps": 2, "training.optimizer.kind": "COBYLA"},
        {"circuit.ansatz.reps": 2, "training.optimizer.kind": "SPSA"},
        {"circuit.ansatz.reps": 4, "training.optimizer.kind": "COBYLA"},
    ]


def test_a_step_without_a_matrix_is_one_cell_the_spec_as_committed() -> None:
    (cell,) = cells_of(TrainStep())
    assert cell.label == "(as committed)"
    model = specs.model()["spec"]
    assert cell.apply(model) == model


def test_a_cell_id_depends_on_its_values_only() -> None:
    a = Cell((("circuit.ansatz.reps", 2), ("training.shots", 100)))
    b = Cell((("training.shots", 100), ("circuit.ansatz.reps", 2)))
    assert a.id == b.id
    assert Cell((("circuit.ansatz.reps", 2),)).id != Cell((("circuit.ansatz.reps", 3),)).id
    # a value's type is part of it: 1 and true are different settings
    assert Cell((("training.shots", 1),)).id != Cell((("training.shots", True),)).id


def test_applying_a_cell_gives_a_valid_variant_of_the_model_and_leaves_the_model_alone() -> None:
    model = specs.model()["spec"]
    cell = cells_of(TrainStep.model_validate({"matrix": {"circuit.ansatz.reps": [3], "training.shots": [256]}}))[0]
    variant = QuantumModelSpec.model_validate(cell.apply(model))
    assert variant.circuit.ansatz.reps == 3
    assert variant.training.shots == 256
    assert model["circuit"]["ansatz"]["reps"] == 2
    assert variant.governance == QuantumModelSpec.model_validate(model).governance


def test_include_and_exclude_keys_are_checked_as_spec_paths_with_their_values() -> None:
    with pytest.raises(ValidationError, match=r"include\[0\]\.circuit\.nope: not a QuantumModel spec path"):
        TrainStep.model_validate({"include": [{"circuit.nope": 1}]})
    with pytest.raises(ValidationError, match=r"exclude\[0\]\.circuit\.qubits: 'four' is not valid there"):
        TrainStep.model_validate({"matrix": {"circuit.qubits": [2]}, "exclude": [{"circuit.qubits": "four"}]})


def test_more_combinations_than_max_combinations_are_refused_with_the_count() -> None:
    matrix = {"circuit.ansatz.reps": list(range(1, 9)), "training.shots": list(range(100, 1000, 100))}
    with pytest.raises(ValidationError, match="72 combinations exceed maxCombinations 64"):
        TrainStep.model_validate({"matrix": matrix})
    assert len(TrainStep.model_validate({"matrix": matrix, "maxCombinations": 72}).cells()) == 72
    # exclusions count: the same matrix less one reps value fits under 64
    assert len(TrainStep.model_validate({"matrix": matrix, "exclude": [{"circuit.ansatz.reps": 8}]}).cells()) == 63


def test_a_matrix_too_large_to_expand_is_refused_before_it_is_built() -> None:
    matrix = {
        "training.shots": list(range(1, 65)),
        "training.seed": list(range(64)),
        "circuit.ansatz.reps": list(range(1, 18)),
    }
    with pytest.raises(ValidationError, match="its product has 69632 combinations, more than the 65536"):
        TrainStep.model_validate({"matrix": matrix, "maxCombinations": 1024})


def test_the_design_pipeline_sweeps_six_cells() -> None:
    spec = QuantumPipelineSpec.model_validate(specs.pipeline()["spec"])
    sweep = next(s for s in spec.steps if s.train is not None)
    assert sweep.train is not None
    assert len(cells_of(sweep.train)) == 6
    assert spec.fail_fast is True


def test_a_value_listed_twice_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"matrix\.circuit\.ansatz\.reps: 2 is listed twice"):
        TrainStep.model_validate({"matrix": {"circuit.ansatz.reps": [1, 2, 2]}})


def test_each_step_depends_on_what_it_works_on() -> None:
    data = specs.pipeline()["spec"]
    data["steps"][1]["dependsOn"] = []  # noise-check evaluates nothing without the sweep before it
    with pytest.raises(ValidationError, match=r"steps\.noise-check\.dependsOn: a evaluate step|an? evaluate step"):
        QuantumPipelineSpec.model_validate(data)
    data = specs.pipeline()["spec"]
    data["steps"] = [s for s in data["steps"] if "evaluate" not in s]
    data["steps"][1]["dependsOn"] = ["sweep"]  # select straight after train: on the versions' own figures
    assert QuantumPipelineSpec.model_validate(data).steps[1].select is not None
    data["steps"][2]["dependsOn"] = ["sweep"]  # promote needs a selection
    with pytest.raises(ValidationError, match=r"steps\.promote\.dependsOn: a promote step works on what a select"):
        QuantumPipelineSpec.model_validate(data)
