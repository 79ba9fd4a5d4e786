"""`agvas train --config FILE`: the recipe in YAML, overrides on the command line."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer
import yaml


def register(app: typer.Typer) -> None:
    app.command("train", no_args_is_help=True)(train)


def train(
    config: Path = typer.Option(..., "--config", "-c", help="YAML recipe (presets under configs/)"),
    resume: bool = typer.Option(False, help="continue from the newest state in OUT/states"),
    set_: list[str] = typer.Option([], "--set", help="override a field, e.g. --set optim.lr=1e-3 --set steps=50"),
    out: str | None = typer.Option(None, help="output folder (overrides the recipe's `out`)"),
    check: bool = typer.Option(True, "--check/--no-check",
                               help="run `agvas data check --quick` first and stop if a source yields nothing"),
) -> None:
    """Train AG-VAS; the same command runs under `accelerate launch` on several GPUs or with DeepSpeed.

    Writes OUT/log.csv, OUT/tensorboard/, OUT/states/ (resumable, atomic) and OUT/final/ (the model,
    with training.json).
    """
    from transformers.utils import logging as hf_logging

    from agvas.evaluate.heldout import make_heldout_evaluator
    from agvas.train.config import load_train_config
    from agvas.train.loop import train as run

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    overrides = {}
    for item in set_:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"{item!r}: expected key=value", param_hint="--set")
        overrides[key] = yaml.safe_load(value)
    if out is not None:
        overrides["out"] = out
    try:
        cfg = load_train_config(config, overrides)
    except (FileNotFoundError, ValueError) as err:
        raise typer.BadParameter(str(err), param_hint="--config") from None
    if check:
        _preflight(cfg)
    evaluator = make_heldout_evaluator(cfg.data, cfg.data.eval_images, cfg.seed) if cfg.data.eval_images else None
    result = run(cfg, evaluator, resume=resume, command=shlex.join(["agvas", *sys.argv[1:]]))
    typer.echo(f"trained {result.step} steps in {result.seconds / 60:.1f} min -> {result.out / 'final'}")


def _preflight(cfg) -> None:
    """The quick data check before step 0: a source that yields nothing stops the run here, not at hour 5.
    Every process runs it (it takes seconds); only the first prints."""
    import os

    from agvas.train.check import preflight

    try:
        text, ok = preflight(cfg, limit=4, conversations=1)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--config") from None
    if os.environ.get("RANK", "0") == "0":
        typer.echo(text, err=True)
    if not ok:
        typer.echo("error: data check failed (FAIL above); fix the source or pass --no-check", err=True)
        raise typer.Exit(1)
    from agvas.data.sources.base import reset_skip_counts

    reset_skip_counts()  # the check's own draws are not the run's: log.csv counts from step 0
