"""The `agvas` command. Each sub-command group lives in its own module and is mounted here."""

from __future__ import annotations

import typer

from agvas.cli import data as data_cli
from agvas.cli import model as model_cli

app = typer.Typer(help="AG-VAS: zero-shot visual anomaly segmentation.", no_args_is_help=True)
app.add_typer(model_cli.app, name="model", help="Build, inspect and save AG-VAS models.")
app.add_typer(data_cli.app, name="data", help="Prepare datasets, generate synthetic anomalies and instructions.")


def main() -> None:
    app()
