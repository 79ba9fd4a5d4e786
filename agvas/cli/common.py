"""What several commands check the same way, worded with the command's own flags."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from agvas.modes import EXPECTATION_HELP, EXPECTATION_MODE, needs_expectation

CHECKPOINT_HELP = "checkpoint folder, Hub id (owner/name) or preset name [default: checkpoints/agvas-tiny]"
CPU_INT8_HELP = ("CPU only: run the LLM and the semantic encoder in dynamic int8 (faster at real size; masks "
                 "close to fp32's, not equal: see the README's speed section)")


def check_mode_flags(mode: str, expectation: str | None, err: Console) -> None:
    """The mode check, worded with the command's flags; exit 2 before anything is read or loaded."""
    from agvas.infer.segmenter import check_mode

    if needs_expectation(mode, expectation):
        err.print(f"[red]error:[/red] --mode {EXPECTATION_MODE} needs --expectation TEXT, {EXPECTATION_HELP}")
        raise typer.Exit(2)
    try:
        check_mode(mode, expectation)
    except ValueError as e:
        err.print(f"[red]error:[/red] --mode: {e}")
        raise typer.Exit(2) from None


def prepare_out(out: Path, err: Console) -> None:
    """Create the output folder, or exit 2 naming the problem (a file in the way, no permission)."""
    if out.exists() and not out.is_dir():
        err.print(f"[red]error:[/red] --out {escape(str(out))} exists and is not a folder")
        raise typer.Exit(2)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        err.print(f"[red]error:[/red] cannot create --out {escape(str(out))}: {e.strerror or e}")
        raise typer.Exit(2) from None
