"""A model's parameter table as a rich Table, for the CLI and the trainer's start-up print."""

from __future__ import annotations

from rich.table import Table

from agvas.model.agvas import AGVASModel


def parameter_table(model: AGVASModel, title: str) -> Table:
    """Rows count each tensor once (a tied LM head adds nothing), so the total is the unique count."""
    table = Table(title=title)
    table.add_column("part")
    table.add_column("parameters", justify="right")
    table.add_column("trainable", justify="right")
    total = trainable = 0
    for name, n, t in model.parameter_table():
        table.add_row(name, f"{n:,}", f"{t:,}")
        total += n
        trainable += t
    table.add_section()
    table.add_row("total (unique)", f"{total:,}", f"{trainable:,}")
    return table
