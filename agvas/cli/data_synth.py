"""Placeholder: filled in by the data work."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to `agvas data`."""
