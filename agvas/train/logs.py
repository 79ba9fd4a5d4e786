"""Where the training curves go: a CSV anyone can plot, TensorBoard events, and a rich progress bar."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class MetricLog:
    """One row per logged step (evaluation figures join that step's row); on resume, rows past the resumed
    step are dropped first."""

    def __init__(self, folder: Path, resume_step: int = 0, tensorboard: bool = True) -> None:
        self.path = folder / "log.csv"
        self.rows: list[dict[str, float]] = []
        if self.path.exists():
            with self.path.open() as fh:
                self.rows = [r for r in csv.DictReader(fh) if int(float(r["step"])) <= resume_step]
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(folder / "tensorboard"), purge_step=resume_step + 1)
            except ImportError:  # tensorboard is optional at run time
                self.writer = None

    def log(self, step: int, values: dict[str, float]) -> None:
        row = {"step": step, **{k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v)
                                for k, v in values.items()}}
        if self.rows and int(float(self.rows[-1]["step"])) == step:
            self.rows[-1].update(row)
        else:
            self.rows.append(row)
        fields: list[str] = []
        for r in self.rows:
            fields += [k for k in r if k not in fields]
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            w.writerows(self.rows)
        tmp.replace(self.path)
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def progress_bar(disable: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]step {task.completed}/{task.total}"), BarColumn(),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        disable=disable,
    )
