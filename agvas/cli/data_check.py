"""`agvas data check CONFIG`: the pre-flight check of a recipe's data (`agvas.train.check`)."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml


def overrides_from(set_: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in set_:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"{item!r}: expected key=value", param_hint="--set")
        out[key] = yaml.safe_load(value)
    return out


def check(
    config: Path = typer.Argument(..., help="YAML recipe (configs/...)"),
    limit: int = typer.Option(64, "--limit", min=0, help="Items loaded per source, evenly spread (0: all)."),
    conversations: int = typer.Option(2, "--conversations", min=0, help="Rendered samples per mixture source."),
    quick: bool = typer.Option(False, "--quick", help="What `agvas train` runs: 4 items per source, 1 sample."),
    set_: list[str] = typer.Option([], "--set", help="override a field, e.g. --set steps=100"),
) -> None:
    """Count, load and sample every data source of a recipe; exit 1 if any source yields nothing.

    Prints per source: samples found, how many were checked and are bad (each named, with why), the
    loading speed, its share of the training samples and the epochs of it the run will see.
    """
    from agvas.train.check import preflight
    from agvas.train.config import load_train_config

    try:
        cfg = load_train_config(config, overrides_from(set_))
    except (FileNotFoundError, ValueError) as err:
        raise typer.BadParameter(str(err), param_hint="CONFIG") from None
    if quick:
        limit, conversations = 4, 1
    try:
        text, ok = preflight(cfg, None if limit == 0 else limit, conversations)
    except ValueError as err:  # a malformed data.sources entry
        typer.echo(f"error: {config}: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(text)
    if not ok:
        typer.echo("data check failed: a source yields nothing (FAIL above)", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this module's command to `agvas data`."""
    app.command("check")(check)
