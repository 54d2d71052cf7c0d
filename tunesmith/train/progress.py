"""The training progress bar (rich): step, loss, tokens/s, ETA. Writes to stderr, so `--json` stays clean."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainProgress:
    """A progress bar that is a no-op when disabled (tests, `--json` without a terminal)."""

    def __init__(self, total_steps: int, enabled: bool) -> None:
        self.total_steps = total_steps
        self.enabled = enabled
        self._progress: Progress | None = None
        self._task = TaskID(0)
        self._val = "-"

    def start(self, completed: int) -> None:
        if not self.enabled:
            return
        self._progress = Progress(
            TextColumn("[bold]training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  val {task.fields[val]}  {task.fields[speed]} tok/s"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self._progress.start()
        self._task = self._progress.add_task(
            "train", total=self.total_steps, completed=completed, loss="-", val="-", speed="-"
        )

    def update(self, step: int, loss: float, tokens_per_second: float) -> None:
        if self._progress is not None:
            self._progress.update(
                self._task,
                completed=step,
                loss=f"{loss:.4f}",
                val=self._val,
                speed=f"{tokens_per_second:,.0f}",
            )

    def set_total(self, total_steps: int) -> None:
        """A new plan of steps (training to a time budget plans again as it goes)."""
        self.total_steps = total_steps
        if self._progress is not None:
            self._progress.update(self._task, total=total_steps)

    def note_val(self, val_loss: float) -> None:
        self._val = f"{val_loss:.4f}"
        if self._progress is not None:
            self._progress.update(self._task, val=self._val)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
