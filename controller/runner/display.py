"""The runner's view: one row per model (phase, training progress, champion, accuracy, backend) and per
pipeline (its latest run: phase, cells done / total, current step), live in a terminal and as plain log
lines elsewhere (CI, pipes), where a redrawn table would be noise."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from controller.api.quantummodel import QuantumModelStatus
from controller.engine.text import escape_control

PHASE_STYLE = {
    "Ready": "green",
    "Succeeded": "green",
    "Running": "cyan",
    "Training": "cyan",
    "Evaluating": "yellow",
    "Pending": "white",
    "Blocked": "red",
    "Failed": "bold red",
    "Suspended": "dim",
}
LOG_EVERY = 5.0  # seconds between two progress lines when not on a terminal


@dataclass
class Row:
    model: str
    phase: str = "Pending"
    progress: str = ""
    champion: str = "-"
    accuracy: str = "-"
    backend: str = "-"
    message: str = ""


@dataclass
class Board:
    """The rows, and how they reach the screen."""

    console: Console
    rows: dict[str, Row] = field(default_factory=dict)
    live: Live | None = None
    _last_log: dict[str, float] = field(default_factory=dict)

    @property
    def interactive(self) -> bool:
        return self.console.is_terminal

    def __enter__(self) -> Board:
        if self.interactive:
            self.live = Live(self.table(), console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.update(self.table())
            self.live.__exit__(*exc)
            self.live = None

    def row(self, model: str) -> Row:
        return self.rows.setdefault(model, Row(model))

    def refresh(self) -> None:
        if self.live is not None:
            self.live.update(self.table())

    def say(self, text: str) -> None:
        """A line above the table (decisions, problems)."""
        self.console.print(escape_control(text), markup=False, highlight=False, soft_wrap=True)

    def training(self, model: str, iteration: int | None, total: int | None, loss: float | None, backend: str) -> None:
        row = self.row(model)
        row.phase = "Training"
        row.backend = backend or row.backend
        of = f"/{total}" if total else ""
        row.progress = f"iter {iteration if iteration is not None else '?'}{of}" + (
            f"  loss {loss:.4f}" if loss is not None else ""
        )
        if self.live is not None:
            self.refresh()
            return
        now = time.monotonic()
        if now - self._last_log.get(model, 0.0) >= LOG_EVERY:
            self._last_log[model] = now
            self.say(f"{model}: training {row.progress}")

    def status(self, model: str, status: QuantumModelStatus) -> None:
        row = self.row(model)
        row.phase = status.phase.value if status.phase else "Pending"
        row.message = status.message or ""
        row.progress = ""
        if status.champion is not None:
            row.champion = f"v{status.champion.version}"
            accuracy = status.champion.metrics.get("accuracy")
            row.accuracy = f"{accuracy:.3f}" if accuracy is not None else "-"
        backend = (status.training.backend if status.training else None) or (
            status.latest_version.backend if status.latest_version else None
        )
        row.backend = backend or row.backend
        self.refresh()

    def pipeline(self, key: str, phase: str, progress: str, message: str) -> None:
        """A pipeline's row: its latest run's phase, where the run stands (cells done / total, the
        current step) and what it last said."""
        row = self.row(key)
        row.phase, row.progress, row.message = phase, progress, message
        self.refresh()

    def failed(self, model: str, message: str) -> None:
        row = self.row(model)
        row.phase, row.message, row.progress = "Failed", message, ""
        self.refresh()

    def table(self) -> Table:
        table = Table(title="qmlops run", expand=False)
        for column in ("model", "phase", "training", "champion", "accuracy", "backend", "message"):
            table.add_column(column, overflow="fold", max_width=70 if column == "message" else None)
        for row in self.rows.values():
            # every cell as plain text, control characters escaped: names and messages come from specs
            # and Git, and neither rich markup nor a terminal escape sequence in them takes effect
            cells = (row.model, row.phase, row.progress, row.champion, row.accuracy, row.backend, row.message)
            texts = [Text(escape_control(cell)) for cell in cells]
            texts[1].stylize(PHASE_STYLE.get(row.phase, ""))
            table.add_row(*texts)
        return table

    def print_table(self) -> None:
        self.console.print(self.table())
