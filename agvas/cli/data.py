"""`agvas data ...`: dataset preparation, synthesis and annotation.

Each command is defined next to the code it drives (one module per command group) and mounted here.
"""

from __future__ import annotations

import typer

from agvas.cli import data_annotate, data_check, data_prepare, data_synth

app = typer.Typer(no_args_is_help=True)
for _module in (data_prepare, data_synth, data_annotate, data_check):
    _module.register(app)
