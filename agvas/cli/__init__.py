"""The `agvas` command. Each sub-command group lives in its own module and is mounted here."""

from __future__ import annotations

import typer

from agvas.cli import bench as bench_cli
from agvas.cli import calibrate as calibrate_cli
from agvas.cli import chat as chat_cli
from agvas.cli import check as check_cli
from agvas.cli import data as data_cli
from agvas.cli import evaluate as eval_cli
from agvas.cli import help_labels
from agvas.cli import model as model_cli
from agvas.cli import segment as segment_cli
from agvas.cli import serve as serve_cli
from agvas.cli import train as train_cli

help_labels.install()

app = typer.Typer(help="AG-VAS: zero-shot visual anomaly segmentation.", no_args_is_help=True)
app.add_typer(model_cli.app, name="model", help="Build, inspect and save AG-VAS models.")
app.add_typer(data_cli.app, name="data", help="Prepare datasets, generate synthetic anomalies and instructions.")
train_cli.register(app)
app.command("segment")(segment_cli.segment)
app.command("chat")(chat_cli.chat)
app.command("bench")(bench_cli.bench)
app.command("serve")(serve_cli.serve)
app.command("eval")(eval_cli.evaluate)
app.command("check")(check_cli.check)
app.command("calibrate")(calibrate_cli.calibrate)


def main() -> None:
    app()
