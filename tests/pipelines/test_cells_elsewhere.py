"""A sweep whose cells train elsewhere (the operator's Jobs): each reconcile starts no more cells than
the step's ``parallelism``, registers each finished one once, and the run goes on once all have; its
evaluations are scored elsewhere too, ``parallelism`` at a time, each recorded once."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.engine.reconcile.pipeline import PipelineReconciler
from tests.pipelines.runs import Controller, kinds, pipeline_spec, seeded
from tests.registry.repos import Repos
from tests.registry.test_executor import Elsewhere

pytestmark = pytest.mark.slow


def test_four_cells_train_elsewhere_two_at_a_time_and_register_once(repos: Repos, tmp_path: Path) -> None:
    work = seeded(repos, pipeline_spec(matrix='{"circuit.ansatz.reps": [2, 3], "training.seed": [11, 12]}'))
    controller = Controller(work, tmp_path)
    elsewhere = Elsewhere()
    root = tmp_path / "ckpt-cells"
    controller.pipelines = PipelineReconciler(controller.registry, checkpoint_root=root, executor=elsewhere)
    for _ in range(10):
        controller.once()
        assert elsewhere.running() <= 2  # parallelism: 2
        if "run-finished" in kinds(work):
            break
        elsewhere.join()
    assert len(elsewhere.started) == 4 and elsewhere.most_at_once == 2
    assert kinds(work).count("registered") == 4
    # the evaluate step's 4 versions x 2 backends were scored elsewhere too, as many at once
    assert len(elsewhere.evaluated) == 8 == len(set(elsewhere.evaluated))
    assert kinds(work).count("evaluated") == 8
    assert kinds(work)[-1] == "run-finished"
    runs = controller.once()
    assert len(elsewhere.started) == 4 and kinds(work).count("registered") == 4, runs
