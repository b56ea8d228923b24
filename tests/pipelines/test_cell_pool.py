"""A shell's own threads for cells (the operator's never end: see runtime.reconcile_pool): a train
step's cells run on them, still ``parallelism`` at a time."""

from __future__ import annotations

import concurrent.futures
import threading
from pathlib import Path
from typing import Any

import pytest

from controller.engine.reconcile.pipeline import PipelineReconciler
from tests.pipelines.runs import Controller, Trainer, kinds, pipeline_spec, seeded
from tests.registry.repos import Repos

pytestmark = pytest.mark.slow


class Watched(Trainer):
    """The counted trainer, noting the thread each training ran on and how many ran at once."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []
        self.at_once = 0
        self.most = 0
        self.lock = threading.Lock()

    def __call__(self, spec: Any, **kwargs: Any) -> Any:
        with self.lock:
            self.threads.append(threading.current_thread().name)
            self.at_once += 1
            self.most = max(self.most, self.at_once)
        try:
            return super().__call__(spec, **kwargs)
        finally:
            with self.lock:
                self.at_once -= 1


def test_cells_train_on_the_pool_the_shell_gives_and_keep_the_steps_parallelism(repos: Repos, tmp_path: Path) -> None:
    one_at_a_time = pipeline_spec(matrix='{"circuit.ansatz.reps": [2, 3]}').replace("parallelism: 2", "parallelism: 1")
    work = seeded(repos, one_at_a_time)
    trainer = Watched()
    controller = Controller(work, tmp_path, trainer)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="shell-cell")
    try:
        controller.pipelines = PipelineReconciler(
            controller.registry, trainer=trainer, checkpoint_root=tmp_path / "ckpt", cell_pool=pool
        )
        (outcome,) = controller.once()
    finally:
        pool.shutdown()
    assert outcome.runs[-1].phase == "Succeeded"
    assert trainer.calls == [1, 2, 3]  # the model's own, then the two cells
    cells = trainer.threads[1:]
    assert len(cells) == 2 and all(name.startswith("shell-cell") for name in cells), trainer.threads
    assert trainer.most == 1, "parallelism 1: one cell at a time, though the pool has 4 threads"
    assert kinds(work).count("registered") == 2
